"""Realistic sizes for the symbolic dimensions of a foreign graph's inputs, proven on the original model.

Setting every symbolic dimension to 1 evaluates a detector on a 1x1 image and a voice detector on one
sample: many graphs refuse that (a stride-32 Concat, a reflect Pad), and those that accept it say nothing
about fidelity. Instead each input is classified by its rank, dtype and fixed dimensions (an image, audio
samples, a sequence, a recurrent state, a scalar), given a realistic size from a short ladder of
candidates, and the first set of shapes the ORIGINAL model runs on is used. `--input-shape name=1x3x640x640`
pins an input; `--eval` gives real data instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from slimserve.errors import SlimserveError
from slimserve.optimizer.onnx_io import ort_message

Feed = dict[str, np.ndarray]
Shape = tuple[int, ...]

# Candidate sizes, most realistic first, one per level. Image (height, width) pairs: squares whose sides
# every common stride divides, then text-line crops (OCR recognizers take 48 x 320 and refuse squares).
IMAGE_SIZES = ((224, 224), (320, 320), (640, 640), (48, 320), (32, 320), (96, 96))
AUDIO_SAMPLES = (16000, 512, 1024, 8000, 16000, 512)
SEQUENCE_LENGTHS = (64, 16, 128, 256, 32, 8)
OTHER_SIZES = (16, 64, 8, 32, 4, 2)
SAMPLE_RATE_NAMES = ("sr", "sample_rate", "sampling_rate", "samplerate")
DEFAULT_SAMPLE_RATE = 16000


@dataclass(frozen=True)
class InputPlan:
    """How one input is filled: its shape per candidate level, and what kind of data it looks like."""

    name: str
    dtype: str
    kind: str  # image | audio | sequence | scalar | tensor
    shapes: tuple[Shape, ...]  # one per candidate level (all equal when nothing is symbolic)
    pinned: bool = False


def _fixed(dim: Any) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


def classify(spec: Mapping[str, Any]) -> str:
    """image (N,C,H,W / N,H,W,C with C in 1,3,4), audio (N,samples float), sequence (N,S ints or
    N,T,F floats), scalar (rank 0), or a tensor of any other form."""
    shape = list(spec.get("shape") or [])
    dtype = str(spec.get("dtype", "float32"))
    floating = dtype.startswith("float") or dtype in ("unknown", "bfloat16")
    if not shape:
        return "scalar"
    if len(shape) == 4 and floating and (_fixed(shape[1]) in (1, 3, 4) or _fixed(shape[3]) in (1, 3, 4)):
        return "image"
    if len(shape) == 2 and floating and _fixed(shape[1]) is None:
        return "audio"
    if len(shape) == 2 and not floating:
        return "sequence"
    if len(shape) == 3 and floating:
        return "sequence"
    return "tensor"


def _level_sizes(kind: str, level: int, width: bool = False) -> int:
    """The size of a symbolic dimension at `level` (for an image, its height or its `width`)."""
    if kind == "image":
        height, wide = IMAGE_SIZES[level % len(IMAGE_SIZES)]
        return wide if width else height
    ladder = {"audio": AUDIO_SAMPLES, "sequence": SEQUENCE_LENGTHS}.get(kind, OTHER_SIZES)
    return ladder[level % len(ladder)]


def _is_batch(dim: Any, batch_names: set[str]) -> bool:
    return isinstance(dim, str) and dim != "?" and (dim in batch_names or "batch" in dim.lower())


def _shape_at(spec: Mapping[str, Any], kind: str, level: int, batch_names: set[str],
              named: dict[str, int]) -> Shape:
    """Fixed dimensions as declared; the batch (dimension 0, or any dimension named like another input's
    batch: a recurrent state [2, batch, 128]) at 1; every other symbolic dimension at the level's size,
    the same size wherever the graph uses the same dimension name (`named`, shared across inputs)."""
    dims = list(spec.get("shape") or [])
    # A recurrent state laid out [layers, batch, hidden]: fixed leading dimension, the first symbolic one
    # is the batch even when the exporter left it unnamed.
    state_batch = next((i for i, d in enumerate(dims) if _fixed(d) is None), None) \
        if len(dims) >= 3 and _fixed(dims[0]) is not None else None
    out: list[int] = []
    for index, dim in enumerate(dims):
        fixed = _fixed(dim)
        if fixed is not None:
            out.append(fixed)
        elif (index == 0 and len(dims) > 1) or index == state_batch or _is_batch(dim, batch_names):
            out.append(1)
        elif isinstance(dim, str) and dim != "?" and dim in named:
            out.append(named[dim])
        else:
            channels_first = len(dims) == 4 and _fixed(dims[1]) in (1, 3, 4)
            size = _level_sizes(kind, level, width=index == (3 if channels_first else 2))
            if isinstance(dim, str) and dim != "?":
                named[dim] = size
            out.append(size)
    return tuple(out)


LEVELS = len(IMAGE_SIZES)


def plan_inputs(inputs: Sequence[Mapping[str, Any]], pinned: Mapping[str, Shape] | None = None) -> list[InputPlan]:
    """Candidate shapes for every input (pinned ones as given, checked against the declared rank)."""
    pinned = dict(pinned or {})
    unknown = sorted(set(pinned) - {str(spec["name"]) for spec in inputs})
    if unknown:
        names = ", ".join(str(spec["name"]) for spec in inputs)
        raise SlimserveError(f"--input-shape names {unknown[0]!r}, which is not an input of the model",
                             hint=f"the model's inputs are: {names}")
    batch_names = {str(spec["shape"][0]) for spec in inputs
                   if spec.get("shape") and len(spec["shape"]) > 1 and isinstance(spec["shape"][0], str)
                   and spec["shape"][0] != "?"}
    named: list[dict[str, int]] = [{} for _ in range(LEVELS)]
    plans = []
    for spec in inputs:
        name, dtype = str(spec["name"]), str(spec.get("dtype", "float32"))
        kind = classify(spec)
        if name in pinned:
            shape = pinned[name]
            declared = list(spec.get("shape") or [])
            if len(shape) != len(declared) or any(_fixed(d) not in (None, s) for d, s in zip(declared, shape)):
                raise SlimserveError(f"--input-shape {name}={'x'.join(map(str, shape)) or 'scalar'} does not fit "
                                     f"the model's declared shape {declared}")
            plans.append(InputPlan(name, dtype, kind, (shape,) * LEVELS, pinned=True))
            continue
        plans.append(InputPlan(name, dtype, kind,
                               tuple(_shape_at(spec, kind, level, batch_names, named[level])
                                     for level in range(LEVELS))))
    return plans


def _numpy_dtype(dtype: str) -> np.dtype[Any]:
    return np.dtype(dtype) if dtype not in ("unknown", "bfloat16", "string") else np.dtype("float32")


def make_feed(plans: Sequence[InputPlan], level: int, rng: np.random.Generator) -> Feed:
    """One seeded sample at `level`: images in [0, 1), audio as a low-amplitude waveform, token-like
    integers, standard normal states; an integer scalar named like a sample rate gets 16000."""
    feed: Feed = {}
    for plan in plans:
        shape = plan.shapes[level]
        dtype = _numpy_dtype(plan.dtype)
        if dtype.kind == "f":
            if plan.kind == "image":
                value = rng.random(shape)
            elif plan.kind == "audio":
                value = 0.1 * rng.standard_normal(shape)
            else:
                value = rng.standard_normal(shape)
            feed[plan.name] = np.asarray(value, dtype=dtype)
        elif dtype.kind == "b":
            feed[plan.name] = rng.integers(0, 2, shape).astype(dtype)
        elif plan.kind == "scalar" and plan.name.lower() in SAMPLE_RATE_NAMES:
            feed[plan.name] = np.asarray(DEFAULT_SAMPLE_RATE, dtype=dtype).reshape(shape)
        elif plan.kind == "sequence":
            feed[plan.name] = np.ones(shape, dtype=dtype)  # token id 1 and mask 1: valid for any vocabulary
        else:
            feed[plan.name] = rng.integers(0, 2, shape).astype(dtype)
    return feed


def describe(feed: Mapping[str, np.ndarray]) -> str:
    return ", ".join(f"{name}: {'x'.join(map(str, value.shape)) or 'scalar'}" for name, value in feed.items())


@dataclass(frozen=True)
class SyntheticInputs:
    feeds: list[Feed]
    description: str  # which inputs, with what shapes (goes into the manifest and the result table)
    level: int


def synthetic_inputs(inputs: Sequence[Mapping[str, Any]], runs: Callable[[Feed], object], *,
                     pinned: Mapping[str, Shape] | None = None, samples: int = 16, seed: int = 0) -> SyntheticInputs:
    """Seeded samples at the first candidate level the original model runs on (`runs` raises otherwise).

    One clear error when no level works: the graph needs shapes or values only the user knows."""
    plans = plan_inputs(inputs, pinned)
    failures: list[str] = []
    tried: set[tuple[Shape, ...]] = set()
    for level in range(LEVELS):
        shapes = tuple(plan.shapes[level] for plan in plans)
        if shapes in tried:
            continue
        tried.add(shapes)
        probe = make_feed(plans, level, np.random.default_rng(seed))
        try:
            runs(probe)
        except Exception as exc:  # noqa: BLE001  # the original refusing these shapes: try the next level
            failures.append(f"{describe(probe)}: {ort_message(exc)[:200]}")
            continue
        rng = np.random.default_rng(seed)
        feeds = [make_feed(plans, level, rng) for _ in range(samples)]
        return SyntheticInputs(feeds, f"synthetic seeded inputs ({samples} samples; {describe(feeds[0])})", level)
    raise SlimserveError("the original model failed on the evaluation inputs slimserve synthesized ("
                         + "; ".join(failures[:2]) + ")",
                         hint="pass --input-shape NAME=1x3x640x640 for each input, or --eval with real inputs "
                              "(a folder of .npz files, one feed each)")


def probe_feeds(feed: Mapping[str, np.ndarray], inputs: Sequence[Mapping[str, Any]]) -> list[Feed]:
    """The evaluation feed at other sizes: every symbolic non-batch dimension halved and doubled (kept a
    multiple of 32 where it was one). Recipes must run wherever the original does."""
    batch_names = {str(spec["shape"][0]) for spec in inputs
                   if spec.get("shape") and len(spec["shape"]) > 1 and isinstance(spec["shape"][0], str)}
    symbolic = {str(spec["name"]): [i for i, d in enumerate(spec.get("shape") or [])
                                    if _fixed(d) is None and i > 0 and not _is_batch(d, batch_names)]
                for spec in inputs}
    if not any(symbolic.values()):
        return []
    probes = []
    for factor in (0.5, 2.0):
        probe: Feed = {}
        for name, value in feed.items():
            shape = list(value.shape)
            for axis in symbolic.get(name, []):
                size = max(1, int(shape[axis] * factor))
                if shape[axis] % 32 == 0:
                    size = max(32, int(math.ceil(size / 32) * 32))
                shape[axis] = size
            probe[name] = _resized(value, tuple(shape))
        probes.append(probe)
    return probes


def _resized(value: np.ndarray, shape: Shape) -> np.ndarray:
    """`value` cropped or tiled to `shape` (same dtype, same kind of content)."""
    if value.shape == shape:
        return value
    reps = [math.ceil(s / max(1, v)) for s, v in zip(shape, value.shape)]
    tiled = np.tile(value, reps) if value.ndim else value
    return np.ascontiguousarray(tiled[tuple(slice(0, s) for s in shape)])
