"""Data flows one way: MODEL → CANDIDATE → VERDICT → PACKAGE → REPORT.

Checked on the import statements themselves (every import, including those inside functions): renderers
import only report values and kernel types, never the pipelines that call them (no cycle); packagers never
read a rendered report, and the pipelines never hand one to them.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Value types and pure tables a renderer may read (slimserve.tasks: the task table, e.g. a metric's default floor).
KERNEL = ("slimserve.report", "slimserve.measure", "slimserve.profiles", "slimserve.selection", "slimserve.tasks")


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return {name for name in found if name.startswith("slimserve")}


def test_renderers_import_only_report_values_and_kernel_types() -> None:
    for path in sorted((ROOT / "slimserve" / "report").glob("*.py")):
        outside = {m for m in imports(path)
                   if m not in ("slimserve", "slimserve.__version__") and not m.startswith(KERNEL)}
        assert not outside, f"{path.name} imports {sorted(outside)}"


def renderer_modules() -> set[str]:
    from slimserve import report
    from slimserve.report import build_report, comparison

    tables = (report.RENDERERS, comparison.RENDERERS, build_report.RENDERERS)
    return {f"slimserve.report.{module}" for table in tables for module in table.values()}


def test_packaging_never_reads_a_rendered_report() -> None:
    """Packagers take typed values (a verdict, a memory setting, the check's `Report` value); no packager, and
    no pipeline that calls one, imports a renderer."""
    rendered = renderer_modules()
    assert "slimserve.report.json_" in rendered and "slimserve.report.build_json" in rendered
    paths = [*sorted((ROOT / "packagers").rglob("*.py"))] + [
        ROOT / "slimserve" / name for name in ("pipeline/build.py", "pipeline/compare.py", "pipeline/check.py",
                                              "commands/package.py", "api.py")]
    for path in paths:
        used = {m for m in imports(path) if any(m == r or m.startswith(r + ".") for r in rendered)}
        assert not used, f"{path.relative_to(ROOT)} imports {sorted(used)}"
