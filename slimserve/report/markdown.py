"""`--format markdown`: a summary for people, sized for a CI step summary ($GITHUB_STEP_SUMMARY)."""

from __future__ import annotations

from typing import TextIO

from slimserve.report import PROJECTION_NOTE, Report, fmt_bytes, fmt_value, verdict_line

_ICON = {"pass": "✅ pass", "warn": "⚠️ warn", "fail": "❌ fail"}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(report: Report, out: TextIO) -> None:
    w = out.write
    pkg, cs = report.package, report.cold_start
    w(f"## slimserve check: {'✅ fits' if report.fits else '❌ does not fit'}\n\n")
    w(f"`{_cell(report.path)}` · Python {report.python} · {report.arch} · package {fmt_bytes(pkg.unzipped_bytes)} "
      f"unzipped / {fmt_bytes(pkg.zipped_bytes)} zipped · peak RSS {cs.peak_rss_mb:,.0f} MB\n\n")
    if cs.worst_ms is not None:
        w(f"**Worst accepted request** ({_cell(cs.worst_request)}, on {cs.cpus} CPU): "
          f"{fmt_value(cs.worst_ms, 'ms')}, peak RSS {cs.max_rss_mb:,.0f} MB\n\n")
    fallback = f" (fallback: {_cell(cs.fallback)})" if cs.fallback else ""
    w(f"**Cold start measured here** (median of {cs.runs} fresh processes, Python {cs.python}{fallback})\n\n")
    w("| import | load | first inference | total | warm |\n|---:|---:|---:|---:|---:|\n")
    w(f"| {fmt_value(cs.import_ms, 'ms')} | {fmt_value(cs.load_ms, 'ms')} | "
      f"{fmt_value(cs.first_inference_ms, 'ms')} | {fmt_value(cs.total_ms, 'ms')} | {fmt_value(cs.warm_ms, 'ms')} |\n\n")
    for v in report.platforms:
        w(f"### {v.name}: {'✅' if v.fits else '❌'} {verdict_line(v)}\n\n")
        w("| Check | Status | Measured | Limit | Reason |\n|---|---|---:|---:|---|\n")
        for f in v.findings:
            name = f"[{_cell(f.name)}]({f.source})" if f.source else _cell(f.name)
            w(f"| {name} | {_ICON[f.status]} | {_cell(fmt_value(f.measured, f.unit))} | "
              f"{_cell(fmt_value(f.limit, f.unit))} | {_cell(f.reason)} |\n")
        w("\n")
    w(f"_Checks marked (estimate) are projections: {PROJECTION_NOTE}._\n")
