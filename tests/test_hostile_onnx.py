"""Hostile ONNX files given to `optimize` are bad input: one `error:` line, exit 2, nothing written."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests import hostile_models as hostile
from tests.conftest import assert_clean_error, run_cli


@pytest.mark.parametrize(("build", "says"), [
    (hostile.external_outside, "outside its folder"),
    (hostile.external_symlink, "outside its folder"),
    (hostile.external_absolute, "outside its folder"),
    (hostile.external_in_subgraph, "outside its folder"),
    (hostile.custom_op, "com.evil"),
    (hostile.declared_40_gb, "declares 40,000,000,000 bytes"),
    (hostile.declared_40_gb_constant, "declares 40,000,000,000 bytes"),
    (hostile.constant_of_shape_bomb, "ConstantOfShape"),
    (hostile.bomb_in_subgraph, "ConstantOfShape"),
    (hostile.dynamic_bomb, "failed on the evaluation inputs"),
], ids=lambda v: getattr(v, "__name__", ""))
def test_hostile_onnx_is_bad_input(tmp_path: Path, build: Callable[[Path], Path], says: str) -> None:
    model = build(tmp_path / "m" / "model.onnx")
    out = tmp_path / "out"
    result = run_cli("optimize", str(model), "-o", str(out), "--recipe", "fp32")
    assert_clean_error(result, code=2, contains=says)
    assert "onnxruntime_src" not in result.stderr and "\x1b[1;31m" not in result.stderr  # no ORT log line
    assert "root:" not in result.stdout + result.stderr  # the host file's content is never echoed
    assert not out.exists()
