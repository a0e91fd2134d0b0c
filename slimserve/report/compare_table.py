"""The comparison's table, cells computed once: compare.md and the terminal table both render them, so the
two never disagree."""

from __future__ import annotations

from slimserve.report import fmt_bytes, fmt_value
from slimserve.report.comparison import CandidateResult, Comparison

FRONTIER_MARK = "◆"
RECOMMENDED_MARK = "★"


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.3f}" if value < 1 else f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def _spread(samples: list[float]) -> str:
    """", lowest–highest" of a median's samples: how far the machine moved it (nothing for one sample)."""
    return f", {min(samples):,.0f}–{max(samples):,.0f}" if len(samples) > 1 else ""


def mark(c: CandidateResult, comparison: Comparison) -> str:
    return ((RECOMMENDED_MARK if c.recipe == comparison.recommendation else "")
            + (FRONTIER_MARK if c.recipe in comparison.frontier else ""))


def table(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    """Header and one row of cells per measured candidate (failed recipes are listed separately)."""
    platforms = [p.name for p in comparison.platforms]
    header = ["", "recipe", "model", "deploy unzipped / zipped", "fidelity mean / min", "warm b1 ms",
              "warm b8 ms", "cold start, range (import+load+1st)", "peak RSS", *platforms]
    rows = []
    for c in comparison.measured:
        if c.package is None or c.cold_start is None or c.fidelity is None:
            continue  # not measured: `measured` already left it out
        fid, cs, lat = c.fidelity, c.cold_start, c.latency
        cells = [mark(c, comparison), c.recipe, fmt_bytes(c.model_bytes),
                 f"{fmt_bytes(c.package.unzipped_bytes)} / {fmt_bytes(c.package.zipped_bytes)}",
                 f"{fid.mean:.4f} / {fid.min:.4f}",
                 _ms(lat.batch1_ms if lat else None), _ms(lat.batch8_ms if lat else None),
                 (f"{fmt_value(cs.total_ms, 'ms')}{_spread(cs.samples.get('total_ms', []))} "
                  f"({cs.import_ms:,.0f}+{cs.load_ms:,.0f}+{cs.first_inference_ms:,.0f})"),
                 f"{cs.peak_rss_mb:,.0f} MB"]
        for name in platforms:
            v = c.verdict(name)
            cells.append("—" if v is None else "✅" if v.fits else "❌")
        rows.append(cells)
    return header, rows
