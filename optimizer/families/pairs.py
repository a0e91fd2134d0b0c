"""Rerankers / cross-encoders (text-ranking): the optimizer side of slimserve/runtime/task_pairs.py.

The manifest records the activation the folder declares, resolved the way sentence-transformers'
CrossEncoder resolves it, so the shipped handler's scores are `CrossEncoder.predict`'s. Fidelity is
judged on what a reranker's caller sees: the order of the documents for each query (Spearman rank
correlation of the candidate's scores against PyTorch's), with the score cosine and whether the best
document stays the best reported beside it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from slimserve.errors import SlimserveError
from slimserve.optimizer.eval_inputs import jsonl_records
from slimserve.optimizer.exported import ReferenceRunner
from slimserve.optimizer.families.base import EvalBatch, EvalSet
from slimserve.optimizer.families.reference import logits, pytorch_reference, read_eval_file
from slimserve.optimizer.fidelity import Fidelity, per_sample_cosine
from slimserve.optimizer.sources import HfFolderSource
from slimserve.runtime import task_pairs
from slimserve.runtime.model_runtime import LoadedModel, RequestLimits

BUILTIN_EVAL = "pairs_eval.jsonl"
BUILTIN_CALIB = "pairs_calib.jsonl"
SAMPLE_QUERY = "how do I reset a forgotten router password"
SAMPLE_DOCUMENTS = (
    "Hold the reset button on the back of the router for thirty seconds to restore the factory settings.",
    "Log in to the admin page at 192.168.1.1 with the password printed on the router's label.",
    "Wi-Fi 6 offers higher throughput than Wi-Fi 5 in crowded apartment buildings.",
    "Our bakery opens at seven every morning except Sunday.",
)
EVAL_HINT = '--eval takes JSON lines like {"query": "...", "documents": ["...", "..."]}'
# torch.nn activation class -> the name task_pairs applies (any other one cannot be shipped without torch)
TORCH_ACTIVATIONS = {"Sigmoid": "sigmoid", "Identity": "identity", "Tanh": "tanh", "ReLU": "relu",
                     "Softmax": "softmax"}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def declared_activation(folder: Path, trust_remote_code: bool = False) -> str | None:
    """The activation path the folder declares, in sentence-transformers 5's order: the v5
    config_sentence_transformers.json, then config.json's v4 `sentence_transformers` section, then the
    pre-v4 `sbert_ce_default_activation_function`. A non-torch path counts only with trust_remote_code
    (CrossEncoder falls back to its default otherwise, and so does this)."""
    config = _read_json(folder / "config.json")
    section = config.get("sentence_transformers")
    st_config = _read_json(folder / "config_sentence_transformers.json")
    # CrossEncoder reads that file only when it loads the folder as its own (modules.json + model_type)
    v5 = (folder / "modules.json").is_file() and st_config.get("model_type") == "CrossEncoder"
    candidates = [
        st_config.get("activation_fn") if v5 else None,
        section.get("activation_fn") if isinstance(section, dict) else None,
        config.get("sbert_ce_default_activation_function"),
    ]
    for path in candidates:
        if isinstance(path, str) and path and (path.startswith("torch.") or trust_remote_code):
            return path
    return None


def resolve_activation(folder: Path, labels: int, trust_remote_code: bool = False) -> str:
    """The task_pairs activation name: the declared one, else CrossEncoder's default (sigmoid for one
    label, identity otherwise). A custom activation is refused: the handler runs without torch."""
    path = declared_activation(folder, trust_remote_code)
    if path is None:
        return "sigmoid" if labels == 1 else "identity"
    name = TORCH_ACTIVATIONS.get(path.rsplit(".", 1)[-1]) if path.startswith("torch.") else None
    if name is None:
        raise SlimserveError(f"{folder} declares the activation {path}, which slimserve cannot apply without torch",
                             hint=f"supported: torch.nn {', '.join(TORCH_ACTIVATIONS)}; or serve the raw "
                                  "logits with --task text-classification")
    return name


def _labels(config: dict[str, Any]) -> int:
    if isinstance(config.get("num_labels"), int):
        return int(config["num_labels"])
    return len(config.get("id2label") or {}) or 1


def read_requests(text: str, origin: str) -> list[list[list[str]]]:
    """JSON lines {"query", "documents"} -> one pairs request per query (`[[query, doc], ...]`).

    Pairs, not {"query", "documents"}, because every cross-encoder can score pairs while only one-score
    models can rank (NLI models are evaluated on the same requests)."""
    requests = []
    for number, record in jsonl_records(text, origin, EVAL_HINT):
        query = record.get("query") if isinstance(record, dict) else None
        documents = record.get("documents") if isinstance(record, dict) else None
        if not isinstance(query, str) or not isinstance(documents, list) or not documents \
                or not all(isinstance(d, str) for d in documents):
            raise SlimserveError(f"{origin} line {number} needs a string 'query' and a non-empty list of "
                                 "string 'documents'", hint=EVAL_HINT)
        requests.append([[query, doc] for doc in documents])
    if not requests:
        raise SlimserveError(f"{origin} holds no queries", hint=EVAL_HINT)
    return requests


def _builtin(name: str) -> list[list[list[str]]]:
    data = resources.files("slimserve.optimizer").joinpath("data", name).read_text(encoding="utf-8")
    return read_requests(data, f"built-in {name}")


def rank_average(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (scipy.stats.rankdata's "average")."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    sorted_values = values[order]
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2.0 + 1.0
        start = end + 1
    return ranks


def spearman(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Spearman rank correlation (Pearson on average ranks). Defined at the edges as what a caller sees:
    fewer than two scores, or both rankings constant, is 1.0 (the order is unchanged); exactly one of
    them constant is 0.0 (the candidate lost, or invented, every distinction between documents)."""
    ref, cand = rank_average(reference.ravel()), rank_average(candidate.ravel())
    if ref.size < 2:
        return 1.0
    ref_flat, cand_flat = np.ptp(ref) == 0, np.ptp(cand) == 0
    if ref_flat or cand_flat:
        return 1.0 if ref_flat and cand_flat else 0.0
    ref, cand = ref - ref.mean(), cand - cand.mean()
    return float(np.clip((ref * cand).sum() / np.sqrt((ref * ref).sum() * (cand * cand).sum()), -1.0, 1.0))


class PairsFamily:
    tasks = ("text-ranking",)

    def runtime_spec(self, source: HfFolderSource, export_dir: Path, base: dict[str, Any]) -> dict[str, Any]:
        config = _read_json(export_dir / "config.json") or _read_json(source.path / "config.json")
        labels = _labels(config)
        tokenizer_config = _read_json(export_dir / "tokenizer_config.json")
        return {**base, "num_labels": labels,
                "activation": resolve_activation(source.path, labels, source.trust_remote_code),
                "truncation": "longest_first",
                "truncation_side": str(tokenizer_config.get("truncation_side") or "right")}

    def reference(self, source: HfFolderSource) -> ReferenceRunner:
        """The PyTorch sequence classifier a CrossEncoder wraps, on the feeds the handler builds."""
        return pytorch_reference(source, "AutoModelForSequenceClassification", logits)

    def eval_set(self, task: str, eval_path: Path | None) -> EvalSet:
        if eval_path is not None:
            requests = read_requests(read_eval_file(eval_path, EVAL_HINT), str(eval_path))
            return EvalSet(requests=requests, calibration=requests,
                           description=f"{eval_path} ({len(requests)} queries, "
                                       f"{sum(len(r) for r in requests)} pairs)")
        requests = _builtin(BUILTIN_EVAL)
        return EvalSet(requests=requests, calibration=_builtin(BUILTIN_CALIB),
                       description=f"built-in {BUILTIN_EVAL} ({len(requests)} queries, "
                                   f"{sum(len(r) for r in requests)} pairs)")

    def sample_inputs(self, runtime: dict[str, Any], batch: int = 1) -> Any:
        """A query with `batch` candidate documents (pairs for a multi-label model, which cannot rank)."""
        documents = [SAMPLE_DOCUMENTS[i % len(SAMPLE_DOCUMENTS)] for i in range(batch)]
        if int(runtime.get("num_labels") or 1) == 1:
            return {"query": SAMPLE_QUERY, "documents": documents}
        return [[SAMPLE_QUERY, doc] for doc in documents]

    def worst_inputs(self, runtime: dict[str, Any], limits: RequestLimits) -> tuple[Any, str]:
        """As many pairs as the token budget runs at `max_length` tokens each, both texts of every pair
        `max_chars` long: the tokenizer reads the most characters, truncation cuts both sides, and the model
        runs the whole budget. Pairs, so any cross-encoder (one score or several) accepts it."""
        max_length = int(runtime.get("max_length") or 512)
        count = max(1, min(limits.max_batch, limits.max_tokens // max_length))
        filler = SAMPLE_DOCUMENTS[0] + " "
        text = (filler * (limits.max_chars // len(filler) + 1))[:limits.max_chars]
        return [[text, text]] * count, (f"{count} pairs × 2 texts × {limits.max_chars:,} characters "
                                        f"(≤ {max_length} tokens each pair, budget {limits.max_tokens:,} tokens)")

    def fidelity(self, model: LoadedModel, batches: Sequence[EvalBatch], *, reference_name: str,
                 eval_source: str) -> Fidelity:
        """Per query: Spearman of the scores callers get (through task_pairs.decode), the cosine of those
        scores and of the logits, and top-1 agreement (the best document for one-score models, the best
        label of each pair for multi-label ones)."""
        if not batches:
            raise ValueError("no evaluation requests")
        parameters = model.parameters(None)
        rhos, score_cos, logit_cos, top1 = [], [], [], []
        output = str(model.spec.get("output", "logits"))
        for batch in batches:
            ref_logits = np.asarray(batch.reference[output], dtype=np.float64)
            cand_logits = np.asarray(batch.candidate[output], dtype=np.float64)
            if ref_logits.shape != cand_logits.shape:
                raise ValueError(f"output {output} changed shape: {ref_logits.shape} -> {cand_logits.shape}")
            ref = np.asarray(task_pairs.decode(model, batch.reference, batch.encoded, parameters), dtype=np.float64)
            cand = np.asarray(task_pairs.decode(model, batch.candidate, batch.encoded, parameters), dtype=np.float64)
            rhos.append(spearman(ref, cand))
            score_cos.append(float(per_sample_cosine(ref.reshape(1, -1), cand.reshape(1, -1))[0]))
            logit_cos.append(float(per_sample_cosine(ref_logits.reshape(1, -1), cand_logits.reshape(1, -1))[0]))
            if ref.ndim == 1:
                top1.append(float(np.argmax(ref) == np.argmax(cand)))
            else:
                top1.append(float((ref.argmax(axis=-1) == cand.argmax(axis=-1)).mean()))
        values = np.asarray(rhos)
        return Fidelity(
            metric="spearman", output=output, mean=round(float(values.mean()), 6), min=round(float(values.min()), 6),
            samples=len(values), reference=reference_name, eval_source=eval_source,
            top1_agreement=round(float(np.mean(top1)), 6),
            details={"score_cosine": round(float(np.mean(score_cos)), 6),
                     "score_cosine_min": round(float(np.min(score_cos)), 6),
                     "logit_cosine": round(float(np.mean(logit_cos)), 6),
                     "top1_agreement": round(float(np.mean(top1)), 6),
                     "pairs": float(sum(b.encoded.count for b in batches))})


FAMILY = PairsFamily()
