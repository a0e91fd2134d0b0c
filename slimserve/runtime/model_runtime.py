"""Load an optimized model folder once and answer predictions. Shipped as-is inside every artifact.

Only the standard library, numpy, onnxruntime, tokenizers (text models) and Pillow (image models) may be
imported here: this file runs on Lambda/Cloud Run where torch and slimserve are absent. The folder's
`slimserve.json` manifest carries a `runtime` section that says how to tokenize, which output to read and
how to pool.

Each task family has its own shipped module (`task_*.py`, listed in `TASK_MODULES`) with one contract:

    PARAMETERS                      task -> the request "parameters" it accepts, with their defaults
    read_parameters(values) -> dict the parameters (defaults filled in, names checked) validated
                                    (InputError on a bad value)
    setup(model) -> None            optional, once at load (e.g. the tokenizer's truncation for the task)
    encode(model, inputs, parameters, limits) -> Encoded
                                    validate "inputs" (InputError/LimitError), build the ONNX feeds
    decode(model, outputs, encoded, parameters) -> Any
                                    the response body, shaped like the transformers pipeline's answer
    predict(model, inputs, parameters, limits) -> Any
                                    optional, instead of one encode/run/decode: a task that runs the
                                    model several times per request (text generation's decode loop)

`LoadedModel.predict` runs that contract; slimserve's own evaluation calls `encode`/`decode` directly so
the numbers it reports come from the code that answers requests in production.
"""

from __future__ import annotations

import importlib
import json
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
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

    status = 400


class LimitError(InputError):
    """The request is well formed but asks for more work than one request may (HTTP 413)."""

    status = 413


# task -> the shipped module that encodes its requests and decodes its answers (see the module docstring).
TASK_MODULES: dict[str, str] = {
    "feature-extraction": "task_text",
    "text-classification": "task_text",
    "image-classification": "task_image",
    "token-classification": "task_tokens",
    "question-answering": "task_qa",
    "text-ranking": "task_pairs",
    "tabular-classification": "task_tabular",
    "tabular-regression": "task_tabular",
    "text-generation": "task_generation",
}


@dataclass
class Encoded:
    """One request turned into ONNX feeds, plus what `decode` needs to answer it (offsets, spans, sizes).

    `count` is how many inputs the request held; `single` says the caller sent one input rather than a
    list, so the answer is not wrapped in a list (as transformers pipelines do)."""

    feeds: dict[str, np.ndarray]
    count: int
    context: Any = None
    single: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def task_module(task: str) -> ModuleType:
    """The shipped module of `task` (flat beside this file in an artifact, a package inside slimserve)."""
    name = TASK_MODULES.get(task)
    if name is None:
        raise ValueError(f"this runtime does not serve task {task!r}")
    if __package__:
        return importlib.import_module(f"{__package__}.{name}")
    return importlib.import_module(name)


def check_parameter_names(raw: Any, accepted: Mapping[str, Any]) -> dict[str, Any]:
    """`raw` as a dict whose keys the task knows; an unknown one is the caller's 400, never ignored."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InputError('"parameters" must be a JSON object')
    unknown = sorted(set(raw) - set(accepted))
    if unknown:
        known = ", ".join(sorted(accepted)) or "none"
        raise InputError(f"unknown parameter {unknown[0]!r} (this model takes: {known})")
    return dict(raw)


# Defaults for manifests that predate the limits (the optimizer records them in `runtime`).
DEFAULT_MAX_BATCH = 64
DEFAULT_MAX_TOKENS = 4096
CHARS_PER_TOKEN = 32  # text longer than max_length × this is refused before tokenizing
DEFAULT_MAX_ELEMENTS = 1 << 20
LIMIT_ENV = {"max_batch": "SLIMSERVE_MAX_BATCH", "max_chars": "SLIMSERVE_MAX_TEXT_CHARS",
             "max_tokens": "SLIMSERVE_MAX_TOKENS", "max_elements": "SLIMSERVE_MAX_ELEMENTS"}


@dataclass(frozen=True)
class RequestLimits:
    """The most work one request may ask for, so the worst accepted request fits the deployment.

    The cost of a text request is tokenizing its characters (`max_chars` per text) and running the
    encoder on batch × padded sequence length after truncation (`max_tokens`, counted on the padded
    batch the model really sees: attention grows with it). A tensor request costs its element count
    (`max_elements`, all inputs together). `max_batch` bounds texts or rows. `check` measures the
    largest request these limits accept, and the deployment's memory and timeout come from it.
    """

    max_batch: int
    max_chars: int
    max_tokens: int
    max_elements: int

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], environ: Mapping[str, str] | None = None,
                  row_elements: int | None = None) -> RequestLimits:
        """The manifest's `runtime` limits, each overridable by its SLIMSERVE_MAX_* variable."""
        env = os.environ if environ is None else environ
        max_length = int(spec.get("max_length") or 512)
        defaults = {"max_batch": DEFAULT_MAX_BATCH, "max_chars": max_length * CHARS_PER_TOKEN,
                    "max_tokens": DEFAULT_MAX_TOKENS,
                    "max_elements": max(DEFAULT_MAX_ELEMENTS, row_elements or 0)}
        values = {key: env_limit(env.get(LIMIT_ENV[key]), spec.get(key), default, LIMIT_ENV[key])
                  for key, default in defaults.items()}
        return cls(**values)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def check_batch(self, count: int, what: str = "inputs") -> None:
        if count > self.max_batch:
            raise LimitError(f"too many {what}: {count} > {self.max_batch} per request "
                             f"(max_batch, {LIMIT_ENV['max_batch']})")

    def check_texts(self, texts: list[str]) -> None:
        self.check_batch(len(texts))
        longest = max((len(t) for t in texts), default=0)
        if longest > self.max_chars:
            raise LimitError(f"input text too long: {longest} > {self.max_chars} characters per text "
                             f"(max_chars, {LIMIT_ENV['max_chars']})")

    def check_tokens(self, batch: int, length: int) -> None:
        if batch * length > self.max_tokens:
            raise LimitError(f"request too large: {batch} texts × {length} tokens = {batch * length} tokens "
                             f"> {self.max_tokens} per request (max_tokens, {LIMIT_ENV['max_tokens']}): "
                             "send fewer or shorter texts")

    def check_elements(self, count: int) -> None:
        if count > self.max_elements:
            raise LimitError(f"request too large: {count} numbers > {self.max_elements} per request "
                             f"(max_elements, {LIMIT_ENV['max_elements']})")


def env_limit(env_value: str | None, spec_value: Any, default: int, name: str) -> int:
    """A positive integer limit: the environment wins, then the manifest, then the default."""
    raw = env_value if env_value not in (None, "") else spec_value
    if raw is None:
        return default
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive integer, got {raw!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return value


def row_elements(inputs: Any) -> int | None:
    """Numbers in one row of every input together, when every non-batch dimension is fixed."""
    total = 0
    for spec in inputs:
        dims = list(spec.shape[1:]) if spec.shape else []
        if not all(isinstance(d, int) and d > 0 for d in dims):
            return None
        total += math.prod(dims)
    return total


def available_cpus() -> int:
    """CPUs this process may really use (cgroup/affinity aware), not the host's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


# runtime.session.graph_optimization_level: the load-time level of a model slimserve already optimized
# offline (optimizer/steps/graph_opt.py `preoptimize`). Missing or unknown (an older or newer manifest): ALL,
# which is correct for any file.
_LOAD_LEVELS = {"basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


def session_options(threads: int | None = None, level: str | None = None) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or available_cpus()
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LOAD_LEVELS.get(str(level), "ORT_ENABLE_ALL"))
    return opts


def load_level(spec: dict[str, Any]) -> str | None:
    """The load-time optimization level the manifest's runtime section records, if any."""
    session = spec.get("session")
    return str(session.get("graph_optimization_level")) if isinstance(session, dict) else None


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
            str(model_file), sess_options=session_options(threads, load_level(self.spec)),
            providers=["CPUExecutionProvider"]
        )
        self.input_types = {i.name: _NUMPY_DTYPES.get(i.type, np.float32) for i in self.session.get_inputs()}
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.kind: str = self.spec["kind"]
        self.max_batch: int = int(self.spec.get("max_batch", DEFAULT_MAX_BATCH))
        self.tokenizer: Any = None
        if self.spec.get("tokenizer"):
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(self.root / self.spec["tokenizer"]))
            tok.enable_truncation(max_length=int(self.spec["max_length"]))
            tok.enable_padding(pad_id=int(self.spec.get("pad_id", 0)), pad_token=self.spec.get("pad_token", "[PAD]"))
            self.tokenizer = tok
        self.task: str = str(self.spec["task"])
        self.module: ModuleType | None = task_module(self.task) if self.kind != "tensor" else None
        if self.module is not None and hasattr(self.module, "setup"):
            self.module.setup(self)

    # -- every task but raw tensors --------------------------------------------------------------
    def parameters(self, raw: Any) -> dict[str, Any]:
        """The request's "parameters", checked by name here and by value in the task's module."""
        assert self.module is not None
        defaults: dict[str, Any] = self.module.PARAMETERS[self.task]
        known = check_parameter_names(raw, defaults)
        values: dict[str, Any] = self.module.read_parameters({**defaults, **known})
        return values

    def encode_request(self, inputs: Any, parameters: dict[str, Any], limits: RequestLimits | None = None) -> Encoded:
        assert self.module is not None
        encoded: Encoded = self.module.encode(self, inputs, parameters, limits)
        return encoded

    def decode_outputs(self, outputs: dict[str, np.ndarray], encoded: Encoded, parameters: dict[str, Any]) -> Any:
        assert self.module is not None
        return self.module.decode(self, outputs, encoded, parameters)

    def predict(self, inputs: Any, parameters: Any = None, limits: RequestLimits | None = None) -> Any:
        """The answer to `{"inputs": inputs, "parameters": parameters}`, within `limits` when given."""
        values = self.parameters(parameters)
        assert self.module is not None
        if hasattr(self.module, "predict"):  # a task that runs the model more than once (a generate loop)
            return self.module.predict(self, inputs, values, limits)
        encoded = self.encode_request(inputs, values, limits)
        return self.decode_outputs(self.run(encoded.feeds), encoded, values)

    def stream(self, inputs: Any, parameters: Any = None, limits: RequestLimits | None = None) -> Iterator[Any]:
        """The answer as events while it is produced (tasks with a `stream`: text generation); the request
        is validated before this returns, so a bad one is still a 400 rather than a broken stream."""
        if self.module is None or not hasattr(self.module, "stream"):
            raise InputError(f"{self.task} answers whole responses: streaming is for text-generation models")
        events: Iterator[Any] = self.module.stream(self, inputs, parameters, limits)
        return events

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

    def limits(self, environ: Mapping[str, str] | None = None) -> RequestLimits:
        """The request limits the manifest (or the environment) sets for this model."""
        return RequestLimits.from_spec(self.spec, environ, row_elements(self.session.get_inputs()))

    def predict_texts(self, texts: list[str], limits: RequestLimits | None = None) -> Any:
        """The answer to `{"inputs": texts}` (see task_text); kept for callers that only have texts."""
        return self.predict(texts, None, limits)

    # -- tensor models -------------------------------------------------------------------------
    def predict_tensors(self, inputs: dict[str, Any], limits: RequestLimits | None = None) -> dict[str, Any]:
        """`{"outputs": {name: nested lists}}` for models that take named arrays (within `limits` if given)."""
        if limits is not None:
            for name, value in inputs.items():
                if isinstance(value, list):
                    limits.check_batch(len(value), f"rows in input {name!r}")
        missing = sorted(set(self.input_types) - set(inputs))
        if missing:
            raise InputError(f"missing inputs: {', '.join(missing)} (model takes {', '.join(self.input_types)})")
        feeds: dict[str, np.ndarray] = {}
        for name, dtype in self.input_types.items():
            try:
                with np.errstate(over="ignore", invalid="ignore"):  # out-of-range values are checked below
                    feeds[name] = np.asarray(inputs[name], dtype=dtype)
            except (TypeError, ValueError, OverflowError, RecursionError) as exc:
                raise InputError(f"input {name!r} is not a numeric array: {exc}") from None
            if feeds[name].dtype.kind == "f" and not np.isfinite(feeds[name]).all():
                raise InputError(f"input {name!r} holds NaN or infinity (or a number too large for {feeds[name].dtype})")
        if limits is not None:
            limits.check_elements(sum(int(v.size) for v in feeds.values()))
        try:
            outputs = self.run(feeds)
        except _CALLER_ERRORS as exc:  # wrong shapes or ranks surface as these; anything else is a 500
            raise InputError(f"inputs do not fit the model: {str(exc).splitlines()[0][:200]}") from None
        return {"outputs": {k: v.tolist() for k, v in outputs.items()}}
