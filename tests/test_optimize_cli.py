"""`slimserve optimize` end to end on small models: each source kind, the manifest, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import assert_clean_error, build_tiny_onnx, run_cli

MANIFEST_KEYS = {"schema", "source", "recipe", "steps", "versions", "model", "runtime", "fidelity", "timings", "files"}


def _manifest(out: Path) -> dict:
    return json.loads((out / "slimserve.json").read_text())


def test_onnx_file_through_int8_dynamic(tiny_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli("optimize", str(tiny_onnx), "-o", str(out), "--recipe", "int8-dynamic", "--format", "json")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    manifest = _manifest(out)
    assert printed == manifest
    assert MANIFEST_KEYS <= set(manifest)
    assert manifest["source"]["kind"] == "onnx" and len(manifest["source"]["sha256"]) == 64
    assert manifest["model"]["bytes"] == (out / "model.onnx").stat().st_size
    fidelity = manifest["fidelity"]
    assert fidelity["reference"] == "onnxruntime-fp32" and fidelity["metric"] == "abs_error"
    assert fidelity["samples"] == 16 and fidelity["mean"] > 0.98
    assert {"onnx", "onnxruntime", "numpy", "slimserve"} <= set(manifest["versions"])
    assert sorted(f["path"] for f in manifest["files"]) == ["model.onnx"]


def test_text_table_is_the_default_format(tiny_onnx: Path, tmp_path: Path) -> None:
    result = run_cli("optimize", str(tiny_onnx), "-o", str(tmp_path / "o"), "--recipe", "fp32")
    assert result.returncode == 0, result.stderr
    assert "fp32" in result.stdout and " kB" in result.stdout and "wrote" in result.stdout
    assert result.stderr == ""  # not a TTY: no progress display, no library chatter


def test_npz_eval_inputs(tiny_onnx: Path, tmp_path: Path) -> None:
    npz = tmp_path / "eval.npz"
    np.savez(npz, x=np.random.default_rng(1).standard_normal((5, 16)).astype(np.float32))
    out = tmp_path / "o"
    result = run_cli("optimize", str(tiny_onnx), "-o", str(out), "--recipe", "fp16", "--eval", str(npz))
    assert result.returncode == 0, result.stderr
    assert _manifest(out)["fidelity"]["samples"] == 5


def test_torch_factory_exported_quantized_and_evaluated(tmp_path: Path) -> None:
    out = tmp_path / "torch-out"
    result = run_cli("optimize", "tiny_torch:tiny_net", "--input-shape", "1x3x8x8", "-o", str(out),
                     "--recipe", "int8-dynamic", "--format", "json")
    assert result.returncode == 0, result.stderr
    manifest = json.loads(result.stdout)
    assert manifest["source"]["kind"] == "torch" and manifest["source"]["factory"] == "tiny_torch:tiny_net"
    assert manifest["fidelity"]["reference"] == "pytorch"
    assert manifest["model"]["inputs"][0]["name"] == "image"
    assert manifest["fidelity"]["mean"] > 0.99


def test_torch_factory_with_two_inputs(tmp_path: Path) -> None:
    out = tmp_path / "two"
    result = run_cli("optimize", "tiny_torch:two_inputs", "--input-shape", "1x6", "--input-shape", "1x6",
                     "-o", str(out), "--recipe", "fp32", "--format", "json")
    assert result.returncode == 0, result.stderr
    manifest = json.loads(result.stdout)
    assert [i["name"] for i in manifest["model"]["inputs"]] == ["a", "b"]
    assert manifest["fidelity"]["mean"] > 0.9999


@pytest.mark.parametrize("args, contains", [
    (["does/not/exist.onnx"], "does not exist"),
    (["{tiny}", "--recipe", "int9"], "unknown recipe step"),
    (["{tiny}", "--recipe", "int8+"], "empty step"),
    (["{empty}"], "empty"),
    (["{text}"], "not"),
    (["{emptydir}"], "empty folder"),
    (["tiny_torch:broken", "--input-shape", "1x3x8x8"], "weights file missing"),
    (["tiny_torch:not_a_module", "--input-shape", "1x3x8x8"], "not a torch.nn.Module"),
    (["no_such_module_xyz:factory", "--input-shape", "1x3"], "cannot import"),
    (["tiny_torch:tiny_net", "--input-shape", "1x3x8x8", "--task", "nope"], "nope"),
])
def test_bad_input_is_one_line_and_leaves_no_output(tmp_path: Path, args: list[str], contains: str) -> None:
    tiny = build_tiny_onnx(tmp_path / "tiny.onnx")
    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "text.onnx").write_text("hello, I am not a model\n" * 20)
    (tmp_path / "emptydir").mkdir()
    names = {"{tiny}": str(tiny), "{empty}": str(tmp_path / "empty.onnx"), "{text}": str(tmp_path / "text.onnx"),
             "{emptydir}": str(tmp_path / "emptydir")}
    out = tmp_path / "out"
    result = run_cli("optimize", *[names.get(a, a) for a in args], "-o", str(out))
    assert_clean_error(result, code=2, contains=contains)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no staging left behind


def test_failure_keeps_the_previous_output(tiny_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run_cli("optimize", str(tiny_onnx), "-o", str(out), "--recipe", "fp32").returncode == 0
    before = (out / "slimserve.json").read_bytes()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(tiny_onnx.read_bytes()[:50])
    assert_clean_error(run_cli("optimize", str(bad), "-o", str(out)))
    assert (out / "slimserve.json").read_bytes() == before


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    (tmp_path / "empty.onnx").write_bytes(b"")
    result = run_cli("--debug", "optimize", str(tmp_path / "empty.onnx"), "-o", str(tmp_path / "o"))
    assert result.returncode == 2 and "Traceback" in result.stderr


def test_list_recipes() -> None:
    result = run_cli("optimize", "--list-recipes")
    assert result.returncode == 0
    for name in ("fp32", "fp16", "int8", "int8-dynamic", "int8-static", "int8-weight", "int4-weight", "prune-ffn-N"):
        assert name in result.stdout.split()


def test_output_never_replaces_a_folder_slimserve_did_not_write(tiny_onnx: Path, tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "notes.txt").write_text("keep me")
    assert_clean_error(run_cli("optimize", str(tiny_onnx), "-o", str(mine), "--recipe", "fp32"), contains="did not write")
    assert (mine / "notes.txt").read_text() == "keep me" and (mine / "sub").is_dir()


def test_output_never_replaces_its_input(tiny_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run_cli("optimize", str(tiny_onnx), "-o", str(out), "--recipe", "fp32").returncode == 0
    assert_clean_error(run_cli("optimize", str(out / "model.onnx"), "-o", str(out), "--recipe", "fp32"),
                       contains="would replace the input")
    assert (out / "model.onnx").is_file()


def test_debug_flag_after_the_subcommand(tmp_path: Path) -> None:
    (tmp_path / "empty.onnx").write_bytes(b"")
    result = run_cli("optimize", str(tmp_path / "empty.onnx"), "-o", str(tmp_path / "o"), "--debug")
    assert result.returncode == 2 and "Traceback" in result.stderr


def test_bundle_deploys_only_the_files_optimize_listed(tiny_onnx: Path, tmp_path: Path) -> None:
    from slimserve.bundle import load_bundle
    from slimserve.errors import SlimserveError

    out = tmp_path / "out"
    assert run_cli("optimize", str(tiny_onnx), "-o", str(out), "--recipe", "fp32").returncode == 0
    (out / "stray.ort").write_bytes(b"x" * 1000)
    assert load_bundle(out).files == ("model.onnx",)
    (out / "model.onnx").rename(out / "moved.onnx")
    with pytest.raises(SlimserveError, match="model.onnx"):
        load_bundle(out)


def test_input_shape_of_an_onnx_file_names_its_input(tiny_onnx: Path, tmp_path: Path) -> None:
    result = run_cli("optimize", str(tiny_onnx), "-o", str(tmp_path / "o"), "--input-shape", "1x16")
    assert_clean_error(result, contains="needs the input's name")
    result = run_cli("optimize", str(tiny_onnx), "-o", str(tmp_path / "o"), "--input-shape", "nope=1x16")
    assert_clean_error(result, contains="'nope', which is not an input of the model")
    result = run_cli("optimize", str(tiny_onnx), "-o", str(tmp_path / "o"), "--input-shape", "x=1x15")
    assert_clean_error(result, contains="does not fit the model's declared shape")
    assert not (tmp_path / "o").exists()


def test_package_refuses_container_options_for_a_lambda_zip(tiny_onnx: Path, tmp_path: Path) -> None:
    for extra in (["--platform", "gcp-cloud-run"], ["--push", "registry.example/x:1", "--base", "oci:/nowhere"]):
        result = run_cli("package", str(tiny_onnx), "--target", "lambda", "-o", str(tmp_path / "pkg"), *extra)
        assert_clean_error(result, contains="only to --target container")
        assert not (tmp_path / "pkg").exists()
