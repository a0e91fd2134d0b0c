"""Intermediate activations of a model on calibration feeds: the one implementation every step uses.

`int8-dynamic`, `int8-static` and `int4-weight` read the inputs of MatMuls to rank them by quantization
error; `prune-*` reads FFN and attention activations to score units and refit the kept weights. All of
them run the graph as written (onnxruntime's graph optimizations off, so fused kernels cannot change the
values) with the requested tensors added as outputs.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from slimserve.errors import SlimserveError, ToolError, first_line
from slimserve.optimizer import onnx_io
from slimserve.optimizer.steps.base import Feed

MAX_ROWS = 4096  # rows kept per tensor by `subsample`: enough for stable statistics, bounded memory


def capture(model: Any, names: Sequence[str], feeds: Sequence[Feed], step: str) -> Iterator[tuple[Feed, list[np.ndarray]]]:
    """Run `model` (a ModelProto, left unchanged) on each feed; yield the feed and the named tensors' values."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    existing = {o.name for o in probe.graph.output}
    types = _value_types(probe)
    for name in names:
        if name not in existing:
            elem = types.get(name, onnx.TensorProto.FLOAT)
            probe.graph.output.append(onnx.helper.make_tensor_value_info(name, elem, None))
    options = ort.SessionOptions()
    options.intra_op_num_threads = min(2, os.cpu_count() or 1)
    options.inter_op_num_threads = 1
    options.log_severity_level = 4  # our one error line says it (see cli.quiet_onnxruntime)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    with tempfile.TemporaryDirectory(prefix="slimserve-probe-") as tmp:
        try:
            if onnx_io.needs_external_data(probe):  # past protobuf's 2 GB: from a file with external data
                session = ort.InferenceSession(str(onnx_io.save_model(probe, Path(tmp) / "probe.onnx", step)),
                                               options, providers=["CPUExecutionProvider"])
            else:
                session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ToolError(f"{step}: onnxruntime cannot load the model for calibration: {first_line(exc)}") from exc
    del probe  # the session holds its own copy of the weights
    wanted = {i.name for i in session.get_inputs()}
    for feed in feeds:
        inputs = {k: np.asarray(v) for k, v in feed.items() if k in wanted}
        missing = wanted - set(inputs)
        if missing:
            raise SlimserveError(f"{step}: calibration feed lacks input(s) {', '.join(sorted(missing))}",
                                 hint="calibration feeds must name every model input")
        try:
            values = session.run(list(names), inputs)
        except Exception as exc:
            raise ToolError(f"{step}: onnxruntime failed on a calibration feed: {first_line(exc)}") from exc
        yield feed, [np.asarray(v) for v in values]


def _value_types(model: Any) -> dict[str, int]:
    """Element type of every value ONNX shape inference can type (a requested tensor that is a bool
    condition or an int64 shape must be declared as such, or onnxruntime refuses the probe)."""
    import onnx

    types: dict[str, int] = {}
    try:
        inferred = model if onnx_io.needs_external_data(model) else onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001  # untyped values fall back to float, what most requested tensors are
        inferred = model
    graph = inferred.graph
    for info in [*graph.value_info, *graph.input, *graph.output]:
        if info.type.HasField("tensor_type") and info.type.tensor_type.elem_type:
            types[info.name] = info.type.tensor_type.elem_type
    for init in graph.initializer:
        types[init.name] = init.data_type
    return types


def subsample(rows: np.ndarray, limit: int = MAX_ROWS) -> np.ndarray:
    """At most `limit` rows, evenly spaced (deterministic)."""
    if len(rows) <= limit:
        return rows
    return rows[np.linspace(0, len(rows) - 1, limit).astype(np.int64)]
