"""Load an optimized model folder once and answer predictions. Shipped as-is inside every artifact.

Only the standard library, numpy, onnxruntime and (for text models) tokenizers may be imported here:
this file runs on Lambda/Cloud Run where torch and slimserve are absent. The folder's `slimserve.json`
manifest carries a `runtime` section that says how to tokenize, which output to read and how to pool.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

MANIFEST_NAME = "slimserve.json"

_NUMPY_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


# onnxruntime's exceptions for inputs the graph cannot take (rank, shape or dtype mismatches).
_CALLER_ERRORS: tuple[type[BaseException], ...] = tuple(
    getattr(ort.capi.onnxruntime_pybind11_state, name)
    for name in ("InvalidArgument", "Fail", "RuntimeException")
    if hasattr(ort.capi.onnxruntime_pybind11_state, name)
)


class InputError(ValueError):
    """The request is malformed; the message is safe to return to the caller."""


def available_cpus() -> int:
    """CPUs this process may really use (cgroup/affinity aware), not the host's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def session_options(threads: int | None = None) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or available_cpus()
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return opts


class LoadedModel:
    """An ONNX Runtime session plus the tokenizer and post-processing its manifest describes."""

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        threads: int | None = None,
        *,
        model_file: str | os.PathLike[str] | None = None,
        spec: dict[str, Any] | None = None,
    ) -> None:
        """Load `model_dir` as its manifest says; `model_file`/`spec` override it (slimserve evaluates
        candidate files this way before their folder exists)."""
        self.root = Path(model_dir)
        if spec is None or model_file is None:
            with open(self.root / MANIFEST_NAME, encoding="utf-8") as fh:
                manifest = json.load(fh)
            spec = spec or manifest["runtime"]
            model_file = model_file or self.root / manifest["model"]["path"]
        self.spec: dict[str, Any] = spec
        self.session = ort.InferenceSession(
            str(model_file), sess_options=session_options(threads), providers=["CPUExecutionProvider"]
        )
        self.input_types = {i.name: _NUMPY_DTYPES.get(i.type, np.float32) for i in self.session.get_inputs()}
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.kind: str = self.spec["kind"]
        self.max_batch: int = int(self.spec.get("max_batch", 64))
        self.tokenizer = None
        if self.kind == "text":
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(self.root / self.spec["tokenizer"]))
            tok.enable_truncation(max_length=int(self.spec["max_length"]))
            tok.enable_padding(pad_id=int(self.spec.get("pad_id", 0)), pad_token=self.spec.get("pad_token", "[PAD]"))
            self.tokenizer = tok

    # -- text models ---------------------------------------------------------------------------
    def encode(self, texts: list[str]) -> dict[str, np.ndarray]:
        """Token ids, attention mask and (if the model takes them) token type ids, padded to the batch."""
        assert self.tokenizer is not None
        encodings = self.tokenizer.encode_batch(texts)
        feeds: dict[str, np.ndarray] = {}
        columns = {
            "input_ids": [e.ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
            "token_type_ids": [e.type_ids for e in encodings],
        }
        for name, dtype in self.input_types.items():
            if name not in columns:
                raise InputError(f"model input {name!r} cannot be built from text")
            feeds[name] = np.asarray(columns[name], dtype=dtype)
        return feeds

    def postprocess(self, outputs: dict[str, np.ndarray], feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The primary output, pooled and normalised the way the source model does it."""
        out = np.asarray(outputs[self.spec["output"]], dtype=np.float32)
        pooling = self.spec.get("pooling", "none")
        if pooling == "mean":
            mask = feeds["attention_mask"].astype(np.float32)[..., None]
            out = (out * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
        elif pooling == "cls":
            out = out[:, 0]
        if self.spec.get("normalize"):
            out = out / np.clip(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12, None)
        return out

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self.session.run(None, feeds)
        return dict(zip(self.output_names, values))

    def predict_texts(self, texts: list[str]) -> dict[str, Any]:
        """`{"embeddings": [...]}` for feature extraction, `{"labels", "scores"}` for classification."""
        feeds = self.encode(texts)
        primary = self.postprocess(self.run(feeds), feeds)
        if self.spec["task"] == "text-classification":
            logits = primary - primary.max(axis=-1, keepdims=True)
            probs = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
            best = probs.argmax(axis=-1)
            labels = self.spec.get("labels") or [f"LABEL_{i}" for i in range(probs.shape[-1])]
            return {"labels": [labels[i] for i in best], "scores": [float(probs[n, i]) for n, i in enumerate(best)]}
        return {"embeddings": primary.tolist()}

    # -- tensor models -------------------------------------------------------------------------
    def predict_tensors(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """`{"outputs": {name: nested lists}}` for models that take named arrays."""
        missing = sorted(set(self.input_types) - set(inputs))
        if missing:
            raise InputError(f"missing inputs: {', '.join(missing)} (model takes {', '.join(self.input_types)})")
        feeds: dict[str, np.ndarray] = {}
        for name, dtype in self.input_types.items():
            try:
                with np.errstate(over="ignore", invalid="ignore"):  # out-of-range values are checked below
                    feeds[name] = np.asarray(inputs[name], dtype=dtype)
            except (TypeError, ValueError, OverflowError) as exc:
                raise InputError(f"input {name!r} is not a numeric array: {exc}") from None
            if feeds[name].dtype.kind == "f" and not np.isfinite(feeds[name]).all():
                raise InputError(f"input {name!r} holds NaN or infinity (or a number too large for {feeds[name].dtype})")
        try:
            outputs = self.run(feeds)
        except _CALLER_ERRORS as exc:  # wrong shapes or ranks surface as these; anything else is a 500
            raise InputError(f"inputs do not fit the model: {str(exc).splitlines()[0][:200]}") from None
        return {"outputs": {k: v.tolist() for k, v in outputs.items()}}
