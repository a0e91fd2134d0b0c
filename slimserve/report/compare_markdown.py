"""compare.md: the trade-off table a person reads (and a CI step summary shows), recommendation on top.

`table(comparison)` gives the header and cells once; the Markdown here and the terminal table of
`slimserve compare` both render them, so the two never disagree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from slimserve.report import fmt_bytes, fmt_value

if TYPE_CHECKING:
    from slimserve.compare import CandidateResult, Comparison

FRONTIER_MARK = "◆"
RECOMMENDED_MARK = "★"


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.3f}" if value < 1 else f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def mark(c: CandidateResult, comparison: Comparison) -> str:
    return ((RECOMMENDED_MARK if c.recipe == comparison.recommendation else "")
            + (FRONTIER_MARK if c.recipe in comparison.frontier else ""))


def table(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """Header and one row of cells per measured candidate (failed recipes are listed separately)."""
    platforms = [p.name for p in comparison.platforms]
    header = ["", "recipe", "model", "deploy unzipped / zipped", "fidelity mean / min", "warm b1 ms",
              "warm b8 ms", "cold start (import+load+1st)", "peak RSS", *platforms]
    rows = []
    for c in comparison.measured:
        assert c.package is not None and c.cold_start is not None
        fid, cs, lat = c.fidelity, c.cold_start, c.latency
        cells = [mark(c, comparison), c.recipe, fmt_bytes(c.model_bytes),
                 f"{fmt_bytes(c.package.unzipped_bytes)} / {fmt_bytes(c.package.zipped_bytes)}",
                 f"{fid.get('mean', float('nan')):.4f} / {fid.get('min', float('nan')):.4f}",
                 _ms(lat.batch1_ms if lat else None), _ms(lat.batch8_ms if lat else None),
                 f"{fmt_value(cs.total_ms, 'ms')} ({cs.import_ms:,.0f}+{cs.load_ms:,.0f}+{cs.first_inference_ms:,.0f})",
                 f"{cs.peak_rss_mb:,.0f} MB"]
        for name in platforms:
            v = c.verdict(name)
            cells.append("—" if v is None else "✅" if v.fits else "❌")
        rows.append(cells)
    return header, rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(comparison: Comparison) -> str:
    o = comparison.options
    lines = [f"## slimserve compare: `{_cell(comparison.model)}`", ""]
    if comparison.recommendation:
        lines.append(f"**Recommended: `{comparison.recommendation}`** {RECOMMENDED_MARK}: "
                     f"{_cell(comparison.recommendation_reason)}.")
    else:
        lines.append(f"**No recommendation**: {_cell(comparison.recommendation_reason)}.")
    lines += ["", (f"Target Python {o.python}, {o.arch} · evaluation: {_cell(comparison.eval_source)} · "
                   f"{FRONTIER_MARK} = Pareto frontier (no other candidate is at least as faithful, as small and "
                   "as fast to start, and better in one)"), ""]
    header, rows = table(comparison)
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join([":-:", "---"] + ["---:"] * (len(header) - 2)) + "|")
    lines += ["| " + " | ".join(_cell(x) for x in row) + " |" for row in rows]
    lines.append("")
    not_fitting = [(c.recipe, v.name, v) for c in comparison.measured for v in c.verdicts if not v.fits]
    if not_fitting:
        from slimserve.compare import platform_reason

        lines += ["**Why a platform does not fit**", ""]
        lines += [f"- `{r}` on {name}: {_cell(platform_reason(v))}" for r, name, v in not_fitting]
        lines.append("")
    failed = [c for c in comparison.candidates if c.error is not None]
    if failed:
        lines += ["**Recipes that failed**", ""]
        lines += [f"- `{c.recipe}`: {_cell(c.error or '')}" for c in failed]
        lines.append("")
    m = comparison.machine
    lines.append(f"_Measured here on {m.get('cpu', '?')} ({m.get('cpus', '?')} CPUs; VNNI: "
                 f"{', '.join(m.get('vnni') or []) or 'no'}). Cold start: median of {o.runs} fresh processes "
                 f"that see only the deployed files; warm latency: median of {o.latency_runs} calls, 1 thread. "
                 "A platform's CPU share differs from this machine's: `slimserve check` shows projections._")
    return "\n".join(lines) + "\n"
