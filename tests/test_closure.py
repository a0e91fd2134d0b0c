"""The runtime closure: pins per target, real wheels from the index, trimmed, compiled, cached, importable."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import pytest

from slimserve.errors import SlimserveError, ToolError
from slimserve.packagers.closure import build_closure, closure_info
from slimserve.packagers.interpreters import find_python
from slimserve.packagers.target import Target
from slimserve.packagers.wheels import Pin, download_wheel, read_pins
from tests.helpers_lambda import elf_machine

needs_312 = pytest.mark.skipif(find_python("3.12") is None, reason="python3.12 is not installed (pyenv install 3.12)")


def test_pins_follow_the_target_python_and_the_text_extra() -> None:
    new = {p.name: p.version for p in read_pins(Target("3.12"), text=True)}
    assert set(new) == {"numpy", "onnxruntime", "tokenizers"}
    assert {p.name for p in read_pins(Target("3.12"), text=False)} == {"numpy", "onnxruntime"}
    old = {p.name: p.version for p in read_pins(Target("3.11", "arm64"), text=True)}
    assert old["onnxruntime"] != new["onnxruntime"]  # Amazon Linux 2 (glibc 2.26) needs older wheels


def test_target_tags_stop_at_the_lambda_runtimes_glibc() -> None:
    assert Target("3.12").platform_tags[0] == "manylinux_2_34_x86_64"
    assert Target("3.11", "arm64").platform_tags[0] == "manylinux_2_26_aarch64"
    assert Target("3.12", "arm64").platform_tags[-1] == "manylinux2014_aarch64"


@pytest.mark.parametrize(("python", "arch"), [("3.9", "x86_64"), ("2.7", "x86_64"), ("3.12", "riscv")])
def test_unsupported_targets_are_clear_errors(python: str, arch: str) -> None:
    with pytest.raises(SlimserveError, match="unsupported"):
        Target(python, arch)  # type: ignore[arg-type]


def test_missing_wheel_names_package_and_tags(tmp_path: Path) -> None:
    with pytest.raises(ToolError) as info:
        download_wheel(Pin("onnxruntime", "1.32.0"), Target("3.11"), tmp_path)  # only manylinux_2_28 wheels
    message = str(info.value)
    assert "onnxruntime==1.32.0" in message and "cp311-manylinux_2_26..2_17_x86_64" in message
    assert len(message.splitlines()) == 1


@needs_312
def test_text_closure_is_trimmed_compiled_and_imports_alone() -> None:
    site = build_closure(Target("3.12"), text=True)
    tops = {p.name for p in site.iterdir()}
    assert {"numpy", "onnxruntime", "tokenizers", "numpy.libs"} <= tops
    assert not tops & {"sympy", "google", "flatbuffers", "coloredlogs", "packaging", "huggingface_hub", "protobuf"}
    for dropped in ("onnxruntime/tools", "onnxruntime/transformers", "onnxruntime/quantization", "numpy/f2py"):
        assert not (site / dropped).exists(), dropped
    files = [p for p in site.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in (".pyi", ".h") or "__pycache__" in p.parts or "tests" in p.parts]
    assert not [p for p in files if p.suffix == ".py" and ".dist-info" not in str(p)]  # sourceless bytecode
    pyc = site / "onnxruntime" / "__init__.pyc"
    flags = int.from_bytes(pyc.read_bytes()[4:8], "little")
    assert flags == 0b01  # hash-based, unchecked: read-only filesystems never recompile
    # RECORD lists exactly the shipped files of its distribution, with hashes
    record = next(site.glob("onnxruntime-*.dist-info/RECORD"))
    rows = list(csv.reader(record.read_text().splitlines()))
    listed = {r[0] for r in rows}
    assert all((site / name).is_file() for name in listed)
    shipped = {p.relative_to(site).as_posix() for p in (site / "onnxruntime").rglob("*") if p.is_file()}
    assert shipped <= listed
    # imports with nothing else on the path (build_closure also ran one ONNX graph in it)
    probe = ("import sys; sys.path[:0] = [sys.argv[1]]; import numpy, onnxruntime, tokenizers, importlib.metadata as m;"
             "print(m.version('onnxruntime'), sorted(k for k in sys.modules if k.split('.')[0] in "
             "('sympy', 'google', 'packaging', 'coloredlogs', 'huggingface_hub')))")
    out = subprocess.run([str(find_python("3.12")), "-I", "-S", "-c", probe, str(site)], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == f"{closure_info(site)['pins'][1].split('==')[1]} []"


@needs_312
def test_closure_is_cached_by_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = build_closure(Target("3.12"), text=False)
    marker = first.parent / "cache-probe"
    marker.write_text("left by the test")  # a rebuild would replace the folder and lose it
    again = build_closure(Target("3.12"), text=False)
    assert again == first and marker.read_text() == "left by the test"
    marker.unlink()
    assert build_closure(Target("3.12"), text=True) != first
    monkeypatch.setenv("SLIMSERVE_CACHE", str(tmp_path))
    from slimserve.packagers.closure import cache_root

    assert cache_root() == tmp_path / "closures"


def test_arm64_closure_holds_aarch64_native_code() -> None:
    site = build_closure(Target("3.12", "arm64"), text=True)
    natives = [p for p in site.rglob("*.so*") if p.is_file()]
    assert len(natives) >= 5
    assert {elf_machine(p) for p in natives} == {183}  # EM_AARCH64
    assert closure_info(site)["target"] == {"python": "3.12", "arch": "arm64"}
