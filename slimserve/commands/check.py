"""`slimserve check PATH --platform NAME ...`: will this model fit there, and how slow is its cold start?

Exit codes: 0 every chosen platform fits, 1 at least one does not, 2 bad input (SlimserveError).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from slimserve.commands.options import arch_option, numpy_option, python_option
from slimserve.report import FORMATS


@click.command("check", context_settings={"max_content_width": 110})
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--platform", "platforms", multiple=True, metavar="NAME",
              help="Platform profile to check against; repeat for several, or `all` (see `slimserve profiles`).")
@click.option("--profile", "profile_files", multiple=True, type=click.Path(path_type=Path), metavar="FILE",
              help="Your own profile file (TOML, same shape as the shipped ones); repeatable.")
@click.option("--memory", "memory_mb", type=click.IntRange(min=1), metavar="MB",
              help="Memory setting to judge; must be one the platform offers. Default: the recommended one.")
@python_option("Target Python version the package is built and timed for.")
@arch_option()
@numpy_option()
@click.option("--max-cold-start", "max_cold_start_ms", type=click.FloatRange(min=0, min_open=True),
              metavar="MS", help="Fail when the projected cold start on the platform exceeds MS milliseconds.")
@click.option("--min-fidelity", type=click.FloatRange(min=0, max=1, min_open=True), metavar="X",
              help="Fail when the manifest's mean fidelity (the task's metric) is below X (e.g. 0.99).")
@click.option("--min-tokens-per-s", type=click.FloatRange(min=0, min_open=True), metavar="N",
              help="Text generation: fail when the projected decode speed is below N tokens/s; the recommended "
                   "memory is the smallest setting that reaches it.")
@click.option("--runs", type=click.IntRange(min=1, max=50), default=3, show_default=True,
              help="Fresh processes to time; the median is reported.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True,
              help="Report format.")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), metavar="REPORT",
              help="Write the report here (atomically) and print the text table to stdout.")
def command(path: Path, platforms: tuple[str, ...], profile_files: tuple[Path, ...], memory_mb: int | None,
            python: str, arch: str, numpy: str, max_cold_start_ms: float | None, min_fidelity: float | None,
            min_tokens_per_s: float | None, runs: int, fmt: str, output: Path | None) -> int:
    """Hold an optimize output folder (or a bare .onnx) against platform limits.

    Measures the deployable package and its cold start once (fresh processes that see only the deployed
    files), then gives each platform's checks: sizes, memory with headroom, projected init time, and your
    budgets. Projections onto a platform's CPU share are labelled as estimates.
    """
    from slimserve.api import check
    from slimserve.atomic import atomic_file, check_report_path
    from slimserve.report import renderer
    from slimserve.ui import progress_for

    if output is not None:
        check_report_path(output)
    with progress_for(sys.stderr) as progress:
        report = check(path, platforms, memory_mb=memory_mb, python=python, arch=arch, numpy=numpy,
                       max_cold_start_ms=max_cold_start_ms, min_fidelity=min_fidelity,
                       min_tokens_per_s=min_tokens_per_s, runs=runs,
                       profile_files=profile_files, progress=progress)
    if output is not None:
        with atomic_file(output) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as fh:
            renderer(fmt)(report, fh)
        renderer("text")(report, sys.stdout)
        click.echo(f"report ({fmt}) written to {output}", err=True)
    else:
        renderer(fmt)(report, sys.stdout)
    return 0 if report.fits else 1
