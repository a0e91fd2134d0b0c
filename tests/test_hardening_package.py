"""Nothing from the build host ships (issue 9).

- Every file an artifact carries is a regular file inside the model folder: symlinks leaving it, absolute
  paths and `..` in the manifest are one `error:` line, exit 2, raised before any wheel is fetched (the
  closure cache is never created) and before OUT exists.
- `package` loads the model in onnxruntime before writing anything, even with --no-check: hostile models
  (custom-domain op, 40 GB declared in 16 bytes, a ConstantOfShape bomb, external data outside) are refused.
- No host path in any shipped byte: bytecode names its in-artifact path, manifests keep a basename + hash.
- Layer zip and image digest are byte-identical from fresh caches, temp folders and umasks (slow).
- `--push user:password@host/...` is refused up front and the password never printed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from slimserve.bundle import load_bundle
from slimserve.errors import SlimserveError
from slimserve.manifest import MANIFEST_NAME, file_entries, sha256_file, write_manifest
from slimserve.packagers.interpreters import find_python
from slimserve.packagers.lambda_target import package_lambda
from slimserve.packagers.target import Target
from tests.conftest import assert_clean_error, build_tiny_onnx, run_cli
from tests.helpers_lambda import tensor_model_dir, text_model_dir
from tests.hostile_models import (
    HOST_FILE,
    constant_of_shape_bomb,
    custom_op,
    declared_40_gb,
    external_in_subgraph,
    external_outside,
    external_symlink,
)
from tests.registry_fixture import make_base_layout

SECRET = "hunter2-not-for-logs"


# -- model folders built here ----------------------------------------------------------------------------
def _rewrite_files(folder: Path, files: list[dict[str, object]] | None = None) -> None:
    """The folder's manifest lists `files` (default: what is in the folder now, symlinks included)."""
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    if files is None:
        manifest.pop("files", None)
        manifest["files"] = file_entries(folder)
    else:
        manifest["files"] = files
    write_manifest(folder, manifest)


def symlink_to_host(folder: Path) -> Path:
    tensor_model_dir(folder)
    (folder / "special_tokens_map.json").symlink_to(HOST_FILE)
    _rewrite_files(folder)
    return folder


def absolute_listed(folder: Path) -> Path:
    tensor_model_dir(folder)
    _rewrite_files(folder, file_entries(folder) + [{"path": HOST_FILE, "bytes": 1, "sha256": "0" * 64}])
    return folder


def dotdot_listed(folder: Path) -> Path:
    tensor_model_dir(folder)
    (folder.parent / "outside.txt").write_text("not the user's model\n")
    _rewrite_files(folder, file_entries(folder) + [{"path": "../outside.txt", "bytes": 1, "sha256": "0" * 64}])
    return folder


def unlisted_symlink(folder: Path) -> Path:
    """No `files` list: the folder's files are taken, and one of them leaves it."""
    tensor_model_dir(folder)
    (folder / "vocab.txt").symlink_to(HOST_FILE)
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    manifest.pop("files")
    write_manifest(folder, manifest)
    return folder


def unlisted_symlinked_folder(folder: Path) -> Path:
    tensor_model_dir(folder)
    (folder / "etc").symlink_to("/etc", target_is_directory=True)
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    manifest.pop("files")
    write_manifest(folder, manifest)
    return folder


def manifest_external_data_outside(folder: Path) -> Path:
    tensor_model_dir(folder)
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    manifest["model"]["external_data"] = ["../" * 30 + "etc/passwd"]
    write_manifest(folder, manifest)
    return folder


def manifest_model_absolute(folder: Path) -> Path:
    tensor_model_dir(folder)
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    manifest["model"]["path"] = str((folder / "model.onnx").absolute())
    write_manifest(folder, manifest)
    return folder


def as_folder(build: object, folder: Path) -> Path:
    """The hostile model as an optimize-style folder (model.onnx + slimserve.json listing its files)."""
    model = build(folder / "model.onnx")  # type: ignore[operator]
    manifest = {"schema": 1, "source": {"kind": "onnx", "path": str(model), "sha256": sha256_file(model)},
                "recipe": "fp32", "versions": {},
                "model": {"path": "model.onnx", "bytes": model.stat().st_size, "sha256": sha256_file(model),
                          "inputs": [{"name": "x", "dtype": "float32", "shape": ["batch", 4]}],
                          "outputs": [{"name": "y", "dtype": "float32", "shape": ["batch", 4]}]},
                "runtime": {"kind": "tensor", "task": "tensor", "max_batch": 8},
                "files": [{"path": "model.onnx", "bytes": model.stat().st_size, "sha256": sha256_file(model)}]}
    write_manifest(folder, manifest)
    return folder


def _package(model: Path, out: Path, cache: Path, *extra: str, target: str = "lambda") -> subprocess.CompletedProcess[str]:
    return run_cli("package", str(model), "--target", target, "-o", str(out), *extra,
                   env={"SLIMSERVE_CACHE": str(cache), "XDG_CACHE_HOME": str(cache / "xdg")}, timeout=600)


def _no_closure_work(cache: Path) -> bool:
    """Refused before a wheel was downloaded or a closure built (onnxruntime's own telemetry id may appear)."""
    return not any(p.exists() for p in (cache / "closures", cache / "wheels", cache / "xdg" / "slimserve"))


# -- 1. only regular files inside the model folder ---------------------------------------------------------
FOLDER_CASES = [
    (symlink_to_host, "resolves outside the model folder"),
    (absolute_listed, "not a plain relative path"),
    (dotdot_listed, "not a plain relative path"),
    (unlisted_symlink, "resolves outside the model folder"),
    (unlisted_symlinked_folder, "resolves outside the model folder"),
    (manifest_external_data_outside, "not a plain relative path"),
    (manifest_model_absolute, "not a plain relative path"),
]


@pytest.mark.parametrize(("build", "says"), FOLDER_CASES, ids=[c[0].__name__ for c in FOLDER_CASES])
def test_load_bundle_refuses_files_from_outside_the_folder(tmp_path: Path, build: object, says: str) -> None:
    folder = build(tmp_path / "m")  # type: ignore[operator]
    with pytest.raises(SlimserveError, match=says) as info:
        load_bundle(folder)
    assert "root:" not in str(info.value) and "\n" not in info.value.message


@pytest.mark.parametrize("build", [symlink_to_host, absolute_listed, dotdot_listed])
@pytest.mark.parametrize("target", ["lambda", "container"])
def test_package_refuses_before_any_wheel_or_zip(tmp_path: Path, build: object, target: str) -> None:
    folder = build(tmp_path / "m")  # type: ignore[operator]
    extra = ("--no-check",) if target == "lambda" else ("--engine", "none", "--base", f"oci:{tmp_path / 'none'}")
    result = _package(folder, tmp_path / "out", tmp_path / "cache", *extra, target=target)
    assert_clean_error(result, code=2)
    assert "root:" not in result.stdout + result.stderr  # the host file's content is never echoed
    assert not (tmp_path / "out").exists()
    assert _no_closure_work(tmp_path / "cache")


def test_symlinks_inside_the_folder_ship_as_the_regular_file(tmp_path: Path) -> None:
    folder = tensor_model_dir(tmp_path / "m")
    (folder / "labels.json").write_text('["a", "b"]\n')
    (folder / "labels-link.json").symlink_to("labels.json")
    _rewrite_files(folder)
    bundle = load_bundle(folder)
    assert "labels-link.json" in bundle.files
    from slimserve.packagers.model_files import model_entries

    entries = model_entries(bundle)
    source = entries["labels-link.json"]
    assert isinstance(source, Path) and source.read_bytes() == b'["a", "b"]\n'


def test_a_fifo_in_the_folder_is_not_a_file_to_ship(tmp_path: Path) -> None:
    folder = tensor_model_dir(tmp_path / "m")
    os.mkfifo(folder / "pipe")
    _rewrite_files(folder, [{"path": "model.onnx"}, {"path": "pipe"}])
    with pytest.raises(SlimserveError, match="not a regular file"):
        load_bundle(folder)


# -- 2. the model loads in onnxruntime before anything is written ------------------------------------------
HOSTILE = [custom_op, declared_40_gb, constant_of_shape_bomb, external_outside, external_symlink, external_in_subgraph]


@pytest.mark.parametrize("layout", ["bare", "folder"])
@pytest.mark.parametrize("build", HOSTILE, ids=[b.__name__ for b in HOSTILE])
def test_package_no_check_refuses_hostile_models(tmp_path: Path, build: object, layout: str) -> None:
    model = build(tmp_path / "bare" / "model.onnx") if layout == "bare" else as_folder(build, tmp_path / "m")  # type: ignore[operator]
    result = _package(model, tmp_path / "out", tmp_path / "cache", "--no-check")
    assert_clean_error(result, code=2)
    assert "root:" not in result.stdout + result.stderr
    assert not (tmp_path / "out").exists() and _no_closure_work(tmp_path / "cache")


def test_check_model_refuses_a_custom_op_in_process(tmp_path: Path) -> None:
    from slimserve.packagers.model_check import check_model

    with pytest.raises(SlimserveError, match="com.evil"):
        check_model(load_bundle(as_folder(custom_op, tmp_path / "m")))
    check_model(load_bundle(build_tiny_onnx(tmp_path / "ok" / "tiny.onnx")))  # a sound model passes


# -- 3. no host path in any shipped byte -------------------------------------------------------------------
def _host_markers(*paths: Path) -> list[bytes]:
    markers = {str(p.resolve()).encode() for p in paths} | {str(p).encode() for p in paths}
    markers |= {b"closures/.build-", b".cache/slimserve"}
    return sorted(markers)


def _leaks(blobs: dict[str, bytes], markers: list[bytes]) -> list[str]:
    return sorted(f"{name}: {m.decode()}" for name, data in blobs.items() for m in markers if m in data)


def _zip_blobs(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {f"{path.name}:{n}": zf.read(n) for n in zf.namelist()}


def _co_filename(python: Path, pyc: bytes, tmp: Path) -> str:
    """The file name compiled into a .pyc, read by the interpreter that wrote it (marshal is per version)."""
    (tmp / "probe.pyc").write_bytes(pyc)
    code = "import marshal,sys; print(marshal.loads(open(sys.argv[1],'rb').read()[16:]).co_filename)"
    return subprocess.run([str(python), "-I", "-c", code, str(tmp / "probe.pyc")], capture_output=True,
                          text=True, check=True).stdout.strip()


@pytest.fixture
def source_folder(tmp_path: Path) -> Path:
    """A tensor model whose manifest names host paths: the source folder and an --eval file."""
    folder = tensor_model_dir(tmp_path / "host-only-folder" / "model")
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    manifest["source"]["path"] = str(folder.absolute() / "model.onnx")
    manifest["fidelity"]["eval_source"] = str(tmp_path / "host-only-folder" / "eval.npz")
    write_manifest(folder, manifest)
    return folder


def test_lambda_artifacts_carry_no_host_path(source_folder: Path, tmp_path: Path) -> None:
    from slimserve.packagers.closure import cache_root

    out = tmp_path / "out"
    package_lambda(load_bundle(source_folder), out, Target("3.12"), memory_mb=512)
    blobs = {**_zip_blobs(out / "layer.zip"), **_zip_blobs(out / "function.zip")}
    assert _leaks(blobs, _host_markers(tmp_path, cache_root())) == []
    shipped = json.loads(blobs[f"function.zip:model/{MANIFEST_NAME}"])
    assert shipped["source"]["path"] == "model.onnx" and len(shipped["source"]["sha256"]) == 64
    assert shipped["fidelity"]["eval_source"] == "eval.npz"
    python = find_python("3.12")
    if python is not None:  # the layer's bytecode names the file where Lambda extracts it
        assert _co_filename(python, blobs["layer.zip:python/numpy/__init__.pyc"], tmp_path) == \
            "/opt/python/numpy/__init__.py"


def test_lambda_top_level_manifest_carries_no_host_path(source_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    package_lambda(load_bundle(source_folder), out, Target("3.12"), memory_mb=512)
    assert _leaks({MANIFEST_NAME: (out / MANIFEST_NAME).read_bytes()}, _host_markers(tmp_path)) == []


def _tar_blobs(path: Path) -> dict[str, bytes]:
    out = {}
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            if member.isfile():
                fh = tar.extractfile(member)
                assert fh is not None
                out[member.name] = fh.read()
    return out


def test_container_image_carries_no_host_path(source_folder: Path, tmp_path: Path) -> None:
    from slimserve.packagers.closure import cache_root
    from slimserve.packagers.container import package_container

    (source_folder / "labels.json").write_text('["a", "b"]\n')
    (source_folder / "labels.json").chmod(0o755)  # a host mode bit: it must not reach the context either
    _rewrite_files(source_folder)
    base = make_base_layout(tmp_path / "base")
    art = package_container(load_bundle(source_folder), tmp_path / "out", Target("3.12"), base_ref=f"oci:{base}",
                            engine="none")
    assert (tmp_path / "out" / "context" / "model" / "labels.json").stat().st_mode & 0o777 == 0o644
    blobs = {name: (tmp_path / "out" / name).read_bytes() for name in (MANIFEST_NAME, "Dockerfile")}
    for layer in art.image.layers[art.base_layers:]:
        assert layer.path is not None
        blobs.update(_tar_blobs(layer.path))
    blobs["config"] = art.image.config_bytes
    assert _leaks(blobs, _host_markers(tmp_path, cache_root())) == []
    python = find_python("3.12")
    if python is not None:
        assert _co_filename(python, blobs["var/task/numpy/__init__.pyc"], tmp_path) == "/var/task/numpy/__init__.py"


# -- 4. same bytes from a fresh cache, temp folder and umask (slow: two closure builds each) ---------------
@pytest.fixture(scope="module")
def shared_wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Wheels are immutable files from PyPI: sharing their download between builds is fair; closures are not."""
    return tmp_path_factory.mktemp("wheels")


def _fresh_build(root: Path, wheels: Path, umask: int, *args: str) -> subprocess.CompletedProcess[str]:
    """One CLI run with its own XDG cache, SLIMSERVE_CACHE unset, its own TMPDIR and umask."""
    xdg, tmp = root / "xdg", root / "tmp"
    (xdg / "slimserve").mkdir(parents=True)
    tmp.mkdir()
    (xdg / "slimserve" / "wheels").symlink_to(wheels, target_is_directory=True)
    env = {k: v for k, v in os.environ.items() if k != "SLIMSERVE_CACHE"}
    env.update({"XDG_CACHE_HOME": str(xdg), "TMPDIR": str(tmp), "PYTHONPATH": ""})
    old = os.umask(umask)
    try:
        return subprocess.run([sys.executable, "-m", "slimserve", *args], env=env, capture_output=True, text=True, timeout=900, check=False)
    finally:
        os.umask(old)


@pytest.fixture(scope="module")
def text_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return text_model_dir(tmp_path_factory.mktemp("text") / "model")


@pytest.mark.slow
def test_text_layer_is_byte_identical_from_fresh_caches(text_folder: Path, shared_wheels: Path,
                                                         tmp_path: Path) -> None:
    outs = []
    for i, umask in enumerate((0o022, 0o077)):
        out = tmp_path / f"out{i}"
        result = _fresh_build(tmp_path / f"run{i}", shared_wheels, umask, "package", str(text_folder),
                              "--target", "lambda", "--no-check", "-o", str(out))
        assert result.returncode == 0, result.stderr[-2000:]
        outs.append(out)
    for name in ("layer.zip", "function.zip"):
        a, b = ((o / name).read_bytes() for o in outs)
        if a != b:
            differing = [n for n, v in _zip_blobs(outs[0] / name).items() if _zip_blobs(outs[1] / name).get(n) != v]
            pytest.fail(f"{name}: {len(differing)} entries differ, e.g. {differing[:5]}")


@pytest.mark.slow
@pytest.mark.parametrize("platform", ["aws-lambda-container", "gcp-cloud-run"])
def test_image_digest_is_identical_from_fresh_caches(text_folder: Path, shared_wheels: Path, tmp_path: Path,
                                                     platform: str) -> None:
    base = make_base_layout(tmp_path / "base")
    digests = []
    for i, umask in enumerate((0o022, 0o077)):
        out = tmp_path / f"out{i}"
        result = _fresh_build(tmp_path / f"run{i}", shared_wheels, umask, "package", str(text_folder),
                              "--target", "container", "--engine", "none", "--base", f"oci:{base}",
                              "--platform", platform, "-o", str(out))
        assert result.returncode == 0, result.stderr[-2000:]
        digests.append(json.loads((out / MANIFEST_NAME).read_text())["package"]["image"]["digest"])
    assert digests[0] == digests[1]


# -- 5. credentials never ride in a reference ----------------------------------------------------------------
@pytest.mark.parametrize("flag", ["--push", "--base"])
def test_credentials_in_a_reference_are_refused_up_front_and_never_echoed(tmp_path: Path, flag: str) -> None:
    folder = tensor_model_dir(tmp_path / "m")
    result = _package(folder, tmp_path / "out", tmp_path / "cache", "--engine", "none",
                      flag, f"slim:{SECRET}@127.0.0.1:9/team/model:1", target="container")
    assert_clean_error(result, code=2, contains="credentials")
    assert SECRET not in result.stdout + result.stderr
    assert not (tmp_path / "out").exists() and _no_closure_work(tmp_path / "cache")


@pytest.mark.parametrize("text", [f"slim:{SECRET}@registry.example/app:1", f"{SECRET}@registry.example/app",
                                  f"https://slim:{SECRET}@registry.example/app:1", f"app:1@{SECRET}"])
def test_reference_parse_refuses_credentials_without_echoing_them(text: str) -> None:
    from slimserve.packagers.oci.registry import Reference

    with pytest.raises(SlimserveError) as info:
        Reference.parse(text)
    assert SECRET not in str(info.value) + str(info.value.hint)


def test_digest_references_still_parse() -> None:
    from slimserve.packagers.oci.registry import Reference

    digest = "sha256:" + "a" * 64
    assert str(Reference.parse(f"127.0.0.1:5000/team/app@{digest}").digest) == digest
    assert Reference.parse(f"python@{digest}").repository == "library/python"

