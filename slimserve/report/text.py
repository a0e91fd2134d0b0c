"""`--format text` (the default): rich tables for a terminal; plain text when written to a file or pipe."""

from __future__ import annotations

from typing import TextIO

from slimserve.report import PROJECTION_NOTE, Report, fmt_bytes, fmt_value, verdict_line

_STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red"}


def render(report: Report, out: TextIO) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    tty = out.isatty()
    # A fixed width off a terminal keeps files, pipes and golden snapshots byte-stable.
    console = Console(file=out, width=None if tty else 120, force_terminal=tty, color_system="auto" if tty else None,
                      highlight=False, emoji=False)
    pkg, cs = report.package, report.cold_start
    parts = ", ".join(f"{k} {fmt_bytes(n)}" for k, n in sorted(pkg.parts.items()))
    console.print(Text(f"slimserve check {report.path}  (Python {report.python}, {report.arch})", style="bold"))
    console.print(f"package: {fmt_bytes(pkg.unzipped_bytes)} unzipped, {fmt_bytes(pkg.zipped_bytes)} zipped"
                  + (f" ({parts})" if parts else "") + f", {pkg.layers} layer(s)")
    fallback = f"; fallback: {cs.fallback}" if cs.fallback else ""
    console.print(f"cold start measured here (median of {cs.runs} fresh processes, Python {cs.python}{fallback}): "
                  f"import {fmt_value(cs.import_ms, 'ms')}, load {fmt_value(cs.load_ms, 'ms')}, "
                  f"first inference {fmt_value(cs.first_inference_ms, 'ms')}, total {fmt_value(cs.total_ms, 'ms')}; "
                  f"warm {fmt_value(cs.warm_ms, 'ms')}; peak RSS {cs.peak_rss_mb:,.0f} MB")
    if cs.worst_ms is not None:
        console.print(f"worst accepted request measured here on {cs.cpus} CPU ({cs.worst_request}): "
                      f"{fmt_value(cs.worst_ms, 'ms')}, peak RSS {cs.max_rss_mb:,.0f} MB")
    for v in report.platforms:
        table = Table(title=Text(f"{v.name}: {verdict_line(v)}", style=_STYLE["pass" if v.fits else "fail"]),
                      title_justify="left", show_lines=False, expand=False)
        table.add_column("check", no_wrap=True)
        table.add_column("status", no_wrap=True)
        table.add_column("measured", justify="right", no_wrap=True)
        table.add_column("limit", justify="right", no_wrap=True)
        table.add_column("reason")
        for f in v.findings:
            table.add_row(f.name, Text(f.status, style=_STYLE[f.status]), fmt_value(f.measured, f.unit),
                          fmt_value(f.limit, f.unit), f.reason)
        console.print()
        console.print(table)
    console.print()
    console.print(Text(PROJECTION_NOTE, style="dim"))
    fitting = [v.name for v in report.platforms if v.fits]
    failing = [v.name for v in report.platforms if not v.fits]
    summary = "fits: " + (", ".join(fitting) or "none")
    if failing:
        summary += "; does not fit: " + ", ".join(failing)
    console.print(Text(summary, style="bold green" if not failing else "bold red"))
