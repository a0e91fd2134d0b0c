"""`build --format markdown` and build.md: the decision on top, then the package's check and the comparison
(the same Markdown check.md and compare.md hold), sized for a CI step summary ($GITHUB_STEP_SUMMARY)."""

from __future__ import annotations

import io
from typing import TextIO

from slimserve.report import compare_markdown
from slimserve.report import markdown as check_markdown
from slimserve.report.build_report import PACKAGE_DIR, BuildResult


def budgets_line(result: BuildResult) -> str:
    d = result.decision
    b = d.budgets
    return ", ".join(x for x in (
        f"fidelity ≥ {b.min_fidelity}" if b.min_fidelity is not None else "",
        f"cold start ≤ {b.max_cold_start_ms:,.0f} ms ({d.cold_start_basis})" if b.max_cold_start_ms is not None else "",
        f"fits {b.platform}") if x)


def render(result: BuildResult, out: TextIO) -> None:
    d = result.decision
    budgets = budgets_line(result)
    if d.winner is None:
        head = f"## slimserve build: ❌ no candidate meets the budgets\n\nBudgets: {budgets}."
    elif result.check is not None and not result.check.fits:
        head = f"## slimserve build: ❌ `{d.winner}` was packaged but fails its check\n\nBudgets: {budgets}."
    else:
        head = (f"## slimserve build: ✅ `{d.winner}` for {result.platform} ({result.target})\n\nBudgets: {budgets}. "
                f"Artifacts: `{PACKAGE_DIR}/`.")
    if d.why:
        head += f"\n\nWhy: {d.why}."
    lines = [head, ""]
    if any(d.misses.values()):
        lines += ["| recipe | missed budgets |", "|---|---|"]
        lines += [f"| `{r}` | {'; '.join(m).replace('|', '/')} |" for r, m in d.misses.items() if m]
        lines.append("")
    parts = ["\n".join(lines)]
    if result.check is not None:
        check = io.StringIO()
        check_markdown.render(result.check, check)
        parts.append(check.getvalue())
    comparison = io.StringIO()
    compare_markdown.render(result.comparison, comparison)
    parts.append(comparison.getvalue())
    out.write("\n".join(parts))
