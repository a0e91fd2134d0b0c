"""The type checker sees across the parts: optimizer/, packagers/ and profiles/ are real modules to mypy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def _mypy(program: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """mypy with the repository's configuration on a small program that imports the parts."""
    probe = tmp_path / "probe.py"
    probe.write_text(program)
    return subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
                           "--cache-dir", str(tmp_path / "cache"), "--no-error-summary", str(probe)],
                          cwd=tmp_path, env={**os.environ, "MYPYPATH": str(ROOT)}, check=False,
                          capture_output=True, text=True, timeout=600)


def test_a_type_error_across_parts_fails_the_checker(tmp_path: Path) -> None:
    result = _mypy("from slimserve.profiles.loader import load_profile\n"
                   "from slimserve.packagers import closure\n"
                   "from slimserve.optimizer import onnx_io\n"
                   "load_profile(123)\n"
                   "reveal_type(closure.build_closure)\n"
                   "reveal_type(onnx_io.ort_message)\n", tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'Argument 1 to "load_profile" has incompatible type "int"' in result.stdout, result.stdout
    revealed = [line for line in result.stdout.splitlines() if "Revealed type" in line]
    assert len(revealed) == 2 and all("Any" not in line.split("->")[0] for line in revealed), result.stdout
    assert "slimserve.packagers.target.Target" in revealed[0], revealed
