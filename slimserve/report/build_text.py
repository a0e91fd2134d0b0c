"""`build --format text` (the default): the comparison table, what each candidate missed, then the check of
the packaged winner and the choice in one line; plain text when written to a file or pipe."""

from __future__ import annotations

from typing import TextIO

from slimserve.report import compare_text
from slimserve.report import text as check_text
from slimserve.report.build_report import BuildResult


def render(result: BuildResult, out: TextIO) -> None:
    from rich.console import Console

    compare_text.render(result.comparison, out)
    console = Console(file=out, width=None if out.isatty() else 220, highlight=False, emoji=False)
    decision = result.decision
    for recipe, missed in decision.misses.items():
        if missed:
            console.print(f"  {recipe}: missed {'; '.join(missed)}", markup=False)
    if decision.winner is not None and result.check is not None:
        console.print(f"check of the package ({decision.winner}):", markup=False)
        check_text.render(result.check, out)
        verdict = "passes its check" if result.check.fits else "FAILS its check"
        art = result.artifacts or {}
        memory = f", {art['memory_mb']} MB" if "memory_mb" in art else ""
        console.print(f"chosen: {decision.winner} → {result.package_dir} ({art.get('kind')}{memory}); "
                      f"{verdict} for {result.platform}", markup=False)
    if decision.why:
        console.print(f"why: {decision.why}", markup=False)
