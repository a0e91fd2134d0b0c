"""Progress shows on a terminal (a pseudo-terminal here) and stays quiet when output is not a TTY."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
from pathlib import Path

from tests.conftest import FIXTURES, run_cli


def _run_on_a_terminal(*args: str) -> tuple[int, str]:
    main, secondary = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(FIXTURES), "COLUMNS": "120", "TERM": "xterm"}
    proc = subprocess.Popen([sys.executable, "-m", "slimserve", *args], stdout=secondary, stderr=secondary,
                            stdin=subprocess.DEVNULL, env=env)
    os.close(secondary)
    chunks = []
    while True:
        ready, _, _ = select.select([main], [], [], 120)
        if not ready:
            break
        try:
            data = os.read(main, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(main)
    return proc.wait(timeout=120), b"".join(chunks).decode("utf-8", "replace")


def test_progress_display_on_a_terminal(tiny_onnx: Path, tmp_path: Path) -> None:
    code, screen = _run_on_a_terminal("optimize", str(tiny_onnx), "-o", str(tmp_path / "o"), "--recipe", "int8-dynamic")
    assert code == 0, screen
    for stage in ("export to ONNX", "reference outputs", "step int8-dynamic", "evaluate fidelity"):
        assert stage in screen, screen


def test_no_progress_when_not_a_terminal(tiny_onnx: Path, tmp_path: Path) -> None:
    result = run_cli("optimize", str(tiny_onnx), "-o", str(tmp_path / "o"), "--recipe", "int8-dynamic")
    assert result.returncode == 0 and result.stderr == ""
    assert "evaluate fidelity" not in result.stdout
