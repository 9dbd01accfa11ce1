"""The layering CONTRIBUTING.md describes: the runtime (everything under sdkernels/ except tools/ and testing/)
never imports the tools or the test fixtures, and importing it pulls in neither."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "sdkernels"
APART = ("sdkernels.tools", "sdkernels.testing")


def runtime_modules() -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] not in ("tools", "testing")]


def imported_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_runtime_sources_never_import_tools_or_testing() -> None:
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(n for n in imported_names(path) if n.startswith(APART))
        for path in runtime_modules()
    }
    assert len(offenders) > 10, "the runtime modules were not found"
    assert not {k: v for k, v in offenders.items() if v}


def test_importing_the_runtime_loads_no_tool_or_fixture() -> None:
    modules = sorted(
        ".".join(("sdkernels", *p.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
        for p in runtime_modules()
        if p.name != "__main__.py"
    )
    code = (
        f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
        f"print(sorted(m for m in sys.modules if m.startswith({APART!r})))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"
