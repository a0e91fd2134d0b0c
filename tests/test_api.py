"""The public Python API, used only through the names `slimserve` exports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import slimserve


def test_import_is_light() -> None:
    """`import slimserve` must not pull onnx, onnxruntime or torch (the CLI's --help and notebooks pay it)."""
    code = "import sys, slimserve; print(sorted(m for m in ('onnx', 'onnxruntime', 'torch', 'rich') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert result.stdout.strip() == "[]"


def test_optimize_returns_a_typed_candidate(tiny_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    candidate = slimserve.optimize(tiny_onnx, out, recipe="int8-dynamic")
    assert isinstance(candidate, slimserve.Candidate)
    assert candidate.path == out.absolute() and candidate.recipe == "int8-dynamic"
    assert candidate.model_bytes == json.loads((out / "slimserve.json").read_text())["model"]["bytes"]
    assert isinstance(candidate.fidelity, slimserve.Fidelity) and candidate.fidelity.samples > 0
    # the reported fidelity agrees with an independent measurement: onnxruntime on both files
    x = np.random.default_rng(1).standard_normal((32, 16)).astype(np.float32)
    ref = ort.InferenceSession(str(tiny_onnx)).run(None, {"x": x})[0]
    got = ort.InferenceSession(str(candidate.model_path)).run(None, {"x": x})[0]
    cos = (ref * got).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    assert abs(float(cos.mean()) - candidate.fidelity.mean) < 0.02


def test_bad_input_raises_the_cli_exceptions(tiny_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(slimserve.SlimserveError, match="recipe"):
        slimserve.optimize(tiny_onnx, tmp_path / "o", recipe="int9")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(slimserve.SlimserveError, match="did not write"):
        slimserve.optimize(tiny_onnx, mine, recipe="fp32")
    assert (mine / "notes.txt").read_text() == "keep"
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def tensor_candidate(tmp_path_factory: pytest.TempPathFactory) -> slimserve.Candidate:
    from tests.conftest import build_tiny_onnx

    root = tmp_path_factory.mktemp("api")
    return slimserve.optimize(build_tiny_onnx(root / "m.onnx"), root / "fp32", recipe="fp32")


def test_check_returns_the_report_the_cli_renders(tensor_candidate: slimserve.Candidate) -> None:
    report = slimserve.check(tensor_candidate.path, ["aws-lambda-zip", "gcp-cloud-run"], runs=1)
    assert report.fits is True
    assert {v.name for v in report.platforms} == {"aws-lambda-zip", "gcp-cloud-run"}
    assert report.package.unzipped_bytes > tensor_candidate.model_bytes


def test_package_writes_a_function_that_answers_like_the_model(tensor_candidate: slimserve.Candidate,
                                                               tmp_path: Path) -> None:
    import zipfile

    result = slimserve.package(tensor_candidate.path, tmp_path / "pkg", check=False, memory_mb=512)
    assert isinstance(result, slimserve.Package) and result.target == "lambda" and result.fits is None
    assert result.lambda_artifacts is not None and result.lambda_artifacts.memory_mb == 512
    with zipfile.ZipFile(tmp_path / "pkg" / "function.zip") as zf:
        zf.extractall(tmp_path / "task")
    x = np.random.default_rng(2).standard_normal((4, 16)).astype(np.float32)
    shipped = ort.InferenceSession(str(tmp_path / "task" / "model" / "model.onnx")).run(None, {"x": x})[0]
    original = ort.InferenceSession(str(tensor_candidate.model_path)).run(None, {"x": x})[0]
    np.testing.assert_allclose(shipped, original, rtol=1e-6, atol=1e-6)
    with pytest.raises(slimserve.SlimserveError) as info:
        slimserve.package(tensor_candidate.path, tmp_path / "img", target="container",
                          push="user:hunter2@127.0.0.1:5000/x:1")
    assert "hunter2" not in str(info.value) and not (tmp_path / "img").exists()


def test_compare_and_build(tmp_path: Path) -> None:
    from tests.conftest import build_tiny_onnx

    model = build_tiny_onnx(tmp_path / "m.onnx")
    comparison = slimserve.compare(model, tmp_path / "cmp", recipes=["fp32", "int8-dynamic"],
                                   platforms=["aws-lambda-zip"], runs=1)
    assert [c.recipe for c in comparison.candidates] == ["fp32", "int8-dynamic"]
    assert (tmp_path / "cmp" / "compare.json").is_file()
    with pytest.raises(slimserve.BuildFailed) as info:  # no cold start is that fast
        slimserve.build(model, tmp_path / "b", recipes=["fp32"], max_cold_start_ms=0.001, runs=1)
    assert isinstance(info.value, slimserve.LimitExceeded) and info.value.result.decision.winner is None
    assert (tmp_path / "b" / "build.json").is_file()
