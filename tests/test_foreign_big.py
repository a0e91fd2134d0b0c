"""A model past protobuf's 2 GB limit, end to end: the recipes that apply work on it (int8-dynamic,
int4-weight), sizes count the external data, and `check` sends it to a container platform with the reason.

The graph is built in the test (8 MatMuls of 8192 x 8192 float32 = 2 GiB of external data); the reference is
onnxruntime on the original file. Slow (about five minutes and 13 GB of memory at the peak) but it is the
only way to know the >2 GB paths work.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tests.conftest import run_cli
from tests.foreign_graphs import over_2gb

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return over_2gb(tmp_path_factory.mktemp("big") / "big.onnx")


@pytest.mark.parametrize("recipe", ["int8-dynamic", "int4-weight"])
def test_recipes_work_past_2gb_and_count_the_external_data(big: Path, tmp_path: Path, recipe: str) -> None:
    out = tmp_path / recipe
    result = run_cli("optimize", str(big), "-o", str(out), "--recipe", recipe, "--format", "json")
    assert result.returncode == 0, result.stderr
    manifest = json.loads(result.stdout)
    assert not [note for note in manifest["notes"] if "skipped" in note], manifest["notes"]  # pre-processing ran
    original = big.stat().st_size + (big.parent / "big.onnx.data").stat().st_size
    assert manifest["model"]["fp32_bytes"] == original > 2**31 - 1
    shipped = sum((out / name).stat().st_size for name in ["model.onnx", *manifest["model"]["external_data"]])
    assert manifest["model"]["bytes"] == shipped < original * (0.3 if recipe == "int8-dynamic" else 0.25)
    x = np.random.default_rng(5).standard_normal((2, 8192)).astype(np.float32)
    want = ort.InferenceSession(str(big), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    cos = (want * got).sum(axis=1) / (np.linalg.norm(want, axis=1) * np.linalg.norm(got, axis=1))
    assert cos.min() > 0.95, cos
    if recipe == "int8-dynamic":
        check = run_cli("check", str(out), "--platform", "aws-lambda-zip", "--runs", "1")
        assert check.returncode == 1, check.stderr
        assert "container target" in " ".join(check.stdout.split()), check.stdout
