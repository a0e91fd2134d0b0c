"""The public Python API: the same pipeline the CLI runs, as typed functions for notebooks, Airflow or
Prefect tasks and CI scripts.

    import slimserve
    candidate = slimserve.optimize("all-MiniLM-L6-v2", "out", recipe="int8")
    candidate.fidelity.mean, candidate.model_bytes

Every function raises the exceptions the CLI turns into `error:` lines (`SlimserveError` for bad input,
`ToolError` for a library that failed, `LimitExceeded` for a result over a budget), never prints and never
exits. Progress is silent unless a `Progress` is passed. Outputs are written atomically, like the CLI's.
Heavy libraries (onnx, onnxruntime, torch) are imported only when a function runs.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimserve.progress import NULL_PROGRESS, Progress

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class Fidelity:
    """How close the candidate's outputs are to the original model's, in the family's metric."""

    metric: str
    mean: float
    min: float
    samples: int
    reference: str
    top1_agreement: float | None = None


@dataclass(frozen=True)
class Candidate:
    """An optimized model folder (`slimserve optimize`'s OUT) and what was measured of it."""

    path: Path
    recipe: str
    model_bytes: int
    fidelity: Fidelity
    notes: tuple[str, ...]
    manifest: dict[str, Any]  # slimserve.json as written: the full record, for anything not lifted above

    @property
    def model_path(self) -> Path:
        return self.path / str(self.manifest["model"]["path"])


def optimize(model: PathLike, out: PathLike, *, recipe: str | None = None, task: str | None = None,
             eval_path: PathLike | None = None, input_shapes: Sequence[str] = (), input_dtype: str = "float32",
             trust_remote_code: bool = False, allow_pickle: bool = False,
             progress: Progress = NULL_PROGRESS) -> Candidate:
    """Export `model` (an .onnx file, a Hugging Face folder, `package.module:factory` or a packaged model
    name), apply `recipe` (default: the recommended int8) and measure fidelity; write the folder `out`."""
    from slimserve.atomic import atomic_dir
    from slimserve.optimizer.optimize import optimize as run_optimize
    from slimserve.optimizer.recipes import DEFAULT_RECIPE, parse_recipe
    from slimserve.optimizer.sources import resolve_source

    recipe = recipe or DEFAULT_RECIPE
    parse_recipe(recipe)  # a misspelt recipe fails before the (slow) export
    source = resolve_source(str(model), task=task, input_shapes=tuple(input_shapes), input_dtype=input_dtype,
                            trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    inputs = [Path(model)] if Path(model).exists() else []
    with tempfile.TemporaryDirectory(prefix="slimserve-") as work, \
            atomic_dir(Path(out), inputs=inputs) as staging:
        manifest = run_optimize(source, recipe, staging, Path(work), Path(eval_path) if eval_path else None,
                                progress)
    return candidate_from_manifest(Path(out), manifest)


def candidate_from_manifest(folder: Path, manifest: dict[str, Any]) -> Candidate:
    fidelity = manifest["fidelity"]
    return Candidate(
        path=Path(folder).absolute(), recipe=str(manifest["recipe"]), model_bytes=int(manifest["model"]["bytes"]),
        fidelity=Fidelity(metric=str(fidelity["metric"]), mean=float(fidelity["mean"]), min=float(fidelity["min"]),
                          samples=int(fidelity["samples"]), reference=str(fidelity["reference"]),
                          top1_agreement=fidelity.get("top1_agreement")),
        notes=tuple(str(n) for n in manifest.get("notes", ())), manifest=manifest)
