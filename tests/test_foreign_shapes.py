"""Foreign graphs get evaluation inputs they run on, and recipes keep running on every size the original does.

The graphs (tests/foreign_graphs.py) have the structure that broke synthetic evaluation on real models:
a detector whose strides need realistic image sizes (YOLOv8n, PP-OCR det) and a voice-activity step with
a recurrent state [2, batch, 128] and a scalar sample rate (Silero VAD). The references are onnxruntime
runs of the original file, never slimserve's own numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.conftest import assert_clean_error, run_cli
from tests.foreign_graphs import detector, recurrent_vad


def _optimize(model: Path, out: Path, recipe: str, *extra: str) -> dict:
    result = run_cli("optimize", str(model), "-o", str(out), "--recipe", recipe, "--format", "json", *extra)
    assert result.returncode == 0, result.stderr
    assert "onnxruntime" not in result.stderr.lower() or "error" not in result.stderr.lower(), result.stderr
    return json.loads(result.stdout)


def _run(model: Path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, feed)


@pytest.fixture(scope="module")
def det(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return detector(tmp_path_factory.mktemp("det") / "det.onnx")


@pytest.fixture(scope="module")
def vad(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return recurrent_vad(tmp_path_factory.mktemp("vad") / "vad.onnx")


def test_a_detector_is_evaluated_on_realistic_images(det: Path, tmp_path: Path) -> None:
    manifest = _optimize(det, tmp_path / "fp32", "fp32")
    fidelity = manifest["fidelity"]
    assert "images: 1x3x224x224" in fidelity["eval_source"], fidelity
    assert fidelity["mean"] > 0.9999 and fidelity["samples"] == 16


@pytest.mark.parametrize("recipe", ["int8-dynamic", "int8-static", "fp16"])
def test_recipes_run_on_every_image_size_the_original_runs_on(det: Path, tmp_path: Path, recipe: str) -> None:
    out = tmp_path / recipe
    _optimize(det, out, recipe)
    written = onnx.load(str(out / "model.onnx"))
    assert len(written.graph.value_info) == 0, "shape inference annotations must not ship"
    rng = np.random.default_rng(0)
    for side in (32, 96, 448, 640):
        image = rng.random((1, 3, side, side)).astype(np.float32)
        want = _run(det, {"images": image})[0]
        got = _run(out / "model.onnx", {"images": image})[0]
        assert got.shape == want.shape
        cos = float((want * got).sum() / (np.linalg.norm(want) * np.linalg.norm(got)))
        assert cos > 0.98, (side, cos)


def test_input_shape_pins_an_input_by_name(det: Path, tmp_path: Path) -> None:
    manifest = _optimize(det, tmp_path / "o", "fp32", "--input-shape", "images=1x3x320x256")
    assert "images: 1x3x320x256" in manifest["fidelity"]["eval_source"]


def test_a_recurrent_model_with_a_state_and_a_scalar_gets_sensible_inputs(vad: Path, tmp_path: Path) -> None:
    manifest = _optimize(vad, tmp_path / "int8", "int8-dynamic")
    source = manifest["fidelity"]["eval_source"]
    assert "input: 1x16000" in source and "state: 2x1x128" in source and "sr: scalar" in source, source
    assert manifest["fidelity"]["mean"] > 0.99


def test_eval_folder_gives_whole_feeds(vad: Path, tmp_path: Path) -> None:
    """States [2, batch, 128] and a scalar cannot be sliced from one .npz along axis 0: one file per feed."""
    folder = tmp_path / "feeds"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        np.savez(folder / f"{i:04d}.npz", input=(0.1 * rng.standard_normal((1, 512))).astype(np.float32),
                 state=np.zeros((2, 1, 128), np.float32), sr=np.array(16000, np.int64))
    manifest = _optimize(vad, tmp_path / "o", "int8-dynamic", "--eval", str(folder))
    assert manifest["fidelity"]["samples"] == 3 and "3 feeds" in manifest["fidelity"]["eval_source"]
    (folder / "0001.npz").unlink()
    np.savez(folder / "0001.npz", input=np.zeros((1, 512), np.float32))
    result = run_cli("optimize", str(vad), "-o", str(tmp_path / "bad"), "--eval", str(folder))
    assert_clean_error(result, contains="lacks arrays for inputs state, sr")
    assert not (tmp_path / "bad").exists()


def test_a_graph_that_runs_on_no_guess_says_how_to_give_inputs(tmp_path: Path) -> None:
    from tests.hostile_models import dynamic_bomb

    model = dynamic_bomb(tmp_path / "m.onnx")
    result = run_cli("optimize", str(model), "-o", str(tmp_path / "o"))
    assert_clean_error(result, contains="failed on the evaluation inputs")
    assert "--input-shape" in result.stderr and "[E:onnxruntime" not in result.stderr
