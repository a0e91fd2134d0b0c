"""`--numpy no-blas`: numpy built here without OpenBLAS for the target's glibc (packagers/numpy_noblas.py).

The checker is tested on real ELF files built by zig for chosen glibc versions and machines; the build is
tested end to end: its layer meets issue 14's 25 MB goal, numpy's own test suite passes on it under the
target interpreter, and MiniLM through the Lambda package answers like the PyPI-numpy package and like
sentence-transformers.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from slimserve.errors import SlimserveError, ToolError
from slimserve.packagers.interpreters import find_python
from slimserve.packagers.numpy_noblas import check_native
from slimserve.packagers.target import Target
from tests.conftest import assert_clean_error, require, run_cli
from tests.helpers_lambda import run_like_lambda, tensor_model_dir

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["Serverless inference should start fast and stay small.", "A cat sat on the mat.",
         "int8 weights keep the layer small", "Le modèle tient dans une couche Lambda.", "", "ok " * 60]


def _zig(tmp: Path, source: str, out: str, target: str, *extra: str) -> Path:
    """A shared library compiled by zig's clang for `target` (e.g. x86_64-linux-gnu.2.34)."""
    (tmp / f"{out}.c").write_text(source, encoding="utf-8")
    env = {"PATH": "/usr/bin:/bin", "ZIG_GLOBAL_CACHE_DIR": str(tmp / "zig"), "ZIG_LOCAL_CACHE_DIR": str(tmp / "zig"),
           "HOME": str(tmp)}
    subprocess.run([sys.executable, "-m", "ziglang", "cc", "-target", target, "-shared", "-fPIC", "-O1",
                    str(tmp / f"{out}.c"), "-o", str(tmp / out), *extra], check=True, env=env, cwd=tmp)
    return tmp / out


def _wheel(tmp: Path, *libraries: Path) -> Path:
    wheel = tmp / "numpy-0-cp312-cp312-linux_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("numpy/__init__.py", "")
        for lib in libraries:
            zf.write(lib, f"numpy/_core/{lib.name}")
    return wheel


HYPOT = "#include <math.h>\ndouble norm2(double a, double b) { return hypot(a, b); }\n"


def test_check_native_takes_what_the_target_glibc_has_and_refuses_the_rest(tmp_path: Path) -> None:
    # hypot gained a new symbol version in glibc 2.35 (what this Debian's own compiler links against)
    old = _zig(tmp_path, HYPOT, "ok_234.so", "x86_64-linux-gnu.2.34", "-lm")
    new = _zig(tmp_path, HYPOT, "new_236.so", "x86_64-linux-gnu.2.36", "-lm")
    check_native(_wheel(tmp_path, old), Target("3.12"))
    with pytest.raises(ToolError, match=r"GLIBC_2\.35.*glibc 2\.34"):
        check_native(_wheel(tmp_path, old, new), Target("3.12"))
    with pytest.raises(ToolError, match=r"glibc 2\.26"):  # python3.11 runs on Amazon Linux 2
        check_native(_wheel(tmp_path, new), Target("3.11"))
    _zig(tmp_path, "int foo(void) { return 1; }\n", "libfoo.so", "x86_64-linux-gnu.2.17")
    user = _zig(tmp_path, "int foo(void);\nint bar(void) { return foo(); }\n", "user.so", "x86_64-linux-gnu.2.17",
                "-L", str(tmp_path), "-lfoo")
    with pytest.raises(ToolError, match=r"needs libfoo\.so"):
        check_native(_wheel(tmp_path, user), Target("3.12"))
    arm = _zig(tmp_path, HYPOT, "arm.so", "aarch64-linux-gnu.2.17", "-lm")
    with pytest.raises(ToolError, match="EM_AARCH64"):
        check_native(_wheel(tmp_path, arm), Target("3.12", "x86_64"))
    check_native(_wheel(tmp_path, arm), Target("3.12", "arm64"))


def test_numpy_build_is_part_of_the_target_and_validated() -> None:
    assert Target.parse("3.12", "x86_64", "no-blas").key == "py3.12-x86_64-numpy-no-blas"
    assert Target("3.12").key == "py3.12-x86_64"  # closures cached before the option keep their key
    assert Target.parse("3.12", "x86_64", "no-blas").wheel_key == Target("3.12").wheel_key
    with pytest.raises(SlimserveError, match="unknown numpy build 'mkl'"):
        Target.parse("3.12", "x86_64", "mkl")


def test_cli_refuses_what_cannot_be_built_here_in_one_line(tmp_path: Path) -> None:
    model = tensor_model_dir(tmp_path / "model")
    result = run_cli("package", str(model), "--target", "lambda", "-o", str(tmp_path / "out"), "--arch", "arm64",
                     "--numpy", "no-blas", "--no-check")
    assert_clean_error(result, contains="cannot build for arm64")
    assert "hint: " in result.stderr and not (tmp_path / "out").exists()
    result = run_cli("package", str(model), "--target", "lambda", "-o", str(tmp_path / "out"), "--python", "3.11",
                     "--numpy", "no-blas", "--no-check")
    assert_clean_error(result, contains="numpy==1.26.4")
    # compare and build say it before exporting and optimizing every candidate
    result = run_cli("build", str(model / "model.onnx"), "-o", str(tmp_path / "built"), "--arch", "arm64",
                     "--numpy", "no-blas")
    assert_clean_error(result, contains="cannot build for arm64")
    assert not (tmp_path / "built").exists()
    result = run_cli("check", str(model), "--numpy", "openblas")
    assert_clean_error(result, contains="--numpy")


# --- the real build, end to end --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def noblas_wheel() -> Path:
    from slimserve.packagers.closure import wheel_cache
    from slimserve.packagers.numpy_noblas import noblas_wheel as build
    from slimserve.packagers.target import Target as T
    from slimserve.packagers.wheels import read_pins

    target = T("3.12", "x86_64", "no-blas")
    (pin,) = [p for p in read_pins(target, "text") if p.name == "numpy"]
    return build(pin, target, wheel_cache())


@pytest.mark.slow
def test_numpy_own_tests_pass_on_the_build(noblas_wheel: Path, tmp_path: Path) -> None:
    """numpy's core, ufunc, array and linalg suites (about 20,000 tests) under the target interpreter."""
    python = find_python("3.12")
    require(python, "pyenv's python3.12")
    venv = tmp_path / "venv"
    subprocess.run([str(python), "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "-c", str(ROOT / "constraints.txt"), str(noblas_wheel), "pytest", "hypothesis==6.170.17",
                    "sortedcontainers==2.4.0"], check=True)
    config = subprocess.run([str(venv / "bin" / "python"), "-c",
                             "import numpy, json; print(json.dumps(numpy.__config__.CONFIG['Build Dependencies']))"],
                            check=True, capture_output=True, text=True, cwd=tmp_path)
    assert json.loads(config.stdout)["blas"]["name"] == "none"
    proc = subprocess.run([str(venv / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", "--pyargs",
                           "numpy._core.tests.test_umath", "numpy._core.tests.test_multiarray",
                           "numpy._core.tests.test_numeric", "numpy.linalg.tests.test_linalg"],
                          check=False, capture_output=True, text=True, cwd=tmp_path, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert " passed" in proc.stdout.splitlines()[-1]


@pytest.mark.slow
def test_noblas_layer_is_under_25_mb_and_answers_like_pypi_numpy(noblas_wheel: Path, minilm_int8: Path,
                                                                 minilm_dir: Path, tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    from slimserve.bundle import load_bundle
    from slimserve.packagers.lambda_target import package_lambda

    bundle = load_bundle(minilm_int8)
    artifacts = {numpy: package_lambda(bundle, tmp_path / numpy, Target("3.12", "x86_64", numpy), memory_mb=1024)
                 for numpy in ("pypi", "no-blas")}
    layers = {numpy: a.layer for numpy, a in artifacts.items()}
    assert layers["no-blas"].bytes <= 25_000_000, layers["no-blas"].bytes  # issue 14: text layer <= 25 MB zipped
    assert layers["pypi"].bytes - layers["no-blas"].bytes > 7_000_000
    with zipfile.ZipFile(layers["no-blas"].path) as zf:
        names = zf.namelist()
    assert not [n for n in names if "openblas" in n.lower() or "gfortran" in n or n.startswith("python/numpy.libs/")]
    assert any(n.startswith("python/numpy/_core/_multiarray_umath") for n in names)
    manifest = json.loads((tmp_path / "no-blas" / "slimserve.json").read_text())
    assert manifest["package"]["closure"]["numpy"] == "no-blas"

    events = [{"inputs": TEXTS}]
    vectors = {numpy: np.asarray(run_like_lambda(tmp_path / numpy, tmp_path / f"run-{numpy}", "3.12", events)
                                 ["responses"][0]["embeddings"]) for numpy in layers}
    assert np.abs(vectors["no-blas"] - vectors["pypi"]).max() <= 1e-6
    want = SentenceTransformer(str(minilm_dir), device="cpu").encode(TEXTS, normalize_embeddings=True)
    cosine = (vectors["no-blas"] * want).sum(axis=1)
    assert cosine.min() >= 0.995 and cosine.mean() >= 0.999, cosine


@pytest.mark.slow
def test_azure_function_app_ships_the_noblas_numpy_and_answers_like_onnxruntime(noblas_wheel: Path,
                                                                                tmp_path: Path) -> None:
    """The option reaches every packager through the target: here Azure's .python_packages."""
    import onnxruntime as ort

    from slimserve.bundle import load_bundle
    from slimserve.packagers.azure_functions import SITE_DIR, package_azure
    from tests.test_azure_functions import call_function, post

    model = tensor_model_dir(tmp_path / "model")
    package_azure(load_bundle(model), tmp_path / "pkg", Target("3.12", "x86_64", "no-blas"), memory_mb=512)
    with zipfile.ZipFile(tmp_path / "pkg" / "function.zip") as zf:
        numpy_files = [n for n in zf.namelist() if n.startswith(f"{SITE_DIR}/numpy")]
    assert numpy_files and not [n for n in numpy_files if "numpy.libs" in n or "openblas" in n.lower()]
    rows = np.random.default_rng(5).standard_normal((2, 16)).astype(np.float32)
    (expected,) = ort.InferenceSession(str(model / "model.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"x": rows})
    result, _ = call_function(tmp_path / "pkg", tmp_path / "run", [post({"inputs": {"x": rows.tolist()}})])
    answer = result["responses"][0]
    assert answer["status"] == 200, answer
    np.testing.assert_allclose(np.array(json.loads(answer["body"])["outputs"]["y"]), expected, rtol=1e-5, atol=1e-5)
