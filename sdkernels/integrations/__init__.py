"""diffusers integrations: the patch rules for every site sdkernels accelerates. `RULES` is the one registry
sdkernels.patch applies, in this order."""

from sdkernels.integrations.ada_norm import ADA_LAYER_NORM_RULE
from sdkernels.integrations.attention_processor import ATTENTION_PROCESSOR_RULE
from sdkernels.integrations.default_processor import DEFAULT_PROCESSOR_RULE
from sdkernels.integrations.geglu import GEGLU_RULE
from sdkernels.integrations.gelu import GELU_RULE
from sdkernels.integrations.joint_attention import JOINT_ATTENTION_RULE
from sdkernels.integrations.norms import CONV_NORM_OUT_RULE, TRANSFORMER_2D_NORM_RULE
from sdkernels.integrations.resnet import RESNET_BLOCK_RULE
from sdkernels.rules import PatchRule

RULES: tuple[PatchRule, ...] = (
    ATTENTION_PROCESSOR_RULE,
    JOINT_ATTENTION_RULE,
    DEFAULT_PROCESSOR_RULE,
    GEGLU_RULE,
    CONV_NORM_OUT_RULE,
    TRANSFORMER_2D_NORM_RULE,
    RESNET_BLOCK_RULE,
    ADA_LAYER_NORM_RULE,
    GELU_RULE,
)
