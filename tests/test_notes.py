"""Tool diagnostics stay in slimserve.json and off the terminal; caveats are still printed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slimserve.notes import diagnostic, for_terminal, is_diagnostic
from tests.conftest import run_cli


def test_for_terminal_keeps_caveats_and_shows_diagnostics_only_under_debug() -> None:
    notes = ["float16 compute is usually slower than float32 on CPU",
             diagnostic("symbolic shape inference failed (object of type 'NoneType' has no len())")]
    assert is_diagnostic(notes[1]) and not is_diagnostic(notes[0])
    assert for_terminal(notes) == notes[:1]
    assert for_terminal(notes, debug=True) == notes


@pytest.mark.slow
def test_optimize_prints_no_internal_note(minilm_dir: Path, tmp_path: Path) -> None:
    """The issue's case: int8-dynamic on MiniLM, where ORT's symbolic shape inference fails and slimserve
    falls back to ONNX shape inference. The manifest keeps that, marked; the terminal does not show it."""
    out = tmp_path / "o"
    result = run_cli("optimize", str(minilm_dir), "-o", str(out), "--recipe", "int8-dynamic")
    assert result.returncode == 0, result.stderr
    notes = json.loads((out / "slimserve.json").read_text())["notes"]
    diagnostics = [n for n in notes if is_diagnostic(n)]
    assert any("symbolic shape inference failed" in n for n in diagnostics), notes
    assert "symbolic shape inference" not in result.stdout + result.stderr
    assert "diagnostic:" not in result.stdout
    for caveat in (n for n in notes if not is_diagnostic(n)):
        assert caveat[:60] in " ".join(result.stdout.split()), caveat  # caveats still reach the user
