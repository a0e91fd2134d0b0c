"""Rerankers and cross-encoders (text-ranking): a sequence classifier that scores text PAIRS.

Shipped beside `model_runtime.py`. It answers what sentence-transformers' `CrossEncoder` answers on the
same folder, so a reranker moves from `CrossEncoder` to slimserve without changing its numbers:

- `{"inputs": {"query": "...", "documents": ["...", ...]}}` ranks the documents like `CrossEncoder.rank`:
  `[{"index": i, "score": s}, ...]` best first (ties keep document order). The keys follow the common
  rerank APIs (Cohere, Hugging Face TEI: `index`, `score`, `text`) rather than CrossEncoder's
  `corpus_id`. Parameters: `top_k` (null: every document), `return_documents` (adds `"text"`).
  Ranking needs a one-score model (CrossEncoder.rank refuses others too); send pairs to an NLI model.
- `{"inputs": [["a", "b"], ...]}` scores pairs like `CrossEncoder.predict`: `[s, ...]`, or a list of
  scores per pair for a multi-label (NLI) model; a single pair `["a", "b"]` gets a single answer.
  Parameter `apply_softmax` (softmax over the labels after the activation, as CrossEncoder does).

Scores are the logits through the activation the folder declares (recorded by the optimizer in the
manifest's `activation`: CrossEncoder's default is sigmoid for one label, identity otherwise). They are
computed in float32 like PyTorch computes them, so ties and order match. Pairs are encoded with the
tokenizer's own pair encoding (segment ids, `[SEP]` between texts) truncated `longest_first` to the
folder's max length, exactly as the CrossEncoder's fast tokenizer does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if __package__:
    from .model_runtime import LIMIT_ENV, Encoded, InputError, LimitError, RequestLimits
else:  # flat in the artifact
    from model_runtime import LIMIT_ENV, Encoded, InputError, LimitError, RequestLimits  # type: ignore[no-redef]

if TYPE_CHECKING:
    from .model_runtime import LoadedModel

TASKS = ("text-ranking",)
PARAMETERS: dict[str, dict[str, Any]] = {
    "text-ranking": {"top_k": None, "return_documents": False, "apply_softmax": False},
}
ACTIVATIONS = ("sigmoid", "identity", "tanh", "relu", "softmax")
REQUEST_SHAPE = '"inputs" must be {"query": str, "documents": [str, ...]} or a list of [str, str] pairs'


@dataclass(frozen=True)
class Request:
    """What `decode` needs besides the scores: ranking (with its documents) or plain pairs."""

    ranking: bool
    documents: list[str]


def read_parameters(values: dict[str, Any]) -> dict[str, Any]:
    top_k = values["top_k"]
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise InputError('"top_k" must be a positive integer or null')
    for name in ("return_documents", "apply_softmax"):
        if not isinstance(values[name], bool):
            raise InputError(f'"{name}" must be true or false')
    return values


def setup(model: LoadedModel) -> None:
    """Truncate pairs the way a CrossEncoder's tokenizer does (`truncation="longest_first"`)."""
    if model.tokenizer is not None:
        model.tokenizer.enable_truncation(max_length=int(model.spec["max_length"]), strategy="longest_first",
                                          direction=str(model.spec.get("truncation_side", "right")))


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InputError(f"{where} must be a string ({REQUEST_SHAPE})")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # e.g. a lone surrogate from "\ud800" in the JSON
        raise InputError(f"{where} is not valid Unicode text (lone surrogate)") from None
    return value


def _is_pair(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(isinstance(t, str) for t in value)


def read_inputs(inputs: Any) -> tuple[list[tuple[str, str]], Request, bool]:
    """The pairs to score, how to answer, and whether a single pair was sent; any other shape is a 400."""
    if isinstance(inputs, dict):
        unknown = sorted(set(inputs) - {"query", "documents"})
        if unknown:
            raise InputError(f'unknown key {unknown[0]!r} in "inputs" ({REQUEST_SHAPE})')
        if "query" not in inputs or "documents" not in inputs:
            raise InputError(f'"inputs" needs both "query" and "documents" ({REQUEST_SHAPE})')
        query = _text(inputs["query"], '"query"')
        documents = inputs["documents"]
        if not isinstance(documents, list):
            raise InputError('"documents" must be a list of strings')
        if not documents:
            raise InputError('"documents" is empty')
        docs = [_text(d, f"documents[{i}]") for i, d in enumerate(documents)]
        return [(query, d) for d in docs], Request(ranking=True, documents=docs), False
    if _is_pair(inputs):
        pair = (_text(inputs[0], "inputs[0]"), _text(inputs[1], "inputs[1]"))
        return [pair], Request(ranking=False, documents=[]), True
    if not isinstance(inputs, list):
        raise InputError(REQUEST_SHAPE)
    if not inputs:
        raise InputError('"inputs" is empty')
    pairs = []
    for index, item in enumerate(inputs):
        if not (isinstance(item, list) and len(item) == 2):
            raise InputError(f"inputs[{index}] is not a pair of two strings ({REQUEST_SHAPE})")
        pairs.append((_text(item[0], f"inputs[{index}][0]"), _text(item[1], f"inputs[{index}][1]")))
    return pairs, Request(ranking=False, documents=[]), False


def num_labels(model: LoadedModel) -> int:
    """Scores per pair: recorded by the optimizer, else read from the graph's output shape."""
    if model.spec.get("num_labels"):
        return int(model.spec["num_labels"])
    output = next((o for o in model.session.get_outputs() if o.name == model.spec.get("output", "logits")), None)
    last = output.shape[-1] if output is not None and output.shape else None
    return last if isinstance(last, int) else len(model.spec.get("labels") or [0])


def check_limits(pairs: list[tuple[str, str]], request: Request, limits: RequestLimits) -> None:
    """Bound the work before tokenizing: pairs per request and characters per text."""
    limits.check_batch(len(pairs), "documents" if request.ranking else "pairs")
    longest = max(max(len(a), len(b)) for a, b in pairs)
    if longest > limits.max_chars:
        raise LimitError(f"input text too long: {longest} > {limits.max_chars} characters per text "
                         f"(max_chars, {LIMIT_ENV['max_chars']})")


def encode_pairs(model: LoadedModel, pairs: list[tuple[str, str]]) -> dict[str, np.ndarray]:
    """Token ids, attention mask and segment ids of `text [SEP] text_pair`, padded to the batch."""
    assert model.tokenizer is not None
    encodings = model.tokenizer.encode_batch(pairs)
    columns = {
        "input_ids": [e.ids for e in encodings],
        "attention_mask": [e.attention_mask for e in encodings],
        "token_type_ids": [e.type_ids for e in encodings],
    }
    feeds: dict[str, np.ndarray] = {}
    for name, dtype in model.input_types.items():
        if name not in columns:
            raise InputError(f"model input {name!r} cannot be built from text pairs")
        feeds[name] = np.asarray(columns[name], dtype=dtype)
    return feeds


def encode(model: LoadedModel, inputs: Any, parameters: dict[str, Any], limits: RequestLimits | None) -> Encoded:
    pairs, request, single = read_inputs(inputs)
    if request.ranking and num_labels(model) != 1:
        raise InputError(f"this model gives {num_labels(model)} scores per pair, so it cannot rank documents: "
                         'send pairs {"inputs": [["text", "text_pair"], ...]} instead')
    if not request.ranking and (parameters["top_k"] is not None or parameters["return_documents"]):
        raise InputError('"top_k" and "return_documents" apply to {"query", "documents"} requests only')
    if limits is not None:
        check_limits(pairs, request, limits)
    feeds = encode_pairs(model, pairs)
    if limits is not None:
        batch, length = next(iter(feeds.values())).shape[:2]
        limits.check_tokens(int(batch), int(length))
    return Encoded(feeds=feeds, count=len(pairs), context=request, single=single)


def activate(logits: np.ndarray, activation: str, apply_softmax: bool = False) -> np.ndarray:
    """CrossEncoder.predict's scores from the logits [pairs, labels], in float32 as PyTorch computes them:
    the activation, then softmax over the labels if asked (and there are several), one-label squeezed."""
    x = np.asarray(logits, dtype=np.float32)
    if activation == "sigmoid":
        with np.errstate(over="ignore"):  # exp(-x) overflows to inf for very negative x: the score is 0
            x = (1.0 / (1.0 + np.exp(-x))).astype(np.float32)
    elif activation == "tanh":
        x = np.tanh(x)
    elif activation == "relu":
        x = np.maximum(x, np.float32(0.0))
    elif activation == "softmax":
        x = _softmax(x)
    elif activation != "identity":
        raise ValueError(f"unknown activation {activation!r} (this runtime knows {', '.join(ACTIVATIONS)})")
    if apply_softmax and x.ndim > 1:
        x = _softmax(x)
    if x.ndim > 1 and x.shape[-1] == 1:
        x = x[..., 0]
    return x


def _softmax(x: np.ndarray) -> np.ndarray:
    shifted = np.exp(x - x.max(axis=-1, keepdims=True))
    return np.asarray(shifted / shifted.sum(axis=-1, keepdims=True), dtype=np.float32)


def scores(model: LoadedModel, outputs: Mapping[str, np.ndarray], apply_softmax: bool = False) -> np.ndarray:
    """The scores callers get for each pair (one per pair, or one per label and pair)."""
    logits = np.asarray(outputs[model.spec.get("output", "logits")])
    default = "sigmoid" if logits.shape[-1] == 1 else "identity"  # CrossEncoder's default activation
    return activate(logits, str(model.spec.get("activation") or default), apply_softmax)


def decode(model: LoadedModel, outputs: dict[str, np.ndarray], encoded: Encoded, parameters: dict[str, Any]) -> Any:
    values = scores(model, outputs, parameters["apply_softmax"])
    request: Request = encoded.context
    if not request.ranking:
        answers = values.tolist()
        return answers[0] if encoded.single else answers
    order = np.argsort(-values, kind="stable")  # best first; equal scores keep document order (as sorted())
    ranked: list[dict[str, Any]] = []
    for index in order[: parameters["top_k"]]:
        item: dict[str, Any] = {"index": int(index), "score": float(values[index])}
        if parameters["return_documents"]:
            item["text"] = request.documents[index]
        ranked.append(item)
    return ranked
