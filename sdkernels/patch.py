"""One registry of patch rules, `patch` / `unpatch` / `patched`, and the helpers rules use to rebind instance
attributes so that unpatching restores the exact previous objects.

Rules patch instances in place (rebinding `forward` or swapping an attention processor); parameters, buffers,
state_dict keys and values, module classes and `isinstance` checks are never touched.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from sdkernels._dispatch import path_name
from sdkernels.report import PatchReport, SiteResult

KINDS = ("group_norm", "attention", "geglu")
_SAVED = "_sdkernels_saved"  # module.__dict__ entry: {attribute: previous instance value or _ABSENT}
_RULES_APPLIED = "_sdkernels_rules"  # module.__dict__ entry: names of the rules applied to this module
_ABSENT = object()


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


RULES: list[PatchRule] = []


def register_rule(rule: PatchRule) -> PatchRule:
    if rule.kind not in KINDS:
        raise ValueError(f"unknown patch kind {rule.kind!r}; expected one of {KINDS}")
    if any(r.name == rule.name for r in RULES):
        raise ValueError(f"a patch rule named {rule.name!r} is already registered")
    RULES.append(rule)
    return rule


# ------------------------------------------------------------------------------- helpers for rules
def bind_attribute(module: nn.Module, name: str, value: Any) -> None:
    """Set an instance attribute, remembering the instance value it shadows (once) for `restore_attributes`."""
    saved = module.__dict__.setdefault(_SAVED, {})
    previous = saved[name][0] if name in saved else module.__dict__.get(name, _ABSENT)
    saved[name] = (previous, value)
    module.__dict__[name] = value


def bind_forward(module: nn.Module, forward: Callable[..., Any]) -> None:
    """Rebind `module.forward` on this instance only (Liger-Kernel's `_bind_method_to_module`)."""
    bind_attribute(module, "forward", types.MethodType(forward, module))


def restore_attributes(module: nn.Module) -> None:
    """Undo `bind_attribute`. A value replaced since (accelerate's offload wrapper around our `forward`) is kept;
    if that wrapper saved our bound forward as its `_old_forward`, it is pointed back at the pre-patch one."""
    for name, (previous, bound) in module.__dict__.pop(_SAVED, {}).items():
        original = previous
        if original is _ABSENT and name == "forward":
            original = types.MethodType(type(module).forward, module)
        if module.__dict__.get(name, _ABSENT) is bound:
            if previous is _ABSENT:
                module.__dict__.pop(name, None)
            else:
                module.__dict__[name] = previous
        elif name == "forward" and module.__dict__.get("_old_forward") is bound:
            module.__dict__["_old_forward"] = original


def has_hooks(module: nn.Module) -> bool:
    """True when hooks (accelerate offload, diffusers layerwise casting, user hooks) wrap this module: reading its
    weights directly from a fused kernel would bypass them."""
    return bool(module._forward_hooks or module._forward_pre_hooks or getattr(module, "_hf_hook", None)
                or getattr(module, "_diffusers_hook", None))


def is_patched(module: nn.Module, rule_name: str | None = None) -> bool:
    applied = module.__dict__.get(_RULES_APPLIED, ())
    return bool(applied) if rule_name is None else rule_name in applied


# ------------------------------------------------------------------------------------- targets
def _components(target: object) -> dict[str, nn.Module]:
    if isinstance(target, nn.Module):
        return {type(target).__name__: target}
    components = getattr(target, "components", None)
    if isinstance(components, dict) and hasattr(target, "config"):  # a diffusers DiffusionPipeline
        return {name: m for name, m in components.items() if isinstance(m, nn.Module)}
    raise TypeError(f"sdkernels.patch expects a diffusers DiffusionPipeline or a torch.nn.Module, "
                    f"got {type(target).__module__}.{type(target).__name__}")


def _component_device(module: nn.Module) -> torch.device | None:
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return None


def _selected_rules(selection: dict[str, bool]) -> list[PatchRule]:
    import sdkernels.integrations  # noqa: F401  (registers the rules)

    unknown = set(selection) - set(KINDS)
    if unknown:
        raise TypeError(f"unknown patch kinds {sorted(unknown)}; expected keyword arguments among {KINDS}")
    return [r for r in RULES if selection.get(r.kind, True)]


def _walk(target: object) -> Iterator[tuple[str, str, nn.Module]]:
    seen: set[int] = set()
    for component, root in _components(target).items():
        for path, module in root.named_modules():
            if id(module) not in seen:
                seen.add(id(module))
                yield component, path, module


# ------------------------------------------------------------------------------------- public API
def patch(target: object, *, group_norm: bool = True, attention: bool = True, geglu: bool = True) -> PatchReport:
    """Swap sdkernels' fused kernels into every matching site of `target` (a DiffusionPipeline: all its nn.Module
    components, e.g. unet, vae, controlnet; or any nn.Module). Returns a PatchReport. Patching twice changes nothing
    the second time."""
    rules = _selected_rules({"group_norm": group_norm, "attention": attention, "geglu": geglu})
    report = PatchReport()
    for component, root in _components(target).items():
        device = _component_device(root)
        report.paths[component] = path_name(device) if device is not None else "no parameters"
    for component, path, module in _walk(target):
        for rule in rules:
            if not rule.matches(module):
                continue
            if is_patched(module, rule.name):
                if rule.is_active is None or rule.is_active(module):
                    if rule.in_report:
                        report.results.append(SiteResult(component, path, rule.kind, rule.site, "already patched",
                                                         module=module))
                    continue
                rule.restore(module)  # marked, but something replaced our code since: take it over again
                module.__dict__[_RULES_APPLIED].discard(rule.name)
            reason = rule.apply(module)
            if not rule.in_report:
                if reason is None:
                    module.__dict__.setdefault(_RULES_APPLIED, set()).add(rule.name)
                    report.plumbing.append(module)
                continue
            if reason is None:
                module.__dict__.setdefault(_RULES_APPLIED, set()).add(rule.name)
                detail = rule.detail(module) if rule.detail is not None else ""
                report.results.append(SiteResult(component, path, rule.kind, rule.site, "patched", detail, module))
            else:
                report.results.append(SiteResult(component, path, rule.kind, rule.site, "left alone", reason, module))
    if any(p.startswith("pytorch reference") for p in report.paths.values()):
        report.notes.append("on CPU without TRITON_INTERPRET=1 the ops run their PyTorch reference; "
                            "move the pipeline to CUDA (pipe.to('cuda')) for the Triton kernels")
    return report


def _unpatch_module(module: nn.Module) -> int:
    applied = module.__dict__.pop(_RULES_APPLIED, set())
    restored = 0
    for rule in RULES:
        if rule.name in applied:
            rule.restore(module)
            restored += rule.in_report
    return restored


def unpatch(target: object) -> int:
    """Restore every module of `target` patched by sdkernels exactly as it was. Returns how many sites it restored."""
    return sum(_unpatch_module(module) for _, _, module in _walk(target))


@contextlib.contextmanager
def patched(target: object, **kinds: bool) -> Iterator[PatchReport]:
    """`with sdkernels.patched(pipe) as report: ...` patches for the block and restores what it patched on exit
    (sites that were already patched before the block stay patched)."""
    report = patch(target, **kinds)
    try:
        yield report
    finally:
        newly_patched = [r.module for r in report.results if r.status == "patched"] + report.plumbing
        for module in newly_patched:
            if module is not None and is_patched(module):
                _unpatch_module(module)
