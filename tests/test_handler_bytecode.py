"""The handler modules ship with checked-hash bytecode for the target interpreter (packagers/handler_code.py).

Run by the target's real interpreter from an unzipped function.zip on a read-only-like path (`-B`: no
bytecode written, as on /var/task): the shipped .pyc are what it loads, an edited source is still what
it runs, and the file names tracebacks show are the deployed ones.
"""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import pytest

from slimserve.bundle import load_bundle
from slimserve.packagers.closure import build_closure
from slimserve.packagers.interpreters import find_python
from slimserve.packagers.lambda_target import package_lambda
from slimserve.packagers.target import Target
from tests.conftest import require
from tests.helpers_lambda import tensor_model_dir

MODULES = ("lambda_handler", "model_runtime", "chat_completions", "task_tabular")


@pytest.fixture(scope="module")
def unzipped(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(python3.12, the unzipped function, the layer's site folder) of a tensor model's Lambda package."""
    python = find_python("3.12")
    require(python is not None, "python3.12 (pyenv; Lambda's runtime)")
    assert python is not None
    tmp = tmp_path_factory.mktemp("bytecode")
    model = tensor_model_dir(tmp / "model")
    package_lambda(load_bundle(model), tmp / "pkg", Target("3.12"), memory_mb=512)
    task = tmp / "task"
    with zipfile.ZipFile(tmp / "pkg" / "function.zip") as zf:
        zf.extractall(task)
    return python, task, build_closure(Target("3.12"), "")


def _verbose_import(python: Path, task: Path, site: Path, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(python), "-I", "-S", "-B", "-v", "-c",
                           f"import sys; sys.path[:0] = [{str(task)!r}, {str(site)!r}]; {code}"],
                          capture_output=True, text=True, check=False, timeout=120, cwd=task)


def test_every_handler_module_ships_checked_hash_bytecode(unzipped: tuple[Path, Path, Path]) -> None:
    python, task, _ = unzipped
    sources = sorted(p for p in task.glob("*.py"))
    assert {p.stem for p in sources} >= set(MODULES)
    # The source hash is keyed by the interpreter's bytecode version: computed by the target's own.
    code = "import importlib.util, sys; print(importlib.util.source_hash(open(sys.argv[1], 'rb').read()).hex())"
    for source in sources:
        pyc = task / "__pycache__" / f"{source.stem}.cpython-312.pyc"
        data = pyc.read_bytes()
        flags = int.from_bytes(data[4:8], "little")
        assert flags == 0b11, (pyc.name, flags)  # hash-based (bit 0), checked (bit 1): PEP 552
        expected = subprocess.run([str(python), "-I", "-c", code, str(source)], capture_output=True, text=True,
                                  check=True).stdout.strip()
        assert data[8:16].hex() == expected, pyc.name


def test_the_target_interpreter_loads_the_shipped_bytecode(unzipped: tuple[Path, Path, Path]) -> None:
    python, task, site = unzipped
    result = _verbose_import(python, task, site, "import lambda_handler; print(lambda_handler.__file__)")
    assert result.returncode == 0, result.stderr[-2000:]
    for module in MODULES[:3]:
        assert f"code object from '{task}/__pycache__/{module}.cpython-312.pyc'" in result.stderr, module
    # What a traceback names: the file where Lambda extracts the function, not the build machine's.
    code = ("import marshal, sys; print(marshal.loads(open(sys.argv[1], 'rb').read()[16:]).co_filename)")
    named = subprocess.run([str(python), "-I", "-c", code, str(task / "__pycache__" / "model_runtime.cpython-312.pyc")],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert named == "/var/task/model_runtime.py"


def test_an_edited_source_wins_over_its_shipped_bytecode(unzipped: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """Checked-hash: a function edited in place (the Lambda console's editor) runs the edit."""
    python, task, site = unzipped
    edited = tmp_path / "task"
    subprocess.run(["cp", "-r", str(task), str(edited)], check=True)
    runtime = edited / "model_runtime.py"
    runtime.write_text(runtime.read_text() + "\nEDITED_IN_CONSOLE = 42\n")
    result = _verbose_import(python, edited, site, "import model_runtime; print(model_runtime.EDITED_IN_CONSOLE)")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "42"
    assert f"code object from '{edited}/__pycache__/model_runtime.cpython-312.pyc'" not in result.stderr
