"""How faithful a candidate is to the original model: the one place fidelity is computed.

The metric fits the output: cosine per sample for embeddings and hidden states, top-1 agreement plus
cosine for classification logits, max/mean absolute error (plus cosine) for anything else. The task
families (optimizer/families) judge what callers see instead (labels, entities, spans, rankings): their
`metric` names it, and `mean`/`min` are its mean and worst sample. `mean` is what `--min-fidelity`,
`compare` and `build` rank by, so each task's bar is documented with its metric (slimserve.tasks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Fidelity:
    metric: str
    output: str
    mean: float
    min: float
    samples: int
    reference: str
    eval_source: str
    p01: float | None = None
    top1_agreement: float | None = None
    max_abs_error: float | None = None
    mean_abs_error: float | None = None
    details: dict[str, float] | None = None  # a family's secondary metrics (top-5 overlap, logit cosine...)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def per_sample_cosine(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Cosine similarity of each sample (axis 0), everything else flattened. 1.0 where both are zero."""
    ref = np.asarray(reference, dtype=np.float64).reshape(reference.shape[0], -1)
    cand = np.asarray(candidate, dtype=np.float64).reshape(candidate.shape[0], -1)
    dot = (ref * cand).sum(axis=1)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    both_zero = norms == 0
    cos = np.where(both_zero, 1.0, dot / np.where(both_zero, 1.0, norms))
    return np.clip(cos, -1.0, 1.0)


def compare_outputs(
    reference: Sequence[np.ndarray],
    candidate: Sequence[np.ndarray],
    *,
    kind: str,
    output: str,
    reference_name: str,
    eval_source: str,
) -> Fidelity:
    """Compare batches of the primary output. `kind` is "embedding", "logits" or "tensor"."""
    ref = np.concatenate([np.asarray(r, dtype=np.float64).reshape(r.shape[0], -1) for r in reference])
    cand = np.concatenate([np.asarray(c, dtype=np.float64).reshape(c.shape[0], -1) for c in candidate])
    if ref.shape != cand.shape:
        raise ValueError(f"output {output} changed shape: {ref.shape} -> {cand.shape}")
    cos = per_sample_cosine(ref, cand)
    common: dict[str, Any] = {
        "output": output, "mean": round(float(cos.mean()), 6), "min": round(float(cos.min()), 6),
        "p01": round(float(np.quantile(cos, 0.01)), 6), "samples": int(ref.shape[0]),
        "reference": reference_name, "eval_source": eval_source,
    }
    if kind == "logits":
        agree = float((ref.argmax(axis=1) == cand.argmax(axis=1)).mean())
        return Fidelity(metric="top1+cosine", top1_agreement=round(agree, 6), **common)
    if kind == "tensor":
        err = np.abs(ref - cand)
        return Fidelity(metric="abs_error", max_abs_error=float(err.max()), mean_abs_error=float(err.mean()), **common)
    return Fidelity(metric="cosine", **common)
