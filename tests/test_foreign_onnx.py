"""ONNX files written by other exporters go through `slimserve optimize --recipe int8-dynamic` end to end.

The graphs come from the quantization step tests: a convnet whose weights reach the graph through a
Constant node, an Identity and a Transpose, with a graph input shadowing an initializer (what old
exporters wrote with keep_initializers_as_inputs); an If with weights captured in both branches; an LSTM.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import onnxruntime as ort
import pytest

from tests.conftest import run_cli
from tests.test_quant_steps import control_flow_model, convnet_model, lstm_model

MODELS: dict[str, Callable[[Path], Path]] = {"convnet": convnet_model, "if": control_flow_model, "lstm": lstm_model}


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_int8_dynamic_on_foreign_graphs(tmp_path: Path, kind: str) -> None:
    source = MODELS[kind](tmp_path / f"{kind}.onnx")
    out = tmp_path / "out"
    result = run_cli("optimize", str(source), "-o", str(out), "--recipe", "int8-dynamic", "--format", "json")
    assert result.returncode == 0, result.stderr
    manifest = json.loads(result.stdout)
    before = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    after = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.shape for o in after.get_outputs()] == [o.shape for o in before.get_outputs()]
    assert {i.name for i in after.get_inputs()} <= {i.name for i in before.get_inputs()}
    assert "x" in {i.name for i in after.get_inputs()}
    assert manifest["fidelity"]["metric"] == "abs_error" and manifest["fidelity"]["mean"] > 0.95
    assert manifest["model"]["bytes"] < source.stat().st_size


@pytest.mark.parametrize("recipe", ["prune-heads-25", "prune-ffn-25+int8"])
def test_a_recipe_that_cannot_apply_is_one_clear_line(tmp_path: Path, recipe: str) -> None:
    from tests.conftest import assert_clean_error

    source = convnet_model(tmp_path / "convnet.onnx")
    out = tmp_path / "out"
    result = run_cli("optimize", str(source), "-o", str(out), "--recipe", recipe)
    assert_clean_error(result, contains="no ")
    assert not out.exists()
