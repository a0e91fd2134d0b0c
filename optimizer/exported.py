"""The value every source turns into: a reference fp32 ONNX file plus how to run and judge it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

Feed = Mapping[str, np.ndarray]
ReferenceRunner = Callable[[Feed], dict[str, np.ndarray]]


@dataclass(frozen=True)
class Exported:
    """`onnx_path` is the fp32 model every recipe starts from.

    `runtime` is the manifest's runtime section (how to tokenize, which output, pooling). `reference`
    runs the original model (PyTorch, or onnxruntime for ONNX sources) on a feed and returns raw outputs
    keyed like the ONNX outputs. `extra_files` are copied beside model.onnx (tokenizer, config).
    """

    onnx_path: Path
    runtime: dict[str, Any]
    reference: ReferenceRunner
    reference_kind: str  # "pytorch" | "onnxruntime-fp32"
    extra_files: tuple[Path, ...] = ()
    input_shapes: tuple[tuple[int, ...], ...] = ()
    input_dtype: str = "float32"
    source_info: dict[str, Any] = field(default_factory=dict)
