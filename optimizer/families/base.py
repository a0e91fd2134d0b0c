"""The optimizer side of a task family: what it adds to the export, and how its fidelity is judged.

The shared flow (`optimize.prepare`/`evaluate`) exports with optimum, then for a family task:
1. `runtime_spec` completes the manifest's runtime section (the shipped `task_*.py` reads it);
2. `eval_set` gives evaluation and calibration requests in the handler's own request shape;
3. each request is encoded by the shipped runtime (`LoadedModel.encode_request`), so evaluation feeds
   are exactly what a deployment would build;
4. `reference` runs the original PyTorch model on those feeds (outputs keyed like the ONNX outputs);
5. `fidelity` compares candidate and reference outputs through the runtime's own `decode`, so the
   metric measures what callers would see change (labels, entities, spans, rankings).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np

from slimserve.optimizer.exported import ReferenceRunner
from slimserve.optimizer.fidelity import Fidelity
from slimserve.optimizer.sources import HfFolderSource
from slimserve.runtime.model_runtime import Encoded, LoadedModel, RequestLimits

Outputs = dict[str, np.ndarray]


@dataclass(frozen=True)
class EvalSet:
    """Requests' `inputs` (each one request, i.e. one batch) to evaluate on and to calibrate with.

    Built-in sets keep calibration and evaluation apart so fidelity is not measured on tuning data."""

    requests: list[Any]
    calibration: list[Any]
    description: str


@dataclass(frozen=True)
class EvalBatch:
    """One evaluation request: how the runtime encoded it, and both models' raw outputs on it."""

    encoded: Encoded
    reference: Outputs
    candidate: Outputs


class Family(Protocol):
    tasks: tuple[str, ...]

    def runtime_spec(self, source: HfFolderSource, export_dir: Path, base: dict[str, Any]) -> dict[str, Any]:
        """The manifest's runtime section. `base` already holds kind, task, labels (id2label) and, when
        the export has a tokenizer, tokenizer/pad/max_length and the text request limits."""
        ...

    def reference(self, source: HfFolderSource) -> ReferenceRunner:
        """The original PyTorch model as a function: ONNX feeds -> outputs named like the ONNX outputs."""
        ...

    def eval_set(self, task: str, eval_path: Path | None) -> EvalSet:
        """Built-in requests (shipped in optimizer/data) or the user's --eval file, one clear error if bad."""
        ...

    def fidelity(self, model: LoadedModel, batches: Sequence[EvalBatch], *, reference_name: str,
                 eval_source: str) -> Fidelity:
        """`metric`, `mean` and `min` are the family's headline metric (per sample); more in `details`."""
        ...

    def sample_inputs(self, runtime: dict[str, Any], batch: int = 1) -> Any:
        """The `inputs` of a typical request carrying `batch` items (texts, images, questions, documents):
        what `check` times as the first inference and `compare` as warm batch-1/batch-8 latency."""
        ...

    def worst_inputs(self, runtime: dict[str, Any], limits: RequestLimits) -> tuple[Any, str]:
        """The `inputs` of the most expensive request `limits` accept, and a short description of it
        (`check` measures its time and memory; the deployment's memory and timeout come from it)."""
        ...

    # Optional (looked up with `request_parameters`): `sample_parameters(runtime)` and
    # `worst_parameters(runtime)`, the "parameters" those two requests carry when the defaults would not
    # make them typical or worst (text generation: how many tokens must be generated).


def request_parameters(family: Family, runtime: dict[str, Any], which: str) -> dict[str, Any] | None:
    """The family's `sample_parameters`/`worst_parameters` for `runtime` (`which`: "sample" or "worst"),
    or None when the family's defaults already make the request what it should be."""
    hook = getattr(family, f"{which}_parameters", None)
    if hook is None:
        return None
    parameters: dict[str, Any] | None = hook(runtime)
    return parameters


# task -> the module in this package whose `FAMILY` serves it
FAMILY_MODULES = {"image-classification": "image", "token-classification": "tokens",
                  "question-answering": "qa", "text-ranking": "pairs",
                  "tabular-classification": "tabular", "tabular-regression": "tabular",
                  "text-generation": "generation"}


def family_for(task: str) -> Family | None:
    """The family serving `task`, or None for the sentence tasks and raw tensors (the shared path)."""
    name = FAMILY_MODULES.get(task)
    if name is None:
        return None
    module = importlib.import_module(f"{__package__}.{name}")
    return cast(Family, module.FAMILY)
