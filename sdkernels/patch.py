"""`patch` / `unpatch` / `patched`: apply the one registry of rules (sdkernels.integrations.RULES) to every module of
a pipeline or model, and report what was done.

Rules patch instances in place (rebinding `forward` or swapping an attention processor); parameters, buffers,
state_dict keys and values, module classes and `isinstance` checks are never touched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn as nn

from sdkernels._dispatch import path_name
from sdkernels.integrations import RULES
from sdkernels.report import PatchReport, SiteResult
from sdkernels.rules import _RULES_APPLIED, KINDS, PatchRule, is_patched


# ------------------------------------------------------------------------------------- targets
def _components(target: object) -> dict[str, nn.Module]:
    if isinstance(target, nn.Module):
        return {type(target).__name__: target}
    components = getattr(target, "components", None)
    if isinstance(components, dict) and hasattr(target, "config"):  # a diffusers DiffusionPipeline
        return {name: m for name, m in components.items() if isinstance(m, nn.Module)}
    raise TypeError(
        f"sdkernels.patch expects a diffusers DiffusionPipeline or a torch.nn.Module, "
        f"got {type(target).__module__}.{type(target).__name__}"
    )


def _component_device(module: nn.Module) -> torch.device | None:
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return None


def _selected_rules(selection: dict[str, bool]) -> list[PatchRule]:
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
def patch(
    target: object,
    *,
    group_norm: bool = True,
    attention: bool = True,
    geglu: bool = True,
    autotune: bool | None = None,
) -> PatchReport:
    """Swap sdkernels' fused kernels into every matching site of `target` (a DiffusionPipeline: all its nn.Module
    components, e.g. unet, vae, controlnet; or any nn.Module). Returns a PatchReport. Patching twice changes nothing
    the second time. `autotune=True` opts in to benchmarking every candidate config once per shape (timings cached
    on disk by Triton; same as SDKERNELS_AUTOTUNE=1); by default each shape class runs its table's one config."""
    if autotune is not None:
        from sdkernels.kernels._tuning import set_autotune

        set_autotune(autotune)
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
                        report.results.append(
                            SiteResult(component, path, rule.kind, rule.site, "already patched", module=module)
                        )
                    continue
                rule.restore(module)  # marked, but something replaced our code since: take it over again
                module.__dict__[_RULES_APPLIED].discard(rule.name)
            reason = rule.apply(module)
            if reason is None:
                module.__dict__.setdefault(_RULES_APPLIED, set()).add(rule.name)
                report.applied.append((module, rule.name))
            if not rule.in_report:
                if reason is None:
                    report.plumbing.append(module)
                continue
            if reason is None:
                detail = rule.detail(module) if rule.detail is not None else ""
                report.results.append(SiteResult(component, path, rule.kind, rule.site, "patched", detail, module))
            else:
                report.results.append(SiteResult(component, path, rule.kind, rule.site, "left alone", reason, module))
    if any(p.startswith("pytorch reference") for p in report.paths.values()):
        report.notes.append(
            "on CPU without TRITON_INTERPRET=1 the ops run their PyTorch reference; "
            "move the pipeline to CUDA (pipe.to('cuda')) for the Triton kernels"
        )
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


def _restore_rule(module: nn.Module, rule_name: str) -> None:
    applied = module.__dict__.get(_RULES_APPLIED, set())
    if rule_name not in applied:  # unpatched inside the block already
        return
    next(rule for rule in RULES if rule.name == rule_name).restore(module)
    applied.discard(rule_name)
    if not applied:
        del module.__dict__[_RULES_APPLIED]


@contextlib.contextmanager
def patched(target: object, **kinds: bool) -> Iterator[PatchReport]:
    """`with sdkernels.patched(pipe) as report: ...` patches for the block and, on exit, undoes exactly the rules
    this block applied, per module and rule: whatever was patched before the block (another kind on the same
    module, included) stays patched."""
    report = patch(target, **kinds)
    try:
        yield report
    finally:
        for module, rule_name in reversed(report.applied):
            _restore_rule(module, rule_name)
