"""`slimserve compare MODEL -o OUT`: several recipes, one export, their trade-offs side by side.

Exit codes: 0 written, 2 bad input, 1 a tool failure (every recipe failed).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from slimserve.commands.options import arch_option, numpy_option, python_option
from slimserve.optimizer.recipes import split_recipe_list
from slimserve.optimizer.sources import SUPPORTED_TASKS
from slimserve.report.comparison import FORMATS

JOBS_HELP = ("Build up to N candidates at once (threads). Only building runs in parallel: measurements "
             "(size, cold start, latency) always run one candidate at a time so they do not disturb each other.")


def recipe_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options compare and build share: which recipes, what to measure on, and how."""
    options = [
        click.option("--recipes", metavar="A,B,C",
                     help="Recipes to compare, comma-separated (e.g. fp32,int8,int4-weight,prune-ffn-25+int8). "
                          "Default: fp32, fp16, int8, int8-dynamic, int4-weight."),
        click.option("--all", "all_recipes", is_flag=True,
                     help="Every named recipe (those without a number; add prune-* through --recipes)."),
        click.option("--eval", "eval_path", type=click.Path(path_type=Path, exists=True),
                     help="Evaluation inputs: JSON lines with 'text' (text models), a folder of images (image models) or an .npz of named arrays."),
        click.option("--task", type=click.Choice(SUPPORTED_TASKS), help="Task of a Hugging Face folder."),
        click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True, metavar="N", help=JOBS_HELP),
        python_option(),
        arch_option(),
        numpy_option(),
        click.option("--memory", "memory_mb", type=click.IntRange(min=1), metavar="MB",
                     help="Judge platforms at this memory setting (default: each one's recommended setting)."),
        click.option("--runs", type=click.IntRange(min=1, max=50), default=3, show_default=True,
                     help="Fresh processes per cold-start measurement (median reported)."),
        click.option("--size-tolerance-pct", "tolerance_pct", type=click.FloatRange(min=0), default=10.0,
                     show_default=True, metavar="PCT",
                     help="Deployments within PCT% (or --size-tolerance-mb, whichever is larger) of the smallest "
                          "count as equally small; among them the most faithful is chosen (worst sample, then "
                          "mean). 0 and 0: strictly the smallest."),
        click.option("--size-tolerance-mb", "tolerance_mib", type=click.FloatRange(min=0), default=2.0,
                     show_default=True, metavar="MIB", help="See --size-tolerance-pct (MiB, unzipped deployment)."),
    ]
    return functools.reduce(lambda f, opt: opt(f), reversed(options), func)


def chosen_recipes(recipes: str | None, all_recipes: bool) -> list[str]:
    from slimserve.errors import SlimserveError
    from slimserve.pipeline.compare import DEFAULT_RECIPES

    if recipes and all_recipes:
        raise SlimserveError("--recipes and --all cannot be used together")
    if all_recipes:
        from slimserve.optimizer.recipes import registry

        return [s.name for s in registry().values() if not s.takes_argument]
    if recipes:
        return split_recipe_list(recipes)  # commas inside a step's options do not split
    return list(DEFAULT_RECIPES)


def format_option(formats: tuple[str, ...]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`--format`: which renderer writes stdout (the files in OUT are written either way)."""
    return click.option("--format", "fmt", type=click.Choice(formats), default="text", show_default=True,
                        help="Output on stdout (the files in OUT are written either way).")


@click.command("compare", context_settings={"max_content_width": 110})
@click.argument("model")
@click.option("-o", "--output", "out", type=click.Path(path_type=Path, file_okay=False), required=True,
              metavar="OUT", help="Folder to write (replaced atomically): compare.json/.md/.png, candidates/.")
@click.option("--platform", "platforms", multiple=True, metavar="NAME",
              help="Platform to judge each candidate against; repeat, or `all`. "
                   "Default: aws-lambda-zip and aws-lambda-container.")
@click.option("--profile", "profile_files", multiple=True, type=click.Path(path_type=Path), metavar="FILE",
              help="Your own platform profile file; repeatable.")
@click.option("--min-fidelity", type=click.FloatRange(min=0, max=1, min_open=True), metavar="X",
              help="Fidelity floor for the recommendation, in the task's metric (slimserve optimize --list-tasks). "
                   "Default: the task's floor (0.99 cosine, 0.95 for the others).")
@recipe_options
@format_option(FORMATS)
def command(model: str, out: Path, platforms: tuple[str, ...], profile_files: tuple[Path, ...],
            min_fidelity: float | None, recipes: str | None, all_recipes: bool, eval_path: Path | None,
            task: str | None, jobs: int, python: str, arch: str, numpy: str, memory_mb: int | None, runs: int,
            tolerance_pct: float, tolerance_mib: float, fmt: str) -> int:
    """Run several recipes on MODEL and put their trade-offs side by side.

    Exports MODEL once, builds one candidate per recipe, and measures each the same way: bytes, fidelity,
    warm latency (batch 1 and 8), cold start and peak RSS in fresh processes, and whether it fits each
    platform (with the reason). Marks the Pareto frontier and recommends one candidate.
    """
    from slimserve.api import compare
    from slimserve.ui import progress_for

    with progress_for(sys.stderr) as progress:
        comparison = compare(model, out, recipes=chosen_recipes(recipes, all_recipes), platforms=platforms,
                             eval_path=eval_path, task=task, min_fidelity=min_fidelity, python=python, arch=arch,
                             numpy=numpy, memory_mb=memory_mb, runs=runs, jobs=jobs, profile_files=profile_files,
                             progress=progress, size_tolerance_pct=tolerance_pct,
                             size_tolerance_mib=tolerance_mib)
    from slimserve.report.comparison import renderer

    renderer(fmt)(comparison, sys.stdout)
    if fmt == "text":
        click.echo(f"wrote {out}/compare.json, compare.md, compare.png and candidates/")
    return 0
