"""What a patch rule is, and the helpers rules use to rebind instance attributes so that unpatching restores the
exact previous objects. Integrations (sdkernels/integrations/) build rules from these; sdkernels/patch.py applies
them. This module imports neither, so there is no import circle.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch.nn as nn

KINDS = ("group_norm", "attention", "geglu")
_SAVED = "_sdkernels_saved"  # module.__dict__ entry: {attribute: (previous instance value or ABSENT, bound value)}
_RULES_APPLIED = "_sdkernels_rules"  # module.__dict__ entry: names of the rules applied to this module


class _Absent:
    """Marks "the instance had no attribute of that name before patching". There is one instance, ABSENT, and it
    stays the same object through copy.deepcopy and pickle (it pickles as a reference to `sdkernels.rules.ABSENT`),
    so a copied or loaded patched model restores exactly; a plain `object()` sentinel would be copied into a new
    object that `is` no longer recognises, and restore would write it in as the attribute."""

    _instance: _Absent | None = None

    def __new__(cls) -> _Absent:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __reduce__(self) -> str:
        return "ABSENT"

    def __repr__(self) -> str:
        return "sdkernels.rules.ABSENT"


ABSENT = _Absent()


@dataclass(frozen=True)
class PatchRule:
    """`matches(module)` selects modules; `apply(module)` patches one and returns None, or returns the reason it
    left the module alone (nothing changed); `restore(module)` undoes `apply`. `detail(module)` optionally says how a
    patched module will run (shown in the report). `is_active(module)` tells whether a module marked as patched still
    runs sdkernels (diffusers may have swapped an attention processor since, e.g. `fuse_qkv_projections()`); an
    inactive one is restored and patched again by the next `patch`."""

    name: str
    kind: str
    site: str
    matches: Callable[[nn.Module], bool]
    apply: Callable[[nn.Module], str | None]
    restore: Callable[[nn.Module], None]
    detail: Callable[[nn.Module], str] | None = None
    is_active: Callable[[nn.Module], bool] | None = None
    in_report: bool = True  # False for plumbing that keeps a patched model working (not a kernel site)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown patch kind {self.kind!r}; expected one of {KINDS}")


# ------------------------------------------------------------------------------- helpers for rules
def bind_attribute(module: nn.Module, name: str, value: Any) -> None:
    """Set an instance attribute, remembering the instance value it shadows (once) for `restore_attributes`."""
    saved = module.__dict__.setdefault(_SAVED, {})
    previous = saved[name][0] if name in saved else module.__dict__.get(name, ABSENT)
    saved[name] = (previous, value)
    module.__dict__[name] = value


def bind_method(module: nn.Module, function: Callable[..., Any]) -> Callable[..., Any]:
    """`function` bound to `module` the way pickle and copy.deepcopy keep working: a `functools.partial` of a
    module-level function pickles as (that function by qualified name, the module), while a `types.MethodType` of
    a free function pickles as `getattr(module, function.__name__)`, which fails on load. torch.compile traces
    a partial like a bound method, and `inspect.signature` drops the bound `self` the same way."""
    if "<locals>" in function.__qualname__ or "<lambda>" in function.__qualname__:
        raise ValueError(f"{function.__qualname__} must be a module-level function to survive pickling")
    return functools.partial(function, module)


def bind_forward(module: nn.Module, forward: Callable[..., Any]) -> None:
    """Rebind `module.forward` on this instance only (Liger-Kernel's `_bind_method_to_module`), picklably."""
    bind_attribute(module, "forward", bind_method(module, forward))


def restore_attributes(module: nn.Module, *names: str) -> None:
    """Undo `bind_attribute` for `names` (all bound attributes when none are given). A value replaced since
    (accelerate's offload wrapper around our `forward`) is kept; if that wrapper saved our bound forward as its
    `_old_forward`, it is pointed back at the pre-patch one."""
    saved = module.__dict__.get(_SAVED, {})
    for name in names or tuple(saved):
        if name not in saved:
            continue
        previous, bound = saved.pop(name)
        original = previous
        if original is ABSENT and name == "forward":
            original = type(module).forward.__get__(module)
        if module.__dict__.get(name, ABSENT) is bound:
            if previous is ABSENT:
                module.__dict__.pop(name, None)
            else:
                module.__dict__[name] = previous
        elif name == "forward" and module.__dict__.get("_old_forward") is bound:
            module.__dict__["_old_forward"] = original
    if not saved:
        module.__dict__.pop(_SAVED, None)


def has_hooks(module: nn.Module) -> bool:
    """True when hooks (accelerate offload, diffusers layerwise casting, user hooks) wrap this module: reading its
    weights directly from a fused kernel would bypass them."""
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or getattr(module, "_hf_hook", None)
        or getattr(module, "_diffusers_hook", None)
    )


def is_patched(module: nn.Module, rule_name: str | None = None) -> bool:
    applied = module.__dict__.get(_RULES_APPLIED, ())
    return bool(applied) if rule_name is None else rule_name in applied
