"""Extractive question answering, answered exactly as `transformers.pipeline("question-answering")` does.

Shipped beside `model_runtime.py`; imports only numpy and tokenizers. Request (Hugging Face Inference API):
`{"inputs": {"question": str, "context": str}}` or a list of such objects, with `"parameters"`:
`top_k` (1), `max_answer_len` (15), `max_seq_len` (min(model_max_length, 384)), `doc_stride`
(min(max_seq_len // 2, 128)), `max_question_len` (64; accepted and, as in the pipeline with a fast
tokenizer, without effect), `handle_impossible_answer` (false), `align_to_words` (true).

Answer: `{"answer", "score", "start", "end"}` (character offsets into the context), a list of them
when more than one answer survives `top_k`, exactly as the pipeline shapes it; a list of inputs gets a
list of such answers (one per input, even for a one-element list, where the pipeline would unwrap).

The pipeline's preprocessing is replicated with the `tokenizers` library its fast tokenizer wraps: the
pair is encoded question first (context first for left-padding tokenizers), only the context truncated
to `max_seq_len`, and the overflow split into windows overlapping by `doc_stride` tokens. Every window
of every input runs in one padded batch, but each window's logits are cut back to its own length before
post-processing, so the span arithmetic (softmax over masked logits, the upper-triangular span scores,
top-k selection, the null score, merging answers of equal text across windows) sees the very arrays the
pipeline sees and picks the same spans in the same order.

Bounds: `max_windows` windows per context (manifest, `SLIMSERVE_MAX_QA_WINDOWS`) and the text limits of
`RequestLimits` (inputs per request, characters per question/context, windows × tokens per request).
"""

from __future__ import annotations

import os
import threading
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if __package__:
    from .model_runtime import Encoded, InputError, LimitError, RequestLimits, env_limit
else:  # flat in the artifact
    from model_runtime import Encoded, InputError, LimitError, RequestLimits, env_limit  # type: ignore[no-redef]

if TYPE_CHECKING:
    from .model_runtime import LoadedModel

TASKS = ("question-answering",)
PARAMETERS: dict[str, dict[str, Any]] = {
    "question-answering": {"top_k": 1, "max_answer_len": 15, "doc_stride": None, "max_seq_len": None,
                           "max_question_len": 64, "handle_impossible_answer": False, "align_to_words": True},
}
DEFAULT_MAX_SEQ_LEN = 384  # the pipeline's window when the tokenizer allows more
DEFAULT_MAX_WINDOWS = 16
MAX_TOP_K = 100  # answers per input: the merge across windows is linear, but the response must stay small
WINDOWS_ENV = "SLIMSERVE_MAX_QA_WINDOWS"
NULL_SCORE = 1000000  # the pipeline's "no null answer seen yet"


@dataclass(frozen=True)
class QaSettings:
    """What the pipeline reads from the tokenizer (written into the manifest by the optimizer)."""

    question_first: bool     # tokenizer.padding_side == "right"
    truncation_side: str     # tokenizer.truncation_side
    cls_id: int | None       # tokenizer.cls_token_id: kept answerable (the null answer of SQuAD2 models)
    pad_id: int | None       # tokenizer.pad_token_id (left-padding tokenizers shift spans by its count)
    default_max_seq_len: int
    max_positions: int       # the longest window the model takes
    max_windows: int


@dataclass
class _State:
    settings: QaSettings
    tokenizer: Any            # a private copy: truncation changes per request
    special_pair: int         # special tokens the pair template adds
    lock: threading.Lock


@dataclass
class Window:
    """One overflowing chunk of an input: its encoding (offsets, words) and the pipeline's masks."""

    encoding: Any
    length: int
    p_mask: np.ndarray        # (1, length) int: 1 where a token cannot be part of an answer
    attention: np.ndarray     # (1, length) int
    offset: int               # left-padding tokenizers: the pipeline's pad count (0 otherwise)


@dataclass
class Item:
    context: str
    windows: list[Window]


_STATES: weakref.WeakKeyDictionary[Any, _State] = weakref.WeakKeyDictionary()


def settings_from_spec(spec: dict[str, Any], environ: Any = None) -> QaSettings:
    env = os.environ if environ is None else environ
    max_positions = int(spec.get("max_length") or DEFAULT_MAX_SEQ_LEN)
    cls_id = spec.get("cls_id")
    pad_id = spec.get("pad_token_id", spec.get("pad_id"))
    return QaSettings(
        question_first=str(spec.get("padding_side", "right")) == "right",
        truncation_side=str(spec.get("truncation_side", "right")),
        cls_id=None if cls_id is None else int(cls_id),
        pad_id=None if pad_id is None else int(pad_id),
        default_max_seq_len=int(spec.get("max_seq_len") or min(max_positions, DEFAULT_MAX_SEQ_LEN)),
        max_positions=max_positions,
        max_windows=env_limit(env.get(WINDOWS_ENV), spec.get("max_windows"), DEFAULT_MAX_WINDOWS, WINDOWS_ENV),
    )


def setup(model: LoadedModel) -> None:
    """A private tokenizer copy (no padding: the pipeline encodes unpadded) and the settings, once."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(model.tokenizer.to_str())
    tok.no_padding()
    tok.no_truncation()
    _STATES[model] = _State(settings=settings_from_spec(model.spec), tokenizer=tok,
                            special_pair=int(tok.num_special_tokens_to_add(True)), lock=threading.Lock())


def _state(model: LoadedModel) -> _State:
    if model not in _STATES:
        setup(model)
    return _STATES[model]


# -- parameters -------------------------------------------------------------------------------------
def _int_param(values: dict[str, Any], name: str, low: int, optional: bool = False) -> None:
    value = values[name]
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InputError(f'"{name}" must be an integer >= {low}' + (" or null" if optional else ""))


def read_parameters(values: dict[str, Any]) -> dict[str, Any]:
    _int_param(values, "top_k", 1)
    if values["top_k"] > MAX_TOP_K:
        raise InputError(f'"top_k" must be at most {MAX_TOP_K}')
    _int_param(values, "max_answer_len", 1)
    _int_param(values, "max_question_len", 1)
    _int_param(values, "max_seq_len", 1, optional=True)
    _int_param(values, "doc_stride", 0, optional=True)
    for name in ("handle_impossible_answer", "align_to_words"):
        if not isinstance(values[name], bool):
            raise InputError(f'"{name}" must be true or false')
    return values


# -- encode -----------------------------------------------------------------------------------------
def qa_inputs(inputs: Any) -> tuple[list[tuple[str, str]], bool]:
    """(question, context) pairs and whether one object (not a list) was sent; every bad shape is a 400."""
    single = isinstance(inputs, dict)
    items = [inputs] if single else inputs
    if not isinstance(items, list):
        raise InputError('"inputs" must be {"question": str, "context": str} or a list of such objects')
    if not items:
        raise InputError('"inputs" is empty')
    pairs = []
    for index, item in enumerate(items):
        where = '"inputs"' if single else f"inputs[{index}]"
        if not isinstance(item, dict):
            raise InputError(f'{where} must be an object {{"question": str, "context": str}}')
        extra = sorted(set(item) - {"question", "context"})
        if extra:
            raise InputError(f'{where} has an unknown key {extra[0]!r} (expected "question" and "context")')
        for key in ("question", "context"):
            value = item.get(key)
            if not isinstance(value, str):
                raise InputError(f'{where}["{key}"] must be a string')
            if not value:
                raise InputError(f'{where}["{key}"] is empty')
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:  # e.g. a lone surrogate from "\ud800" in the JSON
                raise InputError(f'{where}["{key}"] is not valid Unicode text (lone surrogate)') from None
        pairs.append((item["question"], item["context"]))
    return pairs, single


def window_sizes(settings: QaSettings, parameters: dict[str, Any]) -> tuple[int, int]:
    """(max_seq_len, doc_stride) as the pipeline derives them, within what the model takes."""
    max_seq_len = parameters["max_seq_len"]
    if max_seq_len is None:
        max_seq_len = settings.default_max_seq_len
    elif max_seq_len > settings.max_positions:
        raise InputError(f'"max_seq_len" must be at most {settings.max_positions} (the model\'s window)')
    stride = parameters["doc_stride"]
    if stride is None:
        stride = min(max_seq_len // 2, 128)
    if stride > max_seq_len:
        raise InputError(f'"doc_stride" ({stride}) is larger than "max_seq_len" ({max_seq_len})')
    return int(max_seq_len), int(stride)


def _check_chars(pairs: list[tuple[str, str]], limits: RequestLimits) -> None:
    for index, (question, context) in enumerate(pairs):
        for key, text in (("question", question), ("context", context)):
            if len(text) > limits.max_chars:
                raise LimitError(f"inputs[{index}] {key} too long: {len(text)} > {limits.max_chars} characters "
                                 "(max_chars, SLIMSERVE_MAX_TEXT_CHARS)")


def _encode_pair(state: _State, question: str, context: str, max_seq_len: int, stride: int, index: int) -> Any:
    """The pipeline's tokenizer call. tokenizers *panics* (not an exception) when the stride does not
    fit beside the question, so that case is found first and answered with a 400, as is a question
    that leaves no room for the context."""
    tok = state.tokenizer
    first, second = (question, context) if state.settings.question_first else (context, question)
    tok.no_truncation()
    room = max_seq_len - state.special_pair - len(tok.encode(question, add_special_tokens=False).ids)
    if room <= stride:
        whole = tok.encode(first, second)
        if len(whole.ids) <= max_seq_len:
            return whole  # fits without truncation: exactly what the truncating call returns
        if room <= 0:
            raise InputError(f"inputs[{index}] question too long: it leaves no room for the context in "
                             f"max_seq_len={max_seq_len} tokens")
        raise InputError(f'inputs[{index}]: "doc_stride" ({stride}) must be smaller than the {room} context tokens '
                         f"that fit beside the question in max_seq_len={max_seq_len}")
    tok.enable_truncation(max_length=max_seq_len, stride=stride,
                          strategy="only_second" if state.settings.question_first else "only_first",
                          direction=state.settings.truncation_side)
    return tok.encode(first, second)


def _window(settings: QaSettings, encoding: Any) -> Window:
    ids = np.asarray(encoding.ids, dtype=np.int64)
    if settings.question_first:
        p_mask = np.asarray([tok != 1 for tok in encoding.sequence_ids], dtype=np.int64)
    else:
        p_mask = np.zeros(len(ids), dtype=np.int64)
    if settings.cls_id is not None:
        p_mask[ids == settings.cls_id] = 0
    left = not settings.question_first and settings.pad_id is not None
    offset = int((ids == settings.pad_id).sum()) if left else 0
    attention = np.asarray(encoding.attention_mask, dtype=np.int64)
    return Window(encoding=encoding, length=len(ids), p_mask=p_mask[None], attention=attention[None], offset=offset)


def encode(model: LoadedModel, inputs: Any, parameters: dict[str, Any], limits: RequestLimits | None) -> Encoded:
    pairs, single = qa_inputs(inputs)
    if limits is not None:
        limits.check_batch(len(pairs))
        _check_chars(pairs, limits)
    state = _state(model)
    max_seq_len, stride = window_sizes(state.settings, parameters)
    items = []
    with state.lock:  # the copy's truncation is per request
        for index, (question, context) in enumerate(pairs):
            encoding = _encode_pair(state, question, context, max_seq_len, stride, index)
            windows = [encoding, *encoding.overflowing]
            if len(windows) > state.settings.max_windows:
                raise LimitError(f"inputs[{index}] context too long: {len(windows)} windows of {max_seq_len} tokens "
                                 f"> {state.settings.max_windows} per context (max_windows, {WINDOWS_ENV})")
            items.append(Item(context=context, windows=[_window(state.settings, w) for w in windows]))
    rows = [w for item in items for w in item.windows]
    length = max(w.length for w in rows)
    if limits is not None:
        limits.check_tokens(len(rows), length)
    return Encoded(feeds=_feeds(model, rows, length, int(model.spec.get("pad_id", 0))), count=len(pairs), context=items,
                   single=single)


def _feeds(model: LoadedModel, rows: list[Window], length: int, pad_id: int) -> dict[str, np.ndarray]:
    """All windows in one batch, padded on the right (decode cuts each back to its own length)."""
    columns = {"input_ids": ("ids", pad_id), "attention_mask": ("attention_mask", 0), "token_type_ids": ("type_ids", 0)}
    feeds: dict[str, np.ndarray] = {}
    for name, dtype in model.input_types.items():
        if name not in columns:
            raise InputError(f"model input {name!r} cannot be built from text")
        attribute, pad = columns[name]
        array = np.full((len(rows), length), pad, dtype=np.int64)
        for row, window in enumerate(rows):
            array[row, : window.length] = getattr(window.encoding, attribute)
        feeds[name] = array.astype(dtype)
    return feeds


# -- decode (transformers.pipelines.question_answering, line for line) -------------------------------
def decode_spans(start: np.ndarray, end: np.ndarray, topk: int, max_answer_len: int,
                 undesired_tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if start.ndim == 1:
        start = start[None]
    if end.ndim == 1:
        end = end[None]
    outer = np.matmul(np.expand_dims(start, -1), np.expand_dims(end, 1))
    # k beyond the sequence keeps the same cells; capping it keeps np.tril's arithmetic in range
    candidates = np.tril(np.triu(outer), min(max_answer_len, outer.shape[-1] + 1) - 1)
    scores_flat = candidates.flatten()
    if topk == 1:
        idx_sort = np.asarray([np.argmax(scores_flat)])
    elif len(scores_flat) < topk:
        idx_sort = np.argsort(-scores_flat)
    else:
        idx = np.argpartition(-scores_flat, topk)[0:topk]
        idx_sort = idx[np.argsort(-scores_flat[idx])]
    starts, ends = np.unravel_index(idx_sort, candidates.shape)[1:]
    # as in transformers: `nonzero()` of the (1, L) mask is (rows, cols), so token 0 always passes
    desired_spans = np.isin(starts, undesired_tokens.nonzero()) & np.isin(ends, undesired_tokens.nonzero())
    starts = starts[desired_spans]
    ends = ends[desired_spans]
    scores = candidates[0, starts, ends]
    return starts, ends, scores


def select_starts_ends(start: np.ndarray, end: np.ndarray, p_mask: np.ndarray, attention_mask: np.ndarray | None,
                       min_null_score: float, top_k: int, handle_impossible_answer: bool,
                       max_answer_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    undesired_tokens = np.abs(np.array(p_mask) - 1)
    if attention_mask is not None:
        undesired_tokens = undesired_tokens & attention_mask
    undesired_tokens_mask = undesired_tokens == 0.0
    start = np.where(undesired_tokens_mask, np.float32(-10000.0), start)
    end = np.where(undesired_tokens_mask, np.float32(-10000.0), end)
    start = np.exp(start - start.max(axis=-1, keepdims=True))
    start = start / start.sum()
    end = np.exp(end - end.max(axis=-1, keepdims=True))
    end = end / end.sum()
    if handle_impossible_answer:
        min_null_score = min(min_null_score, (start[0, 0] * end[0, 0]).item())
    start[0, 0] = end[0, 0] = 0.0
    starts, ends, scores = decode_spans(start, end, top_k, max_answer_len, undesired_tokens)
    return starts, ends, scores, min_null_score


def char_span(encoding: Any, s: int, e: int, sequence_index: int, align_to_words: bool) -> tuple[int, int]:
    """The pipeline's `get_indices`: whole words when the tokenizer knows them, else token offsets."""
    if align_to_words:
        try:
            start_word = encoding.token_to_word(s)
            end_word = encoding.token_to_word(e)
            start_index = encoding.word_to_chars(start_word, sequence_index=sequence_index)[0]
            end_index = encoding.word_to_chars(end_word, sequence_index=sequence_index)[1]
        except Exception:  # noqa: BLE001  # as transformers: tokenizers without words fall back to offsets
            start_index = encoding.offsets[s][0]
            end_index = encoding.offsets[e][1]
    else:
        start_index = encoding.offsets[s][0]
        end_index = encoding.offsets[e][1]
    return int(start_index), int(end_index)


def answer_item(item: Item, starts: list[np.ndarray], ends: list[np.ndarray], parameters: dict[str, Any],
                question_first: bool) -> Any:
    """One input's answer from its windows' logits (`starts`/`ends`: one (1, length) array per window)."""
    top_k, align = parameters["top_k"], parameters["align_to_words"]
    impossible = parameters["handle_impossible_answer"]
    pre_topk = top_k * 2 + 10 if align else top_k  # some candidates collapse when aligned to words
    min_null_score: float = NULL_SCORE
    answers: list[dict[str, Any]] = []
    by_text: dict[str, dict[str, Any]] = {}  # the pipeline's case-insensitive `get_answer`, without its scan
    sequence_index = 1 if question_first else 0
    for window, start, end in zip(item.windows, starts, ends):
        span_starts, span_ends, scores, min_null_score = select_starts_ends(
            start, end, window.p_mask, window.attention, min_null_score, pre_topk, impossible,
            parameters["max_answer_len"])
        for s, e, score in zip(span_starts, span_ends, scores):
            start_index, end_index = char_span(window.encoding, int(s) - window.offset, int(e) - window.offset,
                                               sequence_index, align)
            text = item.context[start_index:end_index]
            known = by_text.get(text.lower())
            if known is not None:
                known["score"] += score.item()
            else:
                answer = {"score": score.item(), "start": start_index, "end": end_index, "answer": text}
                answers.append(answer)
                by_text[text.lower()] = answer
    if impossible:
        answers.append({"score": min_null_score, "start": 0, "end": 0, "answer": ""})
    answers = sorted(answers, key=lambda x: x["score"], reverse=True)[:top_k]
    if len(answers) == 1:
        return answers[0]
    return answers


def window_logits(outputs: dict[str, np.ndarray], encoded: Encoded) -> list[tuple[list[np.ndarray], list[np.ndarray]]]:
    """Per input, its windows' (1, length) float32 start and end logits, padding cut off."""
    start_all = np.asarray(outputs["start_logits"], dtype=np.float32)
    end_all = np.asarray(outputs["end_logits"], dtype=np.float32)
    row, result = 0, []
    for item in encoded.context:
        starts, ends = [], []
        for window in item.windows:
            starts.append(start_all[row, : window.length][None])
            ends.append(end_all[row, : window.length][None])
            row += 1
        result.append((starts, ends))
    return result


def decode(model: LoadedModel, outputs: dict[str, np.ndarray], encoded: Encoded, parameters: dict[str, Any]) -> Any:
    question_first = _state(model).settings.question_first
    answers = [answer_item(item, starts, ends, parameters, question_first)
               for item, (starts, ends) in zip(encoded.context, window_logits(outputs, encoded))]
    return answers[0] if encoded.single else answers
