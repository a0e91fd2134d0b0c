"""Extractive question answering: export additions, the PyTorch reference and answer-span fidelity.

Fidelity is judged on what callers see: the answer span the shipped runtime decodes (default
parameters, i.e. the pipeline's) from the candidate's start/end logits against the span it decodes from
the original PyTorch model's logits on the same windows. Per question, exact match is 1.0 when the top
answer's (start, end) character span is identical; `mean`/`min` are over questions. Start and end
agreement (each end of the span on its own), the per-window cosine of the logits and the largest score
difference of an agreeing answer are reported in `details`.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from slimserve.errors import SlimserveError
from slimserve.optimizer.eval_inputs import jsonl_records
from slimserve.optimizer.exported import ReferenceRunner
from slimserve.optimizer.families.base import EvalBatch, EvalSet
from slimserve.optimizer.families.reference import pytorch_reference, read_eval_file
from slimserve.optimizer.fidelity import Fidelity
from slimserve.optimizer.sources import HfFolderSource
from slimserve.runtime import task_qa
from slimserve.runtime.model_runtime import CHARS_PER_TOKEN, LoadedModel, RequestLimits

BUILTIN_EVAL = "qa_eval.jsonl"
BUILTIN_CALIB = "qa_calib.jsonl"
QUESTIONS_PER_REQUEST = 4
OUTPUTS = ("start_logits", "end_logits")
SAMPLE_QUESTION = "When was the lighthouse completed?"
SAMPLE_CONTEXT = ("The Skerryvore lighthouse stands on a reef south-west of Tiree. It was designed by Alan "
                  "Stevenson and completed in 1844; at 48 metres it is the tallest lighthouse in Scotland.")
WORST_FILLER = SAMPLE_CONTEXT + " Keepers logged 2,417 storms (1844-1984) at 56.12N 7.32W; see log #A-17/b. "
EVAL_HINT = 'the --eval file takes JSON lines like {"question": "...", "context": "..."}'


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    norms = float(np.linalg.norm(a64) * np.linalg.norm(b64))
    return 1.0 if norms == 0 else float(np.clip(a64 @ b64 / norms, -1.0, 1.0))


def _top(answer: Any) -> dict[str, Any] | None:
    """The best answer of one input (the pipeline answers a dict, a ranked list, or [] if none)."""
    if isinstance(answer, dict):
        return answer
    return answer[0] if answer else None


def _span(answer: dict[str, Any] | None) -> tuple[int | None, int | None]:
    """(start, end) of an answer; (None, None) when the pipeline found none."""
    return (None, None) if answer is None else (int(answer["start"]), int(answer["end"]))


def read_pairs(text: str, origin: str) -> list[dict[str, str]]:
    """JSON lines of {"question", "context"}: one clear error naming the line if one is not."""
    pairs = []
    for number, record in jsonl_records(text, origin, EVAL_HINT):
        if not isinstance(record, dict) or not all(isinstance(record.get(k), str) and record[k].strip()
                                                   for k in ("question", "context")):
            raise SlimserveError(f"{origin} line {number} needs non-empty string fields 'question' and 'context'",
                                 hint=EVAL_HINT)
        pairs.append({"question": record["question"], "context": record["context"]})
    if not pairs:
        raise SlimserveError(f"{origin} holds no question/context pairs", hint=EVAL_HINT)
    return pairs


def builtin_pairs(name: str) -> list[dict[str, str]]:
    data = resources.files("slimserve.optimizer").joinpath("data", name).read_text(encoding="utf-8")
    return read_pairs(data, f"built-in {name}")


def _requests(pairs: list[dict[str, str]]) -> list[Any]:
    return [pairs[i:i + QUESTIONS_PER_REQUEST] for i in range(0, len(pairs), QUESTIONS_PER_REQUEST)]


def worst_context_chars(tokenizer_file: Path, spec: dict[str, Any]) -> int:
    """The longest prefix of the filler context (in characters) that the runtime still accepts with
    default parameters: at most `max_windows` windows, and windows × `max_seq_len` within `max_tokens`.
    Measured with the tokenizer the handler ships, by bisection on the window count."""
    from tokenizers import Tokenizer

    settings = task_qa.settings_from_spec(spec, environ={})
    max_seq_len = settings.default_max_seq_len
    stride = min(max_seq_len // 2, 128)
    allowed = max(1, min(settings.max_windows, int(spec["max_tokens"]) // max_seq_len))
    tok = Tokenizer.from_file(str(tokenizer_file))
    tok.no_padding()
    tok.no_truncation()
    question_tokens = len(tok.encode(SAMPLE_QUESTION, add_special_tokens=False).ids)
    if max_seq_len - tok.num_special_tokens_to_add(True) - question_tokens <= stride:
        return len(SAMPLE_CONTEXT)  # a window too small for the stride: no long context is ever accepted
    tok.enable_truncation(max_length=max_seq_len, stride=stride,
                          strategy="only_second" if settings.question_first else "only_first",
                          direction=settings.truncation_side)
    limit = int(spec["max_chars"])
    filler = WORST_FILLER * (limit // len(WORST_FILLER) + 1)

    def windows(chars: int) -> int:
        context = filler[:chars]
        pair = (SAMPLE_QUESTION, context) if settings.question_first else (context, SAMPLE_QUESTION)
        return 1 + len(tok.encode(*pair).overflowing)

    low, high = 1, limit
    if windows(high) <= allowed:
        return high
    while low < high:  # the largest count of characters with windows(chars) <= allowed
        middle = (low + high + 1) // 2
        if windows(middle) <= allowed:
            low = middle
        else:
            high = middle - 1
    return low


class QaFamily:
    tasks = task_qa.TASKS

    def runtime_spec(self, source: HfFolderSource, export_dir: Path, base: dict[str, Any]) -> dict[str, Any]:
        """The base text spec plus what the pipeline reads from the tokenizer (which side is padded and
        truncated, the CLS and pad ids, the default window) and the window limits."""
        from transformers import AutoTokenizer

        if not base.get("tokenizer"):
            raise SlimserveError(f"{source.path} has no tokenizer: question answering needs one",
                                 hint="save the model's tokenizer (tokenizer.json) in the folder")
        tokenizer = AutoTokenizer.from_pretrained(str(export_dir), local_files_only=True)  # type: ignore[no-untyped-call]  # transformers is untyped
        max_positions = int(base["max_length"])
        max_seq_len = min(max_positions, task_qa.DEFAULT_MAX_SEQ_LEN)
        windows = task_qa.DEFAULT_MAX_WINDOWS
        spec = {key: value for key, value in base.items() if key not in ("output", "pooling", "normalize")}
        cls_id, pad_id = tokenizer.cls_token_id, tokenizer.pad_token_id
        spec.update({
            "labels": None, "outputs": list(OUTPUTS),
            "padding_side": str(tokenizer.padding_side), "truncation_side": str(tokenizer.truncation_side),
            "cls_id": None if cls_id is None else int(cls_id),
            "pad_token_id": None if pad_id is None else int(pad_id),
            "max_seq_len": max_seq_len, "max_windows": windows,
            # one request may hold one context of max_windows windows (or as many windows over several
            # inputs); a context is refused by characters only far beyond what that many windows hold
            "max_tokens": windows * max_seq_len, "max_chars": windows * max_positions * CHARS_PER_TOKEN,
        })
        spec["worst_context_chars"] = worst_context_chars(export_dir / str(spec["tokenizer"]), spec)
        return spec

    def sample_inputs(self, runtime: dict[str, Any], batch: int = 1) -> Any:
        """One question about a short paragraph (one window); `batch` > 1: a list of that many."""
        item = {"question": SAMPLE_QUESTION, "context": SAMPLE_CONTEXT}
        return item if batch == 1 else [item] * batch

    def worst_inputs(self, runtime: dict[str, Any], limits: RequestLimits) -> tuple[Any, str]:
        """One context as long as the limits accept: as many full windows as both `max_windows` and the
        token budget allow (its length in characters was measured with the model's own tokenizer when
        the manifest was written), so the model runs the whole budget at the full window length."""
        max_seq_len = int(runtime.get("max_seq_len") or task_qa.DEFAULT_MAX_SEQ_LEN)
        windows = max(1, min(int(runtime.get("max_windows") or task_qa.DEFAULT_MAX_WINDOWS),
                             limits.max_tokens // max_seq_len))
        chars = min(int(runtime.get("worst_context_chars") or len(SAMPLE_CONTEXT)), limits.max_chars)
        context = (WORST_FILLER * (chars // len(WORST_FILLER) + 1))[:chars]
        return ({"question": SAMPLE_QUESTION, "context": context},
                f"1 question × {chars:,} characters of context (≤ {windows} windows of {max_seq_len} tokens)")

    def reference(self, source: HfFolderSource) -> ReferenceRunner:
        """AutoModelForQuestionAnswering on exactly the feeds (windows) the ONNX model gets."""
        return pytorch_reference(source, "AutoModelForQuestionAnswering",
                                 lambda out: {"start_logits": out.start_logits.float().numpy(),
                                              "end_logits": out.end_logits.float().numpy()})

    def eval_set(self, task: str, eval_path: Path | None) -> EvalSet:
        """Requests of QUESTIONS_PER_REQUEST pairs: the built-in set (some contexts span several windows;
        calibration kept apart), or the user's JSON lines (then also used to calibrate)."""
        if eval_path is not None:
            pairs = read_pairs(read_eval_file(eval_path, EVAL_HINT), str(eval_path))
            requests = _requests(pairs)
            return EvalSet(requests=requests, calibration=requests,
                           description=f"{eval_path} ({len(pairs)} questions)")
        pairs = builtin_pairs(BUILTIN_EVAL)
        return EvalSet(requests=_requests(pairs), calibration=_requests(builtin_pairs(BUILTIN_CALIB)),
                       description=f"built-in {BUILTIN_EVAL} ({len(pairs)} questions)")

    def fidelity(self, model: LoadedModel, batches: Sequence[EvalBatch], *, reference_name: str,
                 eval_source: str) -> Fidelity:
        parameters = model.parameters(None)
        exact: list[float] = []
        starts: list[float] = []
        ends: list[float] = []
        score_diffs: list[float] = []
        cosines: list[float] = []
        for batch in batches:
            for name in OUTPUTS:
                ref_shape, cand_shape = np.shape(batch.reference[name]), np.shape(batch.candidate[name])
                if ref_shape != cand_shape:
                    raise ValueError(f"output {name} changed shape: {ref_shape} -> {cand_shape}")
            ref = model.decode_outputs(batch.reference, batch.encoded, parameters)
            cand = model.decode_outputs(batch.candidate, batch.encoded, parameters)
            if batch.encoded.single:
                ref, cand = [ref], [cand]
            for r_answer, c_answer in zip(ref, cand):
                r, c = _top(r_answer), _top(c_answer)
                r_span, c_span = _span(r), _span(c)
                exact.append(float(r_span == c_span))
                starts.append(float(r_span[0] == c_span[0]))
                ends.append(float(r_span[1] == c_span[1]))
                if r is not None and c is not None and r_span == c_span:
                    score_diffs.append(abs(float(r["score"]) - float(c["score"])))
            per_input = zip(task_qa.window_logits(batch.reference, batch.encoded),
                            task_qa.window_logits(batch.candidate, batch.encoded))
            for (r_starts, r_ends), (c_starts, c_ends) in per_input:
                for rs, re_, cs, ce in zip(r_starts, r_ends, c_starts, c_ends):
                    cosines.append(_cosine(np.concatenate([rs, re_], axis=1), np.concatenate([cs, ce], axis=1)))
        if not exact:
            raise ValueError("no evaluation questions")
        details = {"start_agreement": round(float(np.mean(starts)), 6),
                   "end_agreement": round(float(np.mean(ends)), 6),
                   "logit_cosine_mean": round(float(np.mean(cosines)), 6),
                   "logit_cosine_min": round(float(np.min(cosines)), 6),
                   "windows": float(len(cosines)),
                   "max_score_diff": round(max(score_diffs, default=0.0), 6)}
        return Fidelity(metric="exact_match", output=",".join(OUTPUTS), mean=round(float(np.mean(exact)), 6),
                        min=round(float(np.min(exact)), 6), samples=len(exact), reference=reference_name,
                        eval_source=eval_source, details=details)


FAMILY = QaFamily()
