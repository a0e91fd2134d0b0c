"""`slimserve build MODEL --platform NAME -o OUT`: compare, choose under budgets, package, check.

Exit codes: 0 packaged and the package passes its check; 1 nothing meets the budgets, or the package fails
its check (OUT is written either way, with the comparison); 2 bad input.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from slimserve.commands.compare import format_option, recipe_options
from slimserve.report.build_report import FORMATS, BuildResult


@click.command("build", context_settings={"max_content_width": 110})
@click.argument("model")
@click.option("-o", "--output", "out", type=click.Path(path_type=Path, file_okay=False), required=True,
              metavar="OUT", help="Folder to write (replaced atomically): package/, check.*, build.*, compare.*.")
@click.option("--platform", default="aws-lambda-zip", show_default=True, metavar="NAME",
              help="Platform to build for (see `slimserve profiles`).")
@click.option("--target", type=click.Choice(["lambda", "container"]),
              help="Artifacts: lambda (layer + function zips) or container (OCI image). "
                   "Default: lambda for aws-lambda-zip, container for container platforms.")
@click.option("--min-fidelity", type=click.FloatRange(min=0, max=1, min_open=True), metavar="X",
              help="Budget: mean fidelity at least X, in the task's metric (cosine; entity F1, exact match, "
                   "top-1 agreement, Spearman...: slimserve optimize --list-tasks). Default: the task's floor "
                   "(0.99 cosine, 0.95 for the others).")
@click.option("--max-cold-start", "max_cold_start_ms", type=click.FloatRange(min=0, min_open=True), metavar="MS",
              help="Budget: cold start at most MS milliseconds (measured here; projected onto the platform "
                   "when --memory is given).")
@click.option("--base", metavar="REF", help="Container target: base image (registry ref, oci:PATH or a layout).")
@recipe_options
@format_option(FORMATS)
def command(model: str, out: Path, platform: str, target: str | None, min_fidelity: float | None,
            max_cold_start_ms: float | None, base: str | None, recipes: str | None, all_recipes: bool,
            eval_path: Path | None, task: str | None, jobs: int, python: str, arch: str, numpy: str,
            memory_mb: int | None,
            runs: int, tolerance_pct: float, tolerance_mib: float, fmt: str) -> int:
    """Compare recipes on MODEL, choose the best under budgets, package it for the platform, check it.

    The choice: among candidates that meet every budget and fit the platform, those whose deployment is
    within the size tolerance of the smallest (10% or 2 MiB) count as equally small, and the most faithful
    of them wins (worst sample, then mean); the summary says why, against the runner-up. When none does, the comparison is still written and the command exits 1
    saying which budget each candidate missed, by how much.
    """
    from slimserve.api import build
    from slimserve.commands.compare import chosen_recipes
    from slimserve.pipeline.build import BuildFailed
    from slimserve.ui import progress_for

    try:
        with progress_for(sys.stderr) as progress:
            result = build(model, out, platform=platform, target=target, recipes=chosen_recipes(recipes, all_recipes),
                           min_fidelity=min_fidelity, max_cold_start_ms=max_cold_start_ms, base=base,
                           eval_path=eval_path, task=task, python=python, arch=arch, numpy=numpy, memory_mb=memory_mb,
                           runs=runs, jobs=jobs, progress=progress, size_tolerance_pct=tolerance_pct,
                           size_tolerance_mib=tolerance_mib)
    except BuildFailed as failed:
        _summary(failed.result, fmt)
        raise
    _summary(result, fmt)
    return 0


def _summary(result: BuildResult, fmt: str) -> None:
    """The chosen renderer on stdout; the text one is followed by where the files went."""
    from slimserve.report.build_report import renderer

    renderer(fmt)(result, sys.stdout)
    if fmt == "text":
        click.echo(f"wrote {result.out} (build.md, build.json, check.*, compare.*)")
