"""Sentence embeddings (feature-extraction) and sentence classification (text-classification).

Shipped beside `model_runtime.py`. Requests follow the Hugging Face Inference API: `{"inputs": "text"}` or
`{"inputs": ["text", ...]}`, with `"parameters"`:

- feature-extraction: none. Answer `{"embeddings": [[...], ...]}` (one vector per text, pooled and
  normalised as the source model does).
- text-classification: `top_k` (default: the best label only; an integer: that many; `null`: every
  label) and `function_to_apply` (`softmax`, `sigmoid`, `none`; default as the transformers pipeline
  picks it: sigmoid for one label or multi-label models, softmax otherwise). Answer as
  `pipeline("text-classification")` does: one `{"label", "score"}` per text by default, a list of
  them per text when `top_k` is given; a single string gets the pipeline's single-input shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if __package__:
    from .model_runtime import Encoded, InputError, RequestLimits
else:  # flat in the artifact
    from model_runtime import Encoded, InputError, RequestLimits  # type: ignore[no-redef]

if TYPE_CHECKING:
    from .model_runtime import LoadedModel

TASKS = ("feature-extraction", "text-classification")
UNSET: Any = "__unset__"  # `top_k` absent (best label, legacy shape) differs from `top_k: null` (all labels)
PARAMETERS: dict[str, dict[str, Any]] = {
    "feature-extraction": {},
    "text-classification": {"top_k": UNSET, "function_to_apply": None},
}
FUNCTIONS = ("softmax", "sigmoid", "none")


def read_parameters(values: dict[str, Any]) -> dict[str, Any]:
    if not values:
        return values
    top_k = values["top_k"]
    if top_k is not UNSET and top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise InputError('"top_k" must be a positive integer or null')
    function = values["function_to_apply"]
    if isinstance(function, str):  # the pipeline takes any case ("SOFTMAX", "Sigmoid")
        function = values["function_to_apply"] = function.lower()
    if function is not None and function not in FUNCTIONS:
        raise InputError(f'"function_to_apply" must be one of {", ".join(FUNCTIONS)}')
    return values


def text_inputs(inputs: Any) -> tuple[list[str], bool]:
    """The texts of a request and whether a single string was sent; every malformed shape is a 400."""
    if isinstance(inputs, str):
        texts, single = [inputs], True
    elif isinstance(inputs, list) and all(isinstance(t, str) for t in inputs):
        texts, single = list(inputs), False
    else:
        raise InputError('"inputs" must be a string or a list of strings')
    if not texts:
        raise InputError('"inputs" is empty')
    for index, text in enumerate(texts):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # e.g. a lone surrogate from "\ud800" in the JSON
            raise InputError(f"inputs[{index}] is not valid Unicode text (lone surrogate)") from None
    return texts, single


def encode(model: LoadedModel, inputs: Any, parameters: dict[str, Any], limits: RequestLimits | None) -> Encoded:
    texts, single = text_inputs(inputs)
    if limits is not None:
        limits.check_texts(texts)
    feeds = model.encode(texts)
    if limits is not None and feeds:
        batch, length = next(iter(feeds.values())).shape[:2]
        limits.check_tokens(int(batch), int(length))
    if model.task == "text-classification":
        _refuse_tokenless(feeds)
    return Encoded(feeds=feeds, count=len(texts), single=single)


def _refuse_tokenless(feeds: dict[str, np.ndarray]) -> None:
    """A tokenizer that adds no special tokens (GPT-2's) turns "" into zero tokens: a classifier has nothing
    to classify (the pipeline's model raises, ONNX fails in a Reshape or pools a pad token), so it is the
    caller's 400 rather than a 500 or a made-up answer."""
    if not feeds:
        return
    mask = feeds.get("attention_mask")
    rows = next(iter(feeds.values()))
    lengths = mask.sum(axis=1) if mask is not None else [rows.shape[1]] * rows.shape[0]
    for index, length in enumerate(lengths):
        if int(length) == 0:
            raise InputError(f"inputs[{index}] has no tokens (this model's tokenizer adds none to an empty text)")


def default_function(spec: Mapping[str, Any], labels: int) -> str:
    """What transformers' text-classification pipeline applies when the caller does not say: nothing on a
    regression head, sigmoid for one label or multi-label models, softmax otherwise."""
    if spec.get("problem_type") == "regression":
        return "none"
    if spec.get("problem_type") == "multi_label_classification" or labels == 1:
        return "sigmoid"
    return "softmax"


def scores(logits: np.ndarray, function: str) -> np.ndarray:
    """The pipeline's formulas, in float32 as it computes them, so equal scores (and so the order of
    labels) come out the same."""
    logits = np.asarray(logits, dtype=np.float32)
    if function == "sigmoid":
        with np.errstate(over="ignore"):  # exp(-x) overflows to inf for very negative x: the score is 0
            return np.asarray(1.0 / (1.0 + np.exp(-logits)), dtype=np.float32)
    if function == "softmax":
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return np.asarray(shifted / shifted.sum(axis=-1, keepdims=True), dtype=np.float32)
    return logits


def decode(model: LoadedModel, outputs: dict[str, np.ndarray], encoded: Encoded, parameters: dict[str, Any]) -> Any:
    primary = model.postprocess(outputs, encoded.feeds)
    if model.task == "feature-extraction":
        return {"embeddings": primary.tolist()}
    labels = model.spec.get("labels") or [f"LABEL_{i}" for i in range(primary.shape[-1])]
    probs = scores(primary, parameters["function_to_apply"] or default_function(model.spec, primary.shape[-1]))
    top_k = parameters["top_k"]
    answers: list[Any] = []
    for row in probs:
        order = np.argsort(-row, kind="stable")
        ranked = [{"label": str(labels[i]), "score": float(row[i])} for i in order]
        if top_k is UNSET:
            answers.append(ranked[0])
        else:
            answers.append(ranked if top_k is None else ranked[:top_k])
    if encoded.single:
        return answers[0] if top_k is not UNSET else answers
    return answers
