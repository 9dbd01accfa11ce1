"""diffusers integrations; importing this package registers every patch rule in sdkernels.patch.RULES."""

from sdkernels.integrations import attention_processor, default_processor, geglu, norms, resnet  # noqa: F401
