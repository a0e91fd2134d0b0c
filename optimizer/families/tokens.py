"""Token classification (NER, POS): export additions, the PyTorch reference and entity-level fidelity.

Fidelity is judged on what callers see: the entities the shipped runtime decodes (aggregation `simple`)
from the candidate's logits against those it decodes from the original PyTorch model's logits on the
same tokens. Per text, entity F1 is the exact-match F1 of the (start, end, entity_group) sets (1.0 when
both are empty); `mean`/`min` are over texts. Token-label agreement (argmax over real tokens) and the
per-text cosine of the logits are reported in `details`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from slimserve.errors import SlimserveError
from slimserve.optimizer import eval_inputs
from slimserve.optimizer.exported import ReferenceRunner
from slimserve.optimizer.families.base import EvalBatch, EvalSet
from slimserve.optimizer.families.reference import logits, pytorch_reference
from slimserve.optimizer.fidelity import Fidelity
from slimserve.optimizer.sources import HfFolderSource
from slimserve.runtime import task_tokens
from slimserve.runtime.model_runtime import LoadedModel, RequestLimits

BUILTIN_EVAL = "ner_eval.jsonl"
BUILTIN_CALIB = "ner_calib.jsonl"
TEXTS_PER_REQUEST = 8
SAMPLE_TEXT = "Angela Merkel met Emmanuel Macron at the Élysée Palace in Paris on behalf of the European Union."
FIDELITY_PARAMETERS = {"aggregation_strategy": "simple", "ignore_labels": ["O"], "stride": None}

Entity = tuple[int, int, str]


def entity_f1(reference: set[Entity], candidate: set[Entity]) -> float:
    """Exact-match F1 of two entity sets; two empty sets agree perfectly."""
    if not reference and not candidate:
        return 1.0
    hits = len(reference & candidate)
    return 2.0 * hits / (len(reference) + len(candidate))


def _entity_set(entities: list[dict[str, Any]]) -> set[Entity]:
    return {(int(e["start"]), int(e["end"]), str(e["entity_group"])) for e in entities}


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    norms = float(np.linalg.norm(a64) * np.linalg.norm(b64))
    return 1.0 if norms == 0 else float(np.clip(a64 @ b64 / norms, -1.0, 1.0))


class TokensFamily:
    tasks = task_tokens.TASKS

    def runtime_spec(self, source: HfFolderSource, export_dir: Path, base: dict[str, Any]) -> dict[str, Any]:
        """The base text spec plus the unknown-token id: the pipeline shows an unknown token as its source
        characters and never as a subword."""
        from transformers import AutoTokenizer

        if not base.get("tokenizer"):
            raise SlimserveError(f"{source.path} has no tokenizer: token classification needs one",
                                 hint="save the model's tokenizer (tokenizer.json) in the folder")
        tokenizer = AutoTokenizer.from_pretrained(str(export_dir), local_files_only=True)  # type: ignore[no-untyped-call]  # transformers is untyped
        unk_id = tokenizer.unk_token_id
        return {**base, "output": "logits", "pooling": "none", "normalize": False,
                "unk_id": None if unk_id is None else int(unk_id)}

    def reference(self, source: HfFolderSource) -> ReferenceRunner:
        """AutoModelForTokenClassification on exactly the feeds the ONNX model gets."""
        return pytorch_reference(source, "AutoModelForTokenClassification", logits)

    def eval_set(self, task: str, eval_path: Path | None) -> EvalSet:
        """Requests of TEXTS_PER_REQUEST texts: the built-in NER texts (calibration kept apart), or the
        user's JSON lines `{"text": ...}` (then also used to calibrate)."""
        if eval_path is not None:
            texts = eval_inputs.load_texts(eval_path)
            requests = _batches(texts)
            return EvalSet(requests=requests, calibration=requests,
                           description=f"{eval_path} ({len(texts)} texts)")
        texts = eval_inputs.builtin_texts(BUILTIN_EVAL)
        return EvalSet(requests=_batches(texts), calibration=_batches(eval_inputs.builtin_texts(BUILTIN_CALIB)),
                       description=f"built-in {BUILTIN_EVAL} ({len(texts)} texts)")

    def sample_inputs(self, runtime: dict[str, Any], batch: int = 1) -> Any:
        """`batch` copies of one news-like sentence with people, places and an organisation."""
        return [SAMPLE_TEXT] * batch

    def worst_inputs(self, runtime: dict[str, Any], limits: RequestLimits) -> tuple[Any, str]:
        """As many texts of `max_chars` characters as the token budget runs at `max_length` tokens each:
        the longest texts cost tokenizing every character, the model runs the budget, and decoding walks
        every token (a `stride` request is bounded by the same token budget)."""
        max_length = int(runtime.get("max_length") or 512)
        count = max(1, min(limits.max_batch, limits.max_tokens // max_length))
        filler = SAMPLE_TEXT + " "
        text = (filler * (limits.max_chars // len(filler) + 1))[:limits.max_chars]
        return [text] * count, (f"{count} texts × {limits.max_chars:,} characters (≤ {max_length} tokens each, "
                                f"budget {limits.max_tokens:,} tokens)")

    def fidelity(self, model: LoadedModel, batches: Sequence[EvalBatch], *, reference_name: str,
                 eval_source: str) -> Fidelity:
        f1s: list[float] = []
        agree = total = 0
        cosines: list[float] = []
        for batch in batches:
            ref_logits = np.asarray(batch.reference["logits"], dtype=np.float32)
            cand_logits = np.asarray(batch.candidate["logits"], dtype=np.float32)
            if ref_logits.shape != cand_logits.shape:
                raise ValueError(f"output logits changed shape: {ref_logits.shape} -> {cand_logits.shape}")
            ref = task_tokens.entities_of(model, ref_logits, batch.encoded, FIDELITY_PARAMETERS)
            cand = task_tokens.entities_of(model, cand_logits, batch.encoded, FIDELITY_PARAMETERS)
            f1s.extend(entity_f1(_entity_set(r), _entity_set(c)) for r, c in zip(ref, cand))
            for chunk in batch.encoded.context["chunks"]:
                real = [i for i, special in enumerate(chunk.special) if not special]
                r, c = ref_logits[chunk.row, real], cand_logits[chunk.row, real]
                agree += int((r.argmax(axis=-1) == c.argmax(axis=-1)).sum())
                total += len(real)
                cosines.append(_cosine(r, c))
        if not f1s:
            raise ValueError("no evaluation texts")
        details = {"token_label_agreement": round(agree / total, 6) if total else 1.0,
                   "logit_cosine_mean": round(float(np.mean(cosines)), 6),
                   "logit_cosine_min": round(float(np.min(cosines)), 6)}
        return Fidelity(metric="entity_f1", output="logits", mean=round(float(np.mean(f1s)), 6),
                        min=round(float(np.min(f1s)), 6), samples=len(f1s), reference=reference_name,
                        eval_source=eval_source, details=details)


def _batches(texts: list[str]) -> list[Any]:
    return [texts[i:i + TEXTS_PER_REQUEST] for i in range(0, len(texts), TEXTS_PER_REQUEST)]


FAMILY = TokensFamily()
