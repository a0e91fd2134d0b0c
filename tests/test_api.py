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
