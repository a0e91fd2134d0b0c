"""`check` on the real model: the verdicts the issue names, and the measurements against independent ones."""

from __future__ import annotations

import json
import statistics
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow
LAMBDA_UNZIPPED_LIMIT = 262_144_000


def _check(folder: Path, *args: str) -> tuple[int, dict]:
    result = run_cli("check", str(folder), "--format", "json", "--runs", "3", *args)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def test_int8_fits_lambda_zip_at_1024_and_the_container(minilm_int8: Path) -> None:
    code, report = _check(minilm_int8, "--platform", "aws-lambda-zip", "--platform", "aws-lambda-container",
                          "--memory", "1024")
    assert code == 0 and report["fits"] is True
    for name in ("aws-lambda-zip", "aws-lambda-container"):
        assert report["platforms"][name]["fits"] is True
        assert all(c["status"] in ("pass", "warn") for c in report["platforms"][name]["checks"])
    assert report["package"]["zipped_bytes"] < 50 * 1024 * 1024
    assert report["cold_start"]["runs"] == 3 and report["peak_rss_mb"] > 50


def test_fp32_fails_128_mb_for_memory(minilm_fp32: Path) -> None:
    code, report = _check(minilm_fp32, "--platform", "aws-lambda-zip", "--memory", "128")
    assert code == 1 and report["fits"] is False
    failed = [c for c in report["platforms"]["aws-lambda-zip"]["checks"] if c["status"] == "fail"]
    assert [c["id"] for c in failed] == ["memory"], failed
    assert "MB" in failed[0]["reason"]


def _big_model(folder: Path) -> Path:
    """A 230 MB float32 MatMul: with the runtime closure the deployment passes Lambda's 250 MiB."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.full((7500, 7680), 0.001, dtype=np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "big",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 7500])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 7680])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(folder / "big.onnx"))
    return folder / "big.onnx"


def test_oversized_deployment_fails_zip_for_size_but_fits_container(tmp_path: Path) -> None:
    big = _big_model(tmp_path / "big")
    code, report = _check(big, "--platform", "aws-lambda-zip", "--platform", "aws-lambda-container", "--memory", "2048")
    assert code == 1
    assert report["package"]["unzipped_bytes"] > LAMBDA_UNZIPPED_LIMIT
    zip_checks = {c["id"]: c for c in report["platforms"]["aws-lambda-zip"]["checks"]}
    assert zip_checks["unzipped-size"]["status"] == "fail"
    assert "250 MiB" in zip_checks["unzipped-size"]["reason"] or "262" in zip_checks["unzipped-size"]["reason"]
    assert report["platforms"]["aws-lambda-zip"]["fits"] is False
    assert report["platforms"]["aws-lambda-container"]["fits"] is True


_INDEPENDENT_PROBE = r"""
import os, sys, time, json
os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:1])  # one CPU, as check's probe runs
t0 = time.perf_counter()
import numpy, onnxruntime, tokenizers
t1 = time.perf_counter()
so = onnxruntime.SessionOptions(); so.intra_op_num_threads = 1
s = onnxruntime.InferenceSession(sys.argv[1] + "/model.onnx", so, providers=["CPUExecutionProvider"])
tok = tokenizers.Tokenizer.from_file(sys.argv[1] + "/tokenizer.json")
t2 = time.perf_counter()
enc = tok.encode("Serverless inference should start fast and stay small.")
feed = {"input_ids": numpy.array([enc.ids], dtype=numpy.int64),
        "attention_mask": numpy.array([enc.attention_mask], dtype=numpy.int64)}
s.run(None, feed)
t3 = time.perf_counter()
print(json.dumps({"total_ms": (t3 - t0) * 1000}))
"""


def test_cold_start_agrees_with_an_independent_measurement(minilm_int8: Path) -> None:
    from slimserve.packagers.closure import build_closure
    from slimserve.packagers.interpreters import find_python
    from slimserve.packagers.target import Target

    python = find_python("3.12")
    assert python is not None, "pyenv's python3.12 is part of this machine kind"
    closure = build_closure(Target(python="3.12", arch="x86_64"), text=True)
    totals = []
    for _ in range(3):
        out = subprocess.run([str(python), "-I", "-S", "-c",
                              f"import sys; sys.path[:0] = [{str(closure)!r}]\n" + _INDEPENDENT_PROBE, str(minilm_int8)],
                             capture_output=True, text=True, check=True)
        totals.append(json.loads(out.stdout)["total_ms"])
    independent = statistics.median(totals)
    _, report = _check(minilm_int8, "--platform", "aws-lambda-zip", "--memory", "1024")
    measured = report["cold_start"]["total_ms"]
    assert independent / 2 <= measured <= independent * 2, (measured, independent)
    assert report["cold_start"]["python"] == "3.12" and not report["cold_start"].get("fallback")
