"""Warm latency: measured at batch 1 and 8, or at the fixed batch a model was exported with."""

from __future__ import annotations

import json
from pathlib import Path

import onnx

from slimserve.measure.latency import measure_latency
from tests.conftest import build_tiny_onnx


def _folder(tmp_path: Path, batch: int | None) -> Path:
    folder = tmp_path / f"m{batch}"
    model_path = build_tiny_onnx(folder / "model.onnx")
    if batch is not None:  # pin the batch dimension, as some exporters do
        model = onnx.load(str(model_path))
        for value in (*model.graph.input, *model.graph.output):
            value.type.tensor_type.shape.dim[0].dim_value = batch
        onnx.save(model, str(model_path))
    manifest = {"model": {"path": "model.onnx"}, "runtime": {"kind": "tensor", "task": "tensor", "max_batch": 64}}
    (folder / "slimserve.json").write_text(json.dumps(manifest))
    return folder


def test_dynamic_batch_is_timed_at_1_and_8(tmp_path: Path) -> None:
    latency = measure_latency(_folder(tmp_path, None), runs=3)
    assert latency.batch_sizes == (1, 8) and latency.batch1_ms > 0 and latency.batch8_ms is not None


def test_fixed_batch_is_timed_at_that_size_not_reported_as_zero(tmp_path: Path) -> None:
    latency = measure_latency(_folder(tmp_path, 2), runs=3)
    assert latency.batch_sizes == (2,) and latency.batch1_ms > 0 and latency.batch8_ms is None
