"""Evaluation and calibration inputs: a user's --eval file, or the built-in varied samples.

Text models read JSON lines with a `text` field; other models read an .npz of named arrays (sliced along
axis 0), a folder of .npz files (one whole feed each), or get seeded synthetic inputs whose symbolic
dimensions have realistic sizes the original model runs on (eval_shapes). Calibration never uses the evaluation texts when
the built-in sets are used, so fidelity is not measured on the data the quantizer was tuned on.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from slimserve.errors import SlimserveError

Feed = dict[str, np.ndarray]
BUILTIN_EVAL = "eval_text.jsonl"
BUILTIN_CALIB = "calib_text.jsonl"
SYNTHETIC_SAMPLES = 16
EVAL_BATCH = 16


def jsonl_records(text: str, origin: str, hint: str) -> Iterator[tuple[int, Any]]:
    """(line number, parsed record) of every non-blank line; one clear error naming a line that is not JSON."""
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError:
            raise SlimserveError(f"{origin} line {number} is not JSON", hint=hint) from None


def _read_jsonl_texts(text: str, origin: str) -> list[str]:
    texts = []
    for number, record in jsonl_records(text, origin, "--eval takes JSON lines like {\"text\": \"...\"}"):
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise SlimserveError(f"{origin} line {number} has no string field 'text'")
        texts.append(record["text"])
    if not texts:
        raise SlimserveError(f"{origin} holds no texts")
    return texts


def builtin_texts(name: str) -> list[str]:
    data = resources.files("slimserve.optimizer").joinpath("data", name).read_text(encoding="utf-8")
    return _read_jsonl_texts(data, f"built-in {name}")


def load_texts(path: Path) -> list[str]:
    try:
        content = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SlimserveError(f"cannot read --eval file {path}: {exc}") from None
    return _read_jsonl_texts(content, str(path))


def text_feeds(texts: Sequence[str], encode: Callable[[list[str]], Feed], batch: int = EVAL_BATCH) -> list[Feed]:
    """Tokenized batches, each padded to its own longest text (what a handler would see)."""
    return [encode(list(texts[i:i + batch])) for i in range(0, len(texts), batch)]


def load_npz(path: Path, input_names: Sequence[str]) -> list[Feed]:
    """One feed per sample (axis 0 of every array), so per-sample metrics mean the same for all models."""
    arrays = _read_npz(path, input_names)
    count = min(arrays[n].shape[0] for n in input_names) if input_names else 0
    if count == 0:
        raise SlimserveError(f"{path} holds no samples")
    return [{n: arrays[n][i:i + 1] for n in input_names} for i in range(count)]


def load_npz_folder(path: Path, input_names: Sequence[str]) -> list[Feed]:
    """One whole feed per `.npz` file (sorted by name), arrays used as they are: recurrent states shaped
    [2, batch, n], scalars and inputs whose first axis is not the batch cannot be sliced from one file."""
    files = sorted(Path(path).glob("*.npz"))
    if not files:
        raise SlimserveError(f"--eval {path} holds no .npz files",
                             hint="save one feed per file: numpy.savez(f'{i:04d}.npz', **{name: array, ...})")
    feeds = []
    for file in files:
        arrays = _read_npz(file, input_names)
        feeds.append({n: arrays[n] for n in input_names})
    return feeds


def _read_npz(path: Path, input_names: Sequence[str]) -> dict[str, np.ndarray]:
    """The arrays of one .npz (no pickles), with one clear error when it is unreadable or lacks an input."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (OSError, ValueError) as exc:
        raise SlimserveError(f"cannot read --eval file {path} as .npz: {str(exc).splitlines()[0]}") from None
    missing = [n for n in input_names if n not in arrays]
    if missing:
        raise SlimserveError(f"{path} lacks arrays for inputs {', '.join(missing)} (it has {', '.join(arrays) or 'none'})")
    return arrays


def synthetic_feeds(inputs: Sequence[dict[str, Any]], shapes: Sequence[tuple[int, ...]] = (),
                    samples: int = SYNTHETIC_SAMPLES, seed: int = 0) -> list[Feed]:
    """Seeded random inputs: declared shapes with every symbolic dimension set to 1, standard normal floats.

    Fixed dimensions are kept as declared (a model exported for batch 4 gets batches of 4).
    """
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(samples):
        feed: Feed = {}
        for index, spec in enumerate(inputs):
            shape = tuple(shapes[index]) if index < len(shapes) else tuple(
                d if isinstance(d, int) and d > 0 else 1 for d in spec["shape"])
            dtype = np.dtype(spec["dtype"]) if spec["dtype"] not in ("unknown", "bfloat16") else np.dtype("float32")
            if dtype.kind == "f":
                feed[spec["name"]] = rng.standard_normal(shape).astype(dtype)
            elif dtype.kind == "b":
                feed[spec["name"]] = rng.integers(0, 2, shape).astype(dtype)
            else:
                feed[spec["name"]] = rng.integers(0, 2, shape).astype(dtype)
        feeds.append(feed)
    return feeds
