"""`compare --format markdown` and compare.md: the trade-off table a person reads (and a CI step summary
shows), recommendation on top."""

from __future__ import annotations

from typing import TextIO

from slimserve.report.compare_table import FRONTIER_MARK, RECOMMENDED_MARK, table
from slimserve.report.comparison import Comparison, platform_reason


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(comparison: Comparison, out: TextIO) -> None:
    o = comparison.options
    lines = [f"## slimserve compare: `{_cell(comparison.model)}`", ""]
    if comparison.recommendation:
        lines.append(f"**Recommended: `{comparison.recommendation}`** {RECOMMENDED_MARK}: "
                     f"{_cell(comparison.recommendation_reason)}.")
    else:
        lines.append(f"**No recommendation**: {_cell(comparison.recommendation_reason)}.")
    lines += ["", (f"Target Python {o.python}, {o.arch} · evaluation: {_cell(comparison.eval_source)} · "
                   f"{FRONTIER_MARK} = Pareto frontier (no other candidate is at least as small and at least as "
                   "faithful, and better in one)"), ""]
    header, rows = table(comparison)
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join([":-:", "---"] + ["---:"] * (len(header) - 2)) + "|")
    lines += ["| " + " | ".join(_cell(x) for x in row) + " |" for row in rows]
    lines.append("")
    not_fitting = [(c.recipe, v.name, v) for c in comparison.measured for v in c.verdicts if not v.fits]
    if not_fitting:
        lines += ["**Why a platform does not fit**", ""]
        lines += [f"- `{r}` on {name}: {_cell(platform_reason(v))}" for r, name, v in not_fitting]
        lines.append("")
    failed = [c for c in comparison.candidates if c.error is not None]
    if failed:
        lines += ["**Recipes that failed**", ""]
        lines += [f"- `{c.recipe}`: {_cell(c.error or '')}" for c in failed]
        lines.append("")
    m = comparison.machine
    lines.append(f"_Measured here on {m.cpu} ({m.cpus if m.cpus is not None else '?'} CPUs; VNNI: "
                 f"{', '.join(m.vnni) or 'no'}). Cold start: median of {o.runs} fresh processes "
                 f"that see only the deployed files, with their lowest–highest; warm latency: median of {o.latency_runs} "
                 "calls, 1 thread; both measured in interleaved rounds (every candidate once per round). "
                 "A platform's CPU share differs from this machine's: `slimserve check` shows projections._")
    out.write("\n".join(lines) + "\n")
