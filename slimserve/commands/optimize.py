"""`slimserve optimize MODEL -o OUT --recipe NAME`: one model in, one optimized folder out."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from slimserve.optimizer.isa import TARGETS, is_warning
from slimserve.optimizer.recipes import DEFAULT_RECIPE
from slimserve.optimizer.sources import SUPPORTED_TASKS, TENSOR_DTYPES


def _size(n: int) -> str:
    """Decimal units, like the issue's budgets (24 MB): kB below a megabyte so tiny models read right."""
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def _debug() -> bool:
    """Whether `slimserve --debug` (or SLIMSERVE_DEBUG) is on, outside a command's own parameters."""
    ctx = click.get_current_context(silent=True)
    obj = ctx.find_root().obj if ctx is not None else None
    return isinstance(obj, dict) and bool(obj.get("debug"))


def render_optimize_table(manifest: dict[str, Any]) -> None:
    """One result reads best as a two-column table: it fits any terminal width and CI logs."""
    from rich.console import Console
    from rich.table import Table

    fidelity, model, timings = manifest["fidelity"], manifest["model"], manifest["timings"]
    table = Table(title=f"slimserve optimize: {manifest['recipe']}", title_justify="left", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    ratio = f" ({model['bytes'] / model['fp32_bytes']:.2f}x of fp32 {_size(model['fp32_bytes'])})" if model.get("fp32_bytes") else ""
    table.add_row("recipe", " + ".join(s["step"] for s in manifest["steps"]))
    table.add_row("model.onnx", f"{_size(model['bytes'])}{ratio}")
    metric = fidelity["metric"]
    table.add_row("fidelity", f"{metric} vs {fidelity['reference']} on {fidelity['output']}")
    from slimserve.tasks import ranked_metric

    table.add_row(f"{ranked_metric(metric).replace('_', ' ')} mean / min", f"{fidelity['mean']:.5f} / {fidelity['min']:.5f}")
    for name, value in sorted((fidelity.get("details") or {}).items()):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            table.add_row(name.replace("_", " "), f"{value:.5g}")
    if "top1_agreement" in fidelity:
        table.add_row("top-1 agreement", f"{fidelity['top1_agreement']:.4f}")
    if "max_abs_error" in fidelity:
        table.add_row("abs error max / mean", f"{fidelity['max_abs_error']:.4g} / {fidelity['mean_abs_error']:.4g}")
    table.add_row("evaluated on", f"{fidelity['samples']} samples: {fidelity['eval_source']}")
    cpu = fidelity.get("isa")
    if isinstance(cpu, dict) and cpu.get("measured_on"):
        depends = "depends on the CPU" if cpu.get("depends_on_isa") else "float compute: the same on any CPU"
        table.add_row("measured on CPU", f"{cpu['measured_on']}, target {cpu.get('target')} ({depends})")
    table.add_row("time", f"export {timings['export_s']:.1f} s, recipe {timings['recipe_s']:.1f} s, "
                          f"evaluation {timings['eval_s']:.1f} s")
    console = Console()
    console.print(table)
    notes = list(manifest.get("notes", []))
    if model.get("fp32_bytes") and model["bytes"] > model["fp32_bytes"] * 1.01:
        notes.append(f"the result is {model['bytes'] / model['fp32_bytes']:.2f}x the fp32 model: on a model this "
                     "small the recipe's metadata (scales, graph nodes) outweighs what it saves")
    from slimserve.notes import for_terminal

    for note in for_terminal(notes, _debug()):  # tool diagnostics stay in slimserve.json (shown with --debug)
        console.print(f"{'warning' if is_warning(note) else 'note'}: {note}", soft_wrap=True, markup=False)


def _floats(text: str) -> tuple[float, ...]:
    """`0.485,0.456,0.406` -> (0.485, 0.456, 0.406)."""
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not comma-separated numbers like 0.485,0.456,0.406") from None


@click.command("optimize")
@click.argument("model")
@click.option("-o", "--output", "output", type=click.Path(path_type=Path), required=True,
              help="Output folder (written atomically: model.onnx, tokenizer files, slimserve.json).")
@click.option("-r", "--recipe", default=DEFAULT_RECIPE, show_default=True,
              help="Steps joined by '+', options in parentheses: int8, prune-ffn-25+int4-weight(block=64). "
                   "See --list-recipes.")
@click.option("--task", type=click.Choice(SUPPORTED_TASKS), help="Task of a Hugging Face folder (detected if omitted).")
@click.option("--eval", "eval_path", type=click.Path(path_type=Path, exists=True),
              help="Evaluation inputs: JSON lines with 'text' (text models), a folder of images (image models) or an .npz of named arrays.")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="1x3x224x224",
              help="Input shape for a PyTorch factory; repeat once per input.")
@click.option("--input-dtype", type=click.Choice(TENSOR_DTYPES), default="float32", show_default=True,
              help="Element type of the --input-shape tensors for a PyTorch factory.")
@click.option("--image-size", type=click.IntRange(min=1), metavar="PX",
              help="A factory image classifier's input size: served like torchvision's Resize(--resize) + "
                   "CenterCrop(PX) + ToTensor + Normalize(--mean, --std), images in, labels out.")
@click.option("--resize", type=click.IntRange(min=1), metavar="PX",
              help="Shortest edge before the center crop (default: --image-size).")
@click.option("--mean", type=_floats, metavar="R,G,B", help="Normalisation mean (default: ImageNet's).")
@click.option("--std", type=_floats, metavar="R,G,B", help="Normalisation std (default: ImageNet's).")
@click.option("--labels", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="Class names in output order: one per line, or JSON (list or index -> name).")
@click.option("--resample", type=click.Choice(["nearest", "bilinear", "bicubic", "lanczos", "box", "hamming"]),
              help="Resize filter (default: bilinear, torchvision's).")
@click.option("--trust-remote-code", is_flag=True, help="Allow custom model code shipped in the model folder.")
@click.option("--allow-pickle", is_flag=True, help="Allow pickle-based checkpoints (pytorch_model.bin).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="text: a table; json: the manifest (slimserve.json) on stdout.")
@click.option("--cpu", type=click.Choice(TARGETS), metavar="TARGET",
              help="CPU the model will run on: " + ", ".join(TARGETS) + ". int8 and int8-resident choose by it; "
                   "the manifest records it with the CPU fidelity was measured on, and warns when the recipe's "
                   "integer matmuls compute differently there. Default: this machine's architecture at its "
                   "baseline (x86-64-avx2 on x86-64).")
@click.option("--list-recipes", is_flag=True, is_eager=True, expose_value=False, callback=lambda ctx, _p, v: _list(ctx, v),
              help="List recipe steps and exit.")
@click.option("--list-tasks", is_flag=True, is_eager=True, expose_value=False,
              callback=lambda ctx, _p, v: _list_tasks(ctx, v),
              help="List the tasks slimserve serves (request, response, fidelity metric) and exit.")
def command(model: str, output: Path, recipe: str, task: str | None, eval_path: Path | None,
            input_shapes: tuple[str, ...], input_dtype: str, image_size: int | None, resize: int | None,
            mean: tuple[float, ...] | None, std: tuple[float, ...] | None, labels: Path | None, resample: str | None,
            trust_remote_code: bool, allow_pickle: bool, fmt: str, cpu: str | None) -> None:
    """Export MODEL (an .onnx file, a Hugging Face folder, or package.module:factory) and apply a recipe."""
    from slimserve.api import optimize
    from slimserve.ui import progress_for

    with progress_for(sys.stderr) as progress:
        candidate = optimize(model, output, recipe=recipe, task=task, eval_path=eval_path, input_shapes=input_shapes,
                             input_dtype=input_dtype, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle,
                             image_size=image_size, resize=resize, mean=mean, std=std, labels=labels,
                             resample=resample, progress=progress, cpu=cpu)
    if fmt == "json":
        for note in candidate.manifest.to_dict().get("notes", []):
            if is_warning(note):
                click.echo(f"warning: {note}", err=True)
        click.echo(json.dumps(candidate.manifest.to_dict(), indent=2))
    else:
        render_optimize_table(candidate.manifest.to_dict())
        click.echo(f"wrote {output}")


def _list(ctx: click.Context, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from slimserve.optimizer.recipes import describe_steps

    click.echo(describe_steps())
    ctx.exit(0)


def describe_tasks() -> str:
    """Every task with the request it takes, the answer it gives and how fidelity is judged."""
    from slimserve.tasks import TASKS

    blocks = []
    for task in TASKS:
        blocks.append(f"{task.name}  ({task.family} runtime)\n"
                      f"  request:  {task.request}\n"
                      f"  response: {task.response}\n"
                      f"  fidelity: {task.metric}: {task.metric_doc}; suggested --min-fidelity {task.default_min_fidelity}")
    return "\n\n".join(blocks)


def _list_tasks(ctx: click.Context, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    click.echo(describe_tasks())
    ctx.exit(0)
