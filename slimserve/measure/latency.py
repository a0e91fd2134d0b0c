"""Warm latency and session load time of one model folder, in this process.

Measured in this process with the shipped runtime (`LoadedModel`), so pre- and post-processing count
as they will in production. The timing itself is `warm.warm_median_ms`, which the cold-start probe
(`coldstart.py`, a fresh process) runs too.
"""

from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slimserve.measure.warm import warm_median_ms

SAMPLE_TEXTS = (
    "Serverless inference bills per request and scales to zero.",
    "How long does a cold start take on a small Lambda function?",
    "Die Katze sitzt auf der Fensterbank und schaut in den Regen.",
    "SELECT id, name FROM users WHERE created_at > NOW() - INTERVAL '7 days';",
    "A quantized encoder is about four times smaller than its float32 original.",
    "¿Dónde está la estación de tren más cercana?",
    "def add(a, b):\n    return a + b",
    "Short.",
)


@dataclass(frozen=True)
class Latency:
    load_ms: float
    batch1_ms: float  # at batch 1, or at the model's fixed batch size (see `batch_sizes`)
    batch8_ms: float | None  # None when the model's batch dimension is fixed
    runs: int
    threads: int
    batch_sizes: tuple[int, ...] = (1, 8)
    rounds_ms: tuple[float, ...] = ()  # batch-1 medians of the interleaved rounds `merge` combined

    @property
    def spread_ms(self) -> tuple[float, float] | None:
        """Lowest and highest batch-1 round median: how much the machine moved the number."""
        return (min(self.rounds_ms), max(self.rounds_ms)) if len(self.rounds_ms) > 1 else None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fixed_batch(model: Any) -> int | None:
    """The batch size a tensor model was exported with, when its first dimension is not symbolic."""
    dims = [spec.shape[0] for spec in model.session.get_inputs() if spec.shape]
    fixed = [d for d in dims if isinstance(d, int) and d > 0]
    return fixed[0] if fixed else None


def _tensor_request(model: Any, batch: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    request = {}
    for spec in model.session.get_inputs():
        shape = [batch] + [d if isinstance(d, int) and d > 0 else 1 for d in spec.shape[1:]]
        dtype = model.input_types[spec.name]
        request[spec.name] = (rng.standard_normal(shape) if np.dtype(dtype).kind == "f"
                              else rng.integers(0, 2, shape)).astype(dtype)
    return request


def merge(parts: list[Latency]) -> Latency:
    """One latency from rounds measured at different times (compare interleaves candidates): the median of
    the rounds' medians, and the rounds kept for the spread."""
    import statistics

    first = parts[0]
    b8 = [p.batch8_ms for p in parts if p.batch8_ms is not None]
    return Latency(load_ms=round(statistics.median(p.load_ms for p in parts), 2),
                   batch1_ms=round(statistics.median(p.batch1_ms for p in parts), 3),
                   batch8_ms=round(statistics.median(b8), 3) if b8 else None, runs=sum(p.runs for p in parts),
                   threads=first.threads, batch_sizes=first.batch_sizes,
                   rounds_ms=tuple(p.batch1_ms for p in parts))


def measure_latency(folder: Path, runs: int = 20, threads: int = 1) -> Latency:
    """Median over `runs` warm calls at batch 1 and batch 8 (or the model's fixed batch), after a warm-up.

    One thread by default: serverless instances usually have about one vCPU, and it keeps numbers on
    this shared machine comparable between candidates.
    """
    from slimserve.runtime.model_runtime import LoadedModel

    started = time.perf_counter()
    model = LoadedModel(folder, threads=threads)
    load_ms = (time.perf_counter() - started) * 1000

    from slimserve.optimizer.families.base import family_for

    family = family_for(model.task)
    fixed = None if model.kind != "tensor" else _fixed_batch(model)
    batches = (fixed,) if fixed else (1, 8)

    def call(batch: int) -> None:
        if family is not None:
            model.predict(family_requests[batch])
        elif model.kind == "text":
            model.predict_texts(list(SAMPLE_TEXTS[:batch]))
        else:
            model.predict_tensors(requests[batch])

    requests = {} if model.kind != "tensor" else {b: _tensor_request(model, b) for b in batches}
    family_requests = {} if family is None else {b: family.sample_inputs(model.spec, b) for b in batches}
    medians = {batch: warm_median_ms(functools.partial(call, batch), runs) for batch in batches}
    b8 = medians.get(8)
    return Latency(load_ms=round(load_ms, 2), batch1_ms=round(medians[batches[0]], 3),
                   batch8_ms=None if b8 is None else round(b8, 3), runs=runs, threads=threads,
                   batch_sizes=batches)
