"""PatchReport: what `sdkernels.patch` did, per component and kind, and which places it left alone and why."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

import torch.nn as nn

from sdkernels._versions import version_paths


@dataclass(frozen=True)
class SiteResult:
    component: str  # pipeline component name ("unet", "vae", ...) or the module's class name
    path: str  # module path inside the component ("" for the component itself)
    kind: str  # one of sdkernels.rules.KINDS
    site: str  # what was matched, e.g. "ResnetBlock2D"
    status: str  # "patched" | "already patched" | "left alone"
    reason: str = ""  # why it was left alone, or a detail about how it was patched
    module: nn.Module | None = field(default=None, compare=False, repr=False)


@dataclass
class PatchReport:
    results: list[SiteResult] = field(default_factory=list)
    paths: dict[str, str] = field(default_factory=dict)  # component -> kernel path on its current device
    notes: list[str] = field(default_factory=list)
    plumbing: list[nn.Module] = field(default_factory=list, repr=False)  # patched by rules not shown in the table
    # (module, rule name) for every rule this call applied, in order: what `patched()` undoes on exit
    applied: list[tuple[nn.Module, str]] = field(default_factory=list, repr=False)
    # installed torch/triton/diffusers and the version-dependent path each selects (sdkernels/_versions.py)
    versions: dict[str, str] = field(default_factory=version_paths)

    def count(self, kind: str | None = None, status: str = "patched", component: str | None = None) -> int:
        return sum(
            1
            for r in self.results
            if r.status == status
            and (kind is None or r.kind == kind)
            and (component is None or r.component == component)
        )

    @property
    def left_alone(self) -> list[SiteResult]:
        return [r for r in self.results if r.status == "left alone"]

    def table(self) -> list[tuple[str, str, str, int, int, int]]:
        """Rows (component, kind, site, patched, already patched, left alone)."""
        counts: dict[tuple[str, str, str], collections.Counter[str]] = collections.defaultdict(collections.Counter)
        for r in self.results:
            counts[(r.component, r.kind, r.site)][r.status] += 1
        return [(c, k, s, n["patched"], n["already patched"], n["left alone"]) for (c, k, s), n in counts.items()]

    def __str__(self) -> str:
        rows = [("component", "kind", "site", "patched", "already", "left alone", "runs on")]
        for component, kind, site, patched, already, left in self.table():
            rows.append((component, kind, site, str(patched), str(already), str(left), self.paths.get(component, "")))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = ["sdkernels patch report"]
        for i, row in enumerate(rows):
            lines.append("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
            if i == 0:
                lines.append("  " + "  ".join("-" * w for w in widths))
        if len(rows) == 1:
            lines.append(
                "  (nothing matched: no diffusers ResnetBlock2D, Attention, GEGLU, GroupNorm, AdaLayerNorm or GELU "
                "sites found)"
            )
        if self.left_alone:
            lines.append("left alone:")
            for r in self.left_alone:
                lines.append(f"  {r.component}.{r.path} [{r.kind}/{r.site}]: {r.reason}")
        details = sorted({(r.kind, r.site, r.reason) for r in self.results if r.status == "patched" and r.reason})
        for kind, site, reason in details:
            lines.append(f"note: {kind}/{site}: {reason}")
        lines.extend(f"note: {n}" for n in self.notes)
        lines.extend(f"{name}: {value}" for name, value in self.versions.items())
        return "\n".join(lines)
