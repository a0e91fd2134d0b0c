# ruff: noqa: F811  -- the registry fixtures are imported from registry_fixture and taken as parameters
"""`package_container`: a daemonless image from a base in a real local registry, checked by our oracle
(`validate_image`) and by the real tools (skopeo, umoci); pushed back; reproducible; bad input."""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from slimserve.atomic import OUTPUT_MARKER, mark_output
from slimserve.bundle import ModelBundle, load_bundle
from slimserve.errors import SlimserveError, ToolError
from slimserve.packagers.container import container_image_size, package_container
from slimserve.packagers.oci import layout
from slimserve.packagers.oci.image import DOCKER
from slimserve.packagers.oci.validate import image_problems, validate_image
from slimserve.packagers.target import Target

from .conftest import build_tiny_onnx
from .registry_fixture import (  # noqa: F401
    Registry,
    auth_registry,
    docker_config,
    free_port,
    make_base_layout,
    make_index_layout,
    missing,
    needs_registry,
    needs_skopeo,
    needs_umoci,
    push_layout,
    registry,
    skopeo,
)

TARGET = Target("3.12", "x86_64")
pytestmark = [needs_registry, needs_skopeo]


@pytest.fixture(scope="module")
def base_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_base_layout(tmp_path_factory.mktemp("base") / "layout")


@pytest.fixture(scope="module")
def base_ref(registry: Registry, base_layout: Path) -> str:
    ref = f"{registry.host}/test/lambda-base:1"
    push_layout(base_layout, ref)
    return ref


@pytest.fixture
def fake_closure(tmp_path: Path) -> Path:
    """Any folder of files stands in for the runtime closure where running the image is not the point."""
    site = tmp_path / "site"
    (site / "numpy").mkdir(parents=True)
    (site / "numpy" / "__init__.py").write_text("# stand-in\n")
    (site / "numpy-2.4.6.dist-info").mkdir()
    (site / "numpy-2.4.6.dist-info" / "METADATA").write_text("Name: numpy\n")
    return site


def tiny_bundle(folder: Path, seed: int = 0) -> ModelBundle:
    model = build_tiny_onnx(folder / "tiny.onnx", seed=seed)
    return load_bundle(model)


def package(bundle: ModelBundle, out: Path, base: str, host: str, closure: Path, **kw: object) -> object:
    return package_container(bundle, out, TARGET, base_ref=base, insecure_registries=[host], engine="none",
                             closure=closure, **kw)  # type: ignore[arg-type]


def test_lambda_image_is_valid_to_our_oracle_and_real_tools(tmp_path: Path, registry: Registry, base_ref: str,
                                                            base_layout: Path, fake_closure: Path) -> None:
    out = tmp_path / "out"
    art = package(tiny_bundle(tmp_path / "m"), out, base_ref, registry.host, fake_closure)
    for rel in ("Dockerfile", "context/.dockerignore", "context/handler/lambda_handler.py",
                "context/handler/model_runtime.py", "context/model/tiny.onnx", "context/model/slimserve.json",
                "context/runtime/numpy/__init__.py", "image/oci-layout", "image/index.json", "slimserve.json"):
        assert (out / rel).is_file(), rel
    dockerfile = (out / "Dockerfile").read_text()
    assert dockerfile.index("COPY runtime/") < dockerfile.index("COPY handler/") < dockerfile.index("COPY model/")
    assert f"FROM --platform=linux/amd64 {base_ref}" in dockerfile and 'CMD ["lambda_handler.handler"]' in dockerfile

    image = validate_image(out / "image", base=layout.read(base_layout))
    assert image.digest == art.digest  # type: ignore[attr-defined]
    cfg = image.config["config"]
    assert cfg["Cmd"] == ["lambda_handler.handler"] and cfg["Entrypoint"] == ["/lambda-entrypoint.sh"]
    assert cfg["WorkingDir"] == "/var/task" and "LAMBDA_TASK_ROOT=/var/task" in cfg["Env"]

    inspected = skopeo("inspect", f"oci:{out / 'image'}")
    assert inspected.returncode == 0, inspected.stderr
    facts = json.loads(inspected.stdout)
    assert len(facts["Layers"]) == 5 and facts["Architecture"] == "amd64"

    manifest = json.loads((out / "slimserve.json").read_text())
    pkg = manifest["package"]
    assert manifest["handler"] == "lambda_handler.handler" and manifest["model"]["path"] == "tiny.onnx"
    assert pkg["image"]["digest"] == str(image.digest)
    roles = [layer["role"] for layer in pkg["image"]["layers"]]
    assert roles == ["base", "base", "runtime", "handler", "model"]
    for layer in pkg["image"]["layers"]:
        assert layer["bytes"] > 0 and layer["uncompressed_bytes"] >= layer["bytes"] - 200
    assert pkg["image"]["uncompressed_bytes"] == sum(la["uncompressed_bytes"] for la in pkg["image"]["layers"])
    assert pkg["image"]["compressed_bytes"] == sum(la["bytes"] for la in pkg["image"]["layers"])
    assert pkg["base"]["ref"] == base_ref and pkg["base"]["manifest_digest"].startswith("sha256:")


@needs_umoci
def test_umoci_unpacks_files_where_the_lambda_base_expects_them(tmp_path: Path, registry: Registry, base_ref: str,
                                                                fake_closure: Path) -> None:
    out = tmp_path / "out"
    package(tiny_bundle(tmp_path / "m"), out, base_ref, registry.host, fake_closure)
    bundle_dir = tmp_path / "unpacked"
    proc = subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{out / 'image'}:latest", str(bundle_dir)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    rootfs = bundle_dir / "rootfs"
    assert (rootfs / "etc/os-release").is_file()  # the base is there
    for rel in ("var/task/lambda_handler.py", "var/task/model_runtime.py", "var/task/numpy/__init__.py",
                "var/task/model/tiny.onnx", "var/task/model/slimserve.json"):
        assert (rootfs / rel).is_file(), rel
    assert oct((rootfs / "var/task/lambda_handler.py").stat().st_mode & 0o777) == "0o644"


def test_two_builds_give_the_same_digest_and_a_new_model_changes_only_its_layer(
        tmp_path: Path, registry: Registry, base_ref: str, fake_closure: Path) -> None:
    bundle = tiny_bundle(tmp_path / "m")
    one = package(bundle, tmp_path / "one", base_ref, registry.host, fake_closure)
    two = package(bundle, tmp_path / "two", base_ref, registry.host, fake_closure)
    assert one.digest == two.digest  # type: ignore[attr-defined]
    other = package(tiny_bundle(tmp_path / "m2", seed=1), tmp_path / "three", base_ref, registry.host, fake_closure)
    a, b = one.image.layers, other.image.layers  # type: ignore[attr-defined]
    assert [x.digest for x in a[:-1]] == [x.digest for x in b[:-1]] and a[-1].digest != b[-1].digest


def test_push_shows_base_and_new_layers_and_never_resends_blobs(
        tmp_path: Path, registry: Registry, base_ref: str, fake_closure: Path) -> None:
    ref = f"{registry.host}/test/app:1"
    before = len(registry.requests("PUT", "/blobs/uploads/"))
    art = package(tiny_bundle(tmp_path / "m"), tmp_path / "out", base_ref, registry.host, fake_closure,
                  push_ref=ref)
    pushed = art.pushed  # type: ignore[attr-defined]
    assert pushed.digest == art.digest  # type: ignore[attr-defined]
    assert len(pushed.mounted) == 2 and len(pushed.uploaded) == 4  # base layers mounted; 3 layers + config sent
    assert len(registry.requests("PUT", "/blobs/uploads/")) - before == 4
    remote = skopeo("inspect", "--tls-verify=false", f"docker://{ref}")
    assert remote.returncode == 0, remote.stderr
    local = json.loads(skopeo("inspect", f"oci:{tmp_path / 'out' / 'image'}").stdout)
    base = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{base_ref}").stdout)
    assert json.loads(remote.stdout)["Layers"] == local["Layers"]
    assert json.loads(remote.stdout)["Layers"][:2] == base["Layers"]
    assert json.loads(remote.stdout)["Digest"] == str(art.digest)  # type: ignore[attr-defined]
    manifest = json.loads((tmp_path / "out" / "slimserve.json").read_text())
    assert manifest["package"]["push"] == {"ref": ref, "digest": str(art.digest), "uploaded": 4, "mounted": 2,  # type: ignore[attr-defined]
                                           "skipped": 0}

    # a new model to the same repository: only the model layer and the config travel
    before = len(registry.requests("PUT", "/blobs/uploads/"))
    again = package(tiny_bundle(tmp_path / "m2", seed=3), tmp_path / "out2", base_ref, registry.host, fake_closure,
                    push_ref=f"{registry.host}/test/app:2")
    assert len(again.pushed.skipped) == 4 and len(again.pushed.uploaded) == 2  # type: ignore[attr-defined]
    assert len(registry.requests("PUT", "/blobs/uploads/")) - before == 2


def test_chunked_push(tmp_path: Path, registry: Registry, base_ref: str, fake_closure: Path) -> None:
    ref = f"{registry.host}/test/chunked:1"
    before = len(registry.requests("PATCH", "/blobs/uploads/"))
    art = package(tiny_bundle(tmp_path / "m"), tmp_path / "out", base_ref, registry.host, fake_closure,
                  push_ref=ref, chunk_size=512)
    assert len(registry.requests("PATCH", "/blobs/uploads/")) - before >= 3
    remote = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{ref}").stdout)
    assert remote["Digest"] == str(art.digest)  # type: ignore[attr-defined]


def test_docker_family_base_stays_docker(tmp_path: Path, registry: Registry, fake_closure: Path) -> None:
    base = make_base_layout(tmp_path / "docker-base", family=DOCKER)
    ref = f"{registry.host}/test/docker-base:1"
    push_layout(base, ref)
    out = tmp_path / "out"
    package(tiny_bundle(tmp_path / "m"), out, ref, registry.host, fake_closure)
    image = validate_image(out / "image", base=layout.read(base))
    assert image.family is DOCKER and {la.media_type for la in image.layers} == {DOCKER.layer_gzip}
    assert skopeo("inspect", f"oci:{out / 'image'}").returncode == 0


def test_cloud_run_image_serves_http_on_port(tmp_path: Path, base_layout: Path, fake_closure: Path) -> None:
    out = tmp_path / "out"
    package_container(tiny_bundle(tmp_path / "m"), out, TARGET, base_ref=f"oci:{base_layout}",
                      platform="gcp-cloud-run", engine="none", closure=fake_closure)
    image = validate_image(out / "image", base=layout.read(base_layout))
    cfg = image.config["config"]
    assert cfg["Cmd"] == ["python3", "/app/http_app.py"] and "8080/tcp" in cfg["ExposedPorts"]
    assert "PYTHONPATH=/app/packages:/app" in cfg["Env"]
    assert (out / "context/runtime/waitress/__init__.py").is_file()  # the WSGI server ships in the runtime layer
    assert (out / "context/handler/http_app.py").is_file()


def test_image_size_for_check_matches_the_built_image(tmp_path: Path, base_layout: Path, fake_closure: Path) -> None:
    bundle = tiny_bundle(tmp_path / "m")
    art = package_container(bundle, tmp_path / "out", TARGET, base_ref=f"oci:{base_layout}", engine="none",
                            closure=fake_closure)
    size = container_image_size(bundle, TARGET, base_layout, closure=fake_closure)
    assert size.image_bytes == art.uncompressed_bytes and size.zipped_bytes == art.compressed_bytes
    assert size.layers == 5 and set(size.parts) == {"base", "runtime", "handler", "model"}


def test_engine_auto_falls_back_without_a_daemon(tmp_path: Path, base_layout: Path, fake_closure: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    package_container(tiny_bundle(tmp_path / "m"), tmp_path / "out", TARGET, base_ref=f"oci:{base_layout}",
                      engine="auto", closure=fake_closure)
    assert json.loads((tmp_path / "out/slimserve.json").read_text())["package"]["engine"] == "none"
    with pytest.raises(SlimserveError, match="--engine docker"):
        package_container(tiny_bundle(tmp_path / "m"), tmp_path / "out2", TARGET, base_ref=f"oci:{base_layout}",
                          engine="docker", closure=fake_closure)
    assert not (tmp_path / "out2").exists()


# -- bad input: one clear line, nothing half-written, a previous OUT untouched ----------------------------
def _fails(tmp_path: Path, closure: Path, base: str, match: str, insecure: tuple[str, ...] = (),
           **kw: object) -> None:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    (out / "slimserve.json").write_text('{"previous": "keep me"}')
    mark_output(out)  # a previous build slimserve may replace
    with pytest.raises(SlimserveError) as info:
        package_container(tiny_bundle(tmp_path / "m"), out, TARGET, base_ref=base, insecure_registries=insecure,
                          engine="none", closure=closure, **kw)  # type: ignore[arg-type]
    message = info.value.message
    assert match in message and "\n" not in message, message
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_MARKER, "slimserve.json"]
    assert (out / "slimserve.json").read_text() == '{"previous": "keep me"}'
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_unreachable_registry(tmp_path: Path, fake_closure: Path) -> None:
    host = f"127.0.0.1:{free_port()}"
    _fails(tmp_path, fake_closure, f"{host}/x/base:1", f"cannot reach registry {host}", (host,))


def test_https_to_a_plain_http_registry_hints_insecure(tmp_path: Path, registry: Registry, base_ref: str,
                                                       fake_closure: Path) -> None:
    with pytest.raises(ToolError) as info:
        package_container(tiny_bundle(tmp_path / "m"), tmp_path / "out", TARGET, base_ref=base_ref, engine="none",
                          closure=fake_closure)
    assert "cannot reach registry" in info.value.message and "--insecure-registry" in str(info.value.hint)


def test_unknown_base(tmp_path: Path, registry: Registry, fake_closure: Path) -> None:
    _fails(tmp_path, fake_closure, f"{registry.host}/test/nothing-here:1", "not found (404)", (registry.host,))


def test_base_for_the_wrong_architecture(tmp_path: Path, registry: Registry, fake_closure: Path) -> None:
    ref = f"{registry.host}/test/arm-only:1"
    push_layout(make_base_layout(tmp_path / "arm", arch="arm64"), ref)
    _fails(tmp_path, fake_closure, ref, "is linux/arm64, not linux/amd64", (registry.host,))


def test_index_without_the_requested_platform(tmp_path: Path, registry: Registry, fake_closure: Path) -> None:
    ref = f"{registry.host}/test/multi:1"
    push_layout(make_index_layout(tmp_path / "multi", ["arm64"]), ref, all_platforms=True)
    _fails(tmp_path, fake_closure, ref, "has no manifest for linux/amd64 (it has: linux/arm64)", (registry.host,))


def test_index_picks_the_requested_platform(tmp_path: Path, registry: Registry, fake_closure: Path) -> None:
    ref = f"{registry.host}/test/multi2:1"
    push_layout(make_index_layout(tmp_path / "multi", ["arm64", "amd64"]), ref, all_platforms=True)
    out = tmp_path / "out"
    package(tiny_bundle(tmp_path / "m"), out, ref, registry.host, fake_closure)
    assert validate_image(out / "image").platform.architecture == "amd64"
    assert json.loads((out / "slimserve.json").read_text())["package"]["base"]["index_digest"].startswith("sha256:")


def test_401_without_credentials_then_success_with_them(tmp_path: Path, auth_registry: Registry,
                                                        base_layout: Path, fake_closure: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    host = auth_registry.host
    proc = skopeo("copy", "--dest-tls-verify=false", "--insecure-policy", "--dest-creds", "slim:serve-secret",
                  f"oci:{base_layout}", f"docker://{host}/test/private:1")
    assert proc.returncode == 0, proc.stderr
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "empty-docker"))
    _fails(tmp_path, fake_closure, f"{host}/test/private:1", "401 unauthorized", (host,))
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_config(tmp_path / "wrong", host, password="nope")))
    _fails(tmp_path, fake_closure, f"{host}/test/private:1", "credentials were refused", (host,))
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_config(tmp_path / "docker", host)))
    art = package(tiny_bundle(tmp_path / "m"), tmp_path / "ok", f"{host}/test/private:1", host, fake_closure,
                  push_ref=f"{host}/test/private-app:1")
    assert art.pushed.digest == art.digest  # type: ignore[attr-defined]


class _HalfwayRegistry(http.server.BaseHTTPRequestHandler):
    """Accepts the first blob upload, then answers 500: a push that fails halfway."""

    uploads = 0

    def log_message(self, *args: object) -> None:
        return None

    def _send(self, code: int, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self) -> None:
        self._send(404)

    def do_POST(self) -> None:
        self._send(202, {"Location": "/v2/upload/1"})

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).uploads += 1
        self._send(201 if type(self).uploads == 1 else 500)


@pytest.fixture
def halfway_registry() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HalfwayRegistry)
    _HalfwayRegistry.uploads = 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_push_failing_halfway(tmp_path: Path, base_layout: Path, fake_closure: Path, halfway_registry: str) -> None:
    _fails(tmp_path, fake_closure, f"oci:{base_layout}", "failed after 1 of 6 blobs", (halfway_registry,),
           push_ref=f"{halfway_registry}/test/app:1")


# -- it runs: the handler answers from the unpacked root filesystem with the target Python ----------------
def _target_python() -> Path | None:
    from slimserve.packagers.interpreters import find_python

    return find_python("3.12")


@pytest.mark.slow
@needs_umoci
@pytest.mark.parametrize("platform", ["aws-lambda-container", "gcp-cloud-run"])
def test_unpacked_image_answers_like_the_model(tmp_path: Path, base_layout: Path, platform: str) -> None:
    python = _target_python()
    if python is None:
        missing("python3.12 (the target interpreter) is not installed")
    from slimserve.packagers.closure import build_closure

    bundle = tiny_bundle(tmp_path / "m")
    out = tmp_path / "out"
    package_container(bundle, out, TARGET, base_ref=f"oci:{base_layout}", platform=platform, engine="none",
                      closure=build_closure(TARGET, bundle.is_text))
    assert image_problems(out / "image", layout.read(base_layout)) == []
    proc = subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{out / 'image'}:latest", str(tmp_path / "b")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    rootfs = tmp_path / "b" / "rootfs"
    x = np.random.default_rng(7).standard_normal((3, 16)).astype(np.float32)
    app_dir = rootfs / ("var/task" if platform == "aws-lambda-container" else "app")
    paths = [str(app_dir)] if platform == "aws-lambda-container" else [str(rootfs / "app/packages"), str(app_dir)]
    script = (
        "import json, sys\n"
        f"sys.path[:0] = {paths!r}\n"
        "stdlib = [p for p in sys.path if 'rootfs' not in p]\n"
        f"assert all(not p.endswith('site-packages') for p in stdlib), stdlib\n"
        "import lambda_handler\n"
        "import numpy, onnxruntime\n"
        f"assert numpy.__file__.startswith({str(rootfs)!r}), numpy.__file__\n"
        f"event = {{'inputs': {{'x': {x.tolist()!r}}}}}\n"
        "if len(sys.argv) > 1:\n"
        "    import io, http_app\n"
        "    body = json.dumps(event).encode()\n"
        "    env = {'REQUEST_METHOD': 'POST', 'PATH_INFO': '/', 'CONTENT_LENGTH': str(len(body)),\n"
        "           'wsgi.input': io.BytesIO(body)}\n"
        "    status = []\n"
        "    out = json.loads(b''.join(http_app.app(env, lambda s, h: status.append(s))))\n"
        "    assert status == ['200 OK'], status\n"
        "else:\n"
        "    out = lambda_handler.handler(event)\n"
        "print(json.dumps(out))\n"
    )
    args = [str(python), "-I", "-S", "-c", script] + (["http"] if platform == "gcp-cloud-run" else [])
    run = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    got = np.asarray(json.loads(run.stdout.strip().splitlines()[-1])["outputs"]["y"], dtype=np.float32)
    import onnxruntime as ort

    want = ort.InferenceSession(str(bundle.model_path)).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
