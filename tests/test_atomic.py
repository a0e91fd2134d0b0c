"""Nothing of the user's is lost: ownership markers, stale staging after SIGKILL, disk errors."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from slimserve.atomic import MARKER_TEXT, OUTPUT_MARKER, atomic_dir, is_slimserve_output
from slimserve.errors import SlimserveError
from tests.conftest import assert_clean_error, build_tiny_onnx, run_cli


@pytest.mark.parametrize("lookalike", ["build.json", "compare.json", "slimserve.json"])
def test_a_folder_that_only_looks_like_an_output_is_never_replaced(tiny_onnx: Path, tmp_path: Path,
                                                                   lookalike: str) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / lookalike).write_text("{}")
    (mine / "thesis.tex").write_text("three years of work")
    result = run_cli("optimize", str(tiny_onnx), "-o", str(mine), "--recipe", "fp32")
    assert_clean_error(result, code=2, contains="did not write")
    assert str(mine) in result.stderr
    assert sorted(p.name for p in mine.iterdir()) == sorted([lookalike, "thesis.tex"])
    assert (mine / "thesis.tex").read_text() == "three years of work"


def test_a_forged_marker_is_not_enough(tiny_onnx: Path, tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / OUTPUT_MARKER).write_text("something else\n")
    (mine / "data.csv").write_text("1,2,3")
    assert not is_slimserve_output(mine)
    assert_clean_error(run_cli("optimize", str(tiny_onnx), "-o", str(mine), "--recipe", "fp32"),
                       contains="did not write")
    assert (mine / "data.csv").read_text() == "1,2,3"


def test_slimserve_replaces_its_own_output(tiny_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run_cli("optimize", str(tiny_onnx), "-o", str(out), "--recipe", "fp32").returncode == 0
    assert (out / OUTPUT_MARKER).read_text() == MARKER_TEXT
    assert run_cli("optimize", str(tiny_onnx), "-o", str(out), "--recipe", "fp16").returncode == 0
    assert json.loads((out / "slimserve.json").read_text())["recipe"] == "fp16"
    # the marker is not something a deployment carries
    listed = [f["path"] for f in json.loads((out / "slimserve.json").read_text())["files"]]
    assert OUTPUT_MARKER not in listed


def _killed_inside_atomic_dir(out: Path, *, previous: bool) -> None:
    """A real process SIGKILLed half-way through writing `out` (after moving a previous output aside
    when `previous`): what a crash, an OOM kill or a CI timeout leaves behind."""
    script = textwrap.dedent(f"""
        import os, signal, tempfile
        from pathlib import Path
        import slimserve.atomic as atomic
        out = Path({str(out)!r})
        if {previous!r}:
            old = Path(tempfile.mkdtemp(prefix=atomic._staging_prefix(out, "old"), dir=out.parent))
            os.replace(out, old / "previous")
            os.kill(os.getpid(), signal.SIGKILL)
        with atomic.atomic_dir(out) as staging:
            (staging / "half.bin").write_bytes(b"x" * 1000)
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr


def test_staging_left_by_a_killed_run_is_removed_by_the_next(tiny_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _killed_inside_atomic_dir(out, previous=False)
    left = [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.tmp-")]
    assert len(left) == 1 and not out.exists()
    assert run_cli("optimize", str(tiny_onnx), "-o", str(out), "--recipe", "fp32").returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out")) == []
    assert is_slimserve_output(out)


def test_a_previous_output_moved_aside_by_a_killed_run_is_put_back(tiny_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run_cli("optimize", str(tiny_onnx), "-o", str(out), "--recipe", "fp32").returncode == 0
    before = (out / "slimserve.json").read_bytes()
    _killed_inside_atomic_dir(out, previous=True)
    assert not out.exists()
    with pytest.raises(RuntimeError), atomic_dir(out):  # the next run restores it first, then fails
        raise RuntimeError("boom")
    assert (out / "slimserve.json").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_staging_of_a_live_run_is_left_alone(tmp_path: Path) -> None:
    out = tmp_path / "out"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        theirs = tmp_path / f".out.tmp-{sleeper.pid}-abc123"
        theirs.mkdir()
        with atomic_dir(out) as staging:
            (staging / "a").write_text("a")
        assert theirs.is_dir()
    finally:
        sleeper.kill()
        sleeper.wait()


def _in_mount_namespace(tmp_path: Path, mount: str, command: list[str]) -> subprocess.CompletedProcess[str]:
    """Run `command` with `tmp_path/disk` as a tmpfs mounted with `mount` options, in a private mount
    namespace (util-linux `unshare`; no root needed), so the test meets a real full or read-only disk."""
    assert shutil.which("unshare"), "util-linux unshare is needed for the disk-error tests"
    disk = tmp_path / "disk"
    disk.mkdir()
    script = f'mount -t tmpfs -o {mount} tmpfs "$1" && shift && exec "$@"'
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent / "fixtures")}
    return subprocess.run(["unshare", "--map-root-user", "--mount", "sh", "-c", script, "sh", str(disk), *command],
                          check=False, capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.parametrize(("mount", "message"), [("size=64k", "No space left on device"),
                                                ("ro", "Read-only file system")])
def test_disk_errors_are_one_line_and_leave_nothing(tmp_path: Path, mount: str, message: str) -> None:
    model = build_tiny_onnx(tmp_path / "m.onnx", hidden=256, out=256)  # 300 kB: does not fit in 64 kB
    out = tmp_path / "disk" / "out"
    result = _in_mount_namespace(tmp_path, mount, [sys.executable, "-c", textwrap.dedent(f"""
        import os, sys
        from slimserve.cli import main
        code = main(["optimize", {str(model)!r}, "-o", {str(out)!r}, "--recipe", "fp32"])
        print("left:", sorted(os.listdir({str(out.parent)!r})))
        sys.exit(code)
    """)])
    assert_clean_error(subprocess.CompletedProcess(result.args, result.returncode, "", result.stderr),
                       code=2, contains=message)
    assert f"cannot write {out}" in result.stderr
    assert "left: []" in result.stdout  # nothing half-written on the full disk


def test_atomic_dir_turns_disk_errors_into_slimserve_errors(tmp_path: Path) -> None:
    """In-process (the Python API): a write the disk refuses inside the block is a SlimserveError naming
    the output, and the staging folder is gone."""
    out = tmp_path / "out"
    with pytest.raises(SlimserveError, match=f"cannot write {out}"), atomic_dir(out) as staging:
        raise OSError(28, "No space left on device", str(staging / "model.onnx"))
    assert not out.exists() and [p for p in tmp_path.iterdir()] == []
