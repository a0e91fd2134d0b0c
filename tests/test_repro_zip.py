"""Reproducible zips: same input, same bytes; timestamps, modes, order and names normalised."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

import pytest

from slimserve.errors import SlimserveError
from slimserve.packagers.repro_zip import ZIP_EPOCH_MIN, tree_entries, write_zip


def _tree(root: Path) -> Path:
    (root / "b" / "c").mkdir(parents=True)
    (root / "b" / "c" / "x.py").write_text("print(1)\n")
    (root / "a.txt").write_text("a" * 1000)
    run = root / "b" / "run.sh"
    run.write_text("#!/bin/sh\n")
    run.chmod(0o700)
    (root / "b" / "secret.txt").write_text("s")
    (root / "b" / "secret.txt").chmod(0o600)
    return root


def test_same_input_same_bytes_even_after_touching_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    src = _tree(tmp_path / "src")
    write_zip(tmp_path / "1.zip", {**tree_entries(src, "python"), "extra.json": b"{}"})
    for p in src.rglob("*"):
        p.touch()
    write_zip(tmp_path / "2.zip", {"extra.json": b"{}", **tree_entries(src, "python")})
    assert (tmp_path / "1.zip").read_bytes() == (tmp_path / "2.zip").read_bytes()


def test_entries_sorted_with_parent_folders_modes_and_1980_timestamps(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    src = _tree(tmp_path / "src")
    total = write_zip(tmp_path / "o.zip", tree_entries(src, "python"))
    with zipfile.ZipFile(tmp_path / "o.zip") as zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        assert names == sorted(names)
        assert names[0] == "python/" and "python/b/" in names and "python/b/c/" in names
        modes = {i.filename: stat.S_IMODE(i.external_attr >> 16) for i in infos}
        assert modes["python/b/run.sh"] == 0o755
        assert modes["python/b/secret.txt"] == 0o644 and modes["python/a.txt"] == 0o644
        assert modes["python/b/"] == 0o755
        assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
        assert {i.create_system for i in infos} == {3}
        assert all(not i.extra for i in infos)  # no uid/gid extra fields
        assert zf.read("python/a.txt") == b"a" * 1000
    assert total == sum(p.stat().st_size for p in src.rglob("*") if p.is_file())


def test_source_date_epoch_is_honoured_and_clamped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # 2023-11-14T22:13:20Z
    write_zip(tmp_path / "a.zip", {"f": b"x"})
    with zipfile.ZipFile(tmp_path / "a.zip") as zf:
        assert zf.getinfo("f").date_time == (2023, 11, 14, 22, 13, 20)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    write_zip(tmp_path / "b.zip", {"f": b"x"})
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    write_zip(tmp_path / "c.zip", {"f": b"x"}, epoch=ZIP_EPOCH_MIN)
    assert (tmp_path / "b.zip").read_bytes() == (tmp_path / "c.zip").read_bytes()
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "soon")
    with pytest.raises(SlimserveError, match="SOURCE_DATE_EPOCH"):
        write_zip(tmp_path / "d.zip", {"f": b"x"})


@pytest.mark.parametrize("name", ["/abs", "../up", "a/../../b", "dir/", ""])
def test_unsafe_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(SlimserveError):
        write_zip(tmp_path / "x.zip", {name: b"x"})


def test_file_and_folder_with_one_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SlimserveError, match="both a file and a folder"):
        write_zip(tmp_path / "x.zip", {"a": b"1", "a/b": b"2"})


def test_host_permission_bits_do_not_leak_into_the_zip(tmp_path: Path) -> None:
    """A `chmod +x` on the build host must not change the artifact: modes come from names."""
    src = tmp_path / "model.onnx"
    src.write_bytes(b"weights")
    write_zip(tmp_path / "a.zip", {"model/model.onnx": src})
    src.chmod(0o755)
    write_zip(tmp_path / "b.zip", {"model/model.onnx": src})
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()
