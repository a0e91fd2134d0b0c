"""Progress shows on a terminal (a pseudo-terminal here) and stays quiet when output is not a TTY."""

from __future__ import annotations

import os
import pty
import re
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


def _final_frame(screen: str) -> list[str]:
    """The rows of the live display as it was left (the frame drawn after the last line erase)."""
    import re

    last = screen.rsplit("\x1b[2K", 1)[-1]
    text = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", last).replace("\r", "")
    return [line.strip() for line in text.split("\n") if line.strip()]


def test_each_stage_is_one_row_and_no_unknown_length_bar(tiny_onnx: Path, tmp_path: Path) -> None:
    code, screen = _run_on_a_terminal("optimize", str(tiny_onnx), "-o", str(tmp_path / "o"), "--recipe", "int8-dynamic")
    assert code == 0, screen
    assert "0/?" not in screen and "?/?" not in screen  # a stage of unknown length has a spinner only
    rows = [r for r in _final_frame(screen.split("slimserve optimize:")[0]) if r.startswith(("✓", "✗"))]
    names = [r[1:].split("  ")[0].strip() for r in rows]
    # One finished row per stage, each once: the step's inner stage ("int8-dynamic: ONNX Runtime dynamic
    # quantization") showed inside the step's row while it ran (test_nested_stages_share_their_row_per_thread).
    assert names == ["export to ONNX (fp32)", "reference outputs", "step int8-dynamic",
                     "offline graph optimization of the result", "evaluate fidelity"], rows
    assert all(r.startswith("✓") for r in rows)
    unknown = next(r for r in rows if "step int8-dynamic" in r)
    assert "━" not in unknown and "/" not in unknown  # no bar, no count for a stage of unknown length
    sized = next(r for r in rows if "evaluate fidelity" in r)
    assert "━" in sized and re.search(r"\b(\d+)/\1\b", sized), sized


def test_nested_stages_share_their_row_per_thread() -> None:
    import io
    import threading

    from slimserve.ui import RichProgress

    seen: dict[str, list[tuple[str, str]]] = {}
    with RichProgress(io.StringIO()) as progress:
        with progress.stage("build 2 candidates", total=2) as build:
            def one(recipe: str) -> None:
                with (progress.stage(f"candidate {recipe}"), progress.stage(f"step {recipe}"),
                      progress.stage(f"{recipe}: quantize")):
                    seen[recipe] = progress.rows()
                build.advance()

            threads = [threading.Thread(target=one, args=(r,)) for r in ("fp32", "int8")]
            for t in threads:
                t.start()
                t.join()  # one after the other, each in its own thread (as --jobs runs them)
        try:
            with progress.stage("fails"):
                raise RuntimeError("boom")
        except RuntimeError:
            pass
        final = progress.rows()
    assert ("candidate fp32 › fp32: quantize", "running") in seen["fp32"]
    assert ("candidate int8 › int8: quantize", "running") in seen["int8"]
    assert final == [("build 2 candidates", "done"), ("candidate fp32", "done"), ("candidate int8", "done"),
                     ("fails", "failed")]
