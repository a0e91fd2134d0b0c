"""`slimserve optimize MODEL -o OUT --recipe NAME`: one model in, one optimized folder out."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from slimserve.optimizer.recipes import DEFAULT_RECIPE
from slimserve.optimizer.sources import SUPPORTED_TASKS, TENSOR_DTYPES


def render_optimize_table(manifest: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    fidelity = manifest["fidelity"]
    model = manifest["model"]
    table = Table(title=f"slimserve optimize: {manifest['recipe']}", title_justify="left")
    for column in ("recipe", "model.onnx", "vs fp32", "fidelity", "mean", "min", "samples", "reference", "time"):
        table.add_column(column, justify="right" if column not in ("recipe", "fidelity", "reference") else "left")
    ratio = model["bytes"] / model["fp32_bytes"] if model.get("fp32_bytes") else float("nan")
    timings = manifest["timings"]
    seconds = timings["export_s"] + timings["recipe_s"] + timings["eval_s"]
    metric = fidelity["metric"] + (f" (top-1 {fidelity['top1_agreement']:.3f})" if "top1_agreement" in fidelity else "")
    table.add_row(manifest["recipe"], f"{model['bytes'] / 1e6:.1f} MB", f"{ratio:.2f}x", metric,
                  f"{fidelity['mean']:.5f}", f"{fidelity['min']:.5f}", str(fidelity["samples"]),
                  fidelity["reference"], f"{seconds:.1f} s")
    console = Console()
    console.print(table)
    for note in manifest.get("notes", []):
        console.print(f"note: {note}")


@click.command("optimize")
@click.argument("model")
@click.option("-o", "--output", "output", type=click.Path(path_type=Path), required=True,
              help="Output folder (written atomically: model.onnx, tokenizer files, slimserve.json).")
@click.option("-r", "--recipe", default=DEFAULT_RECIPE, show_default=True,
              help="Steps joined by '+', e.g. int8, int4-weight, prune-ffn-25+int8. See --list-recipes.")
@click.option("--task", type=click.Choice(SUPPORTED_TASKS), help="Task of a Hugging Face folder (detected if omitted).")
@click.option("--eval", "eval_path", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="Evaluation inputs: JSON lines with 'text' (text models) or an .npz of named arrays.")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="1x3x224x224",
              help="Input shape for a PyTorch factory; repeat once per input.")
@click.option("--input-dtype", type=click.Choice(TENSOR_DTYPES), default="float32", show_default=True)
@click.option("--trust-remote-code", is_flag=True, help="Allow custom model code shipped in the model folder.")
@click.option("--allow-pickle", is_flag=True, help="Allow pickle-based checkpoints (pytorch_model.bin).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--list-recipes", is_flag=True, is_eager=True, expose_value=False, callback=lambda ctx, _p, v: _list(ctx, v),
              help="List recipe steps and exit.")
def command(model: str, output: Path, recipe: str, task: str | None, eval_path: Path | None,
            input_shapes: tuple[str, ...], input_dtype: str, trust_remote_code: bool, allow_pickle: bool, fmt: str) -> None:
    """Export MODEL (an .onnx file, a Hugging Face folder, or package.module:factory) and apply a recipe."""
    from slimserve.atomic import atomic_dir
    from slimserve.optimizer.optimize import optimize
    from slimserve.optimizer.recipes import parse_recipe
    from slimserve.optimizer.sources import resolve_source
    from slimserve.ui import progress_for

    parse_recipe(recipe)
    source = resolve_source(model, task=task, input_shapes=input_shapes, input_dtype=input_dtype,
                            trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    with tempfile.TemporaryDirectory(prefix="slimserve-") as work, progress_for(sys.stderr) as progress:
        with atomic_dir(output) as staging:
            manifest = optimize(source, recipe, staging, Path(work), eval_path, progress)
    if fmt == "json":
        click.echo(json.dumps(manifest, indent=2))
    else:
        render_optimize_table(manifest)
        click.echo(f"wrote {output}")


def _list(ctx: click.Context, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from slimserve.optimizer.recipes import registry

    for spec in registry().values():
        name = f"{spec.name}-N" if spec.takes_argument else spec.name
        click.echo(f"{name:<18} {spec.help}")
    ctx.exit(0)
