# ruff: noqa: F811  -- the runtime_api fixture is imported from test_lambda_ric and taken as a parameter
"""The Lambda container image's entry point, driven by AWS's runtime interface client from the unpacked image.

slimserve's aws-lambda-container image keeps the base's ENTRYPOINT (/lambda-entrypoint.sh) and sets CMD to
the handler: in AWS's Python base images that entry point exports `_HANDLER=$1` and execs /var/runtime/bootstrap,
which runs `python3.x -m awslambdaric $_HANDLER` from the working directory /var/task with /var/runtime (where
the base carries awslambdaric) on the path. slimserve's own layers therefore carry no runtime client: the
base provides it.

The test builds a base laid out like AWS's (entry point, bootstrap, the real awslambdaric for 3.12 in
/var/runtime, the base's environment; no interpreter: the host's python3.12 stands in for /var/lang/bin's),
packages a model on it daemonlessly, unpacks the image with umoci, reads the process umoci derives from the
image config (entry point + CMD, environment, working directory) and runs that chain from the rootfs
against a Lambda Runtime API served on 127.0.0.1 (tests/test_lambda_ric.py): invocations, HTTP events, a bad
request, and an init failure reaching /init/error.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from slimserve.bundle import load_bundle
from slimserve.packagers.container import package_container
from slimserve.packagers.interpreters import find_python
from slimserve.packagers.oci import layout
from slimserve.packagers.oci.image import OCI, Addendum, Image, append_layers, canonical
from slimserve.packagers.oci.layer import build_layer
from slimserve.packagers.reproducible import tree_entries
from slimserve.packagers.target import Target
from tests.conftest import build_tiny_onnx, require
from tests.test_lambda_ric import RIC, RuntimeApi, _collect, _stop, runtime_api  # noqa: F401  (fixture)

TARGET = Target("3.12", "x86_64")

# What AWS's base images run (public.ecr.aws/lambda/python:3.x): the entry point picks the emulator when no
# Runtime API is given, else the bootstrap; the bootstrap runs the client on the handler.
ENTRYPOINT_SH = b"""#!/bin/sh
if [ $# -ne 1 ]; then
  echo "entrypoint requires the handler name to be the first argument" 1>&2
  exit 142
fi
export _HANDLER="$1"

RUNTIME_ENTRYPOINT=/var/runtime/bootstrap
if [ -z "${AWS_LAMBDA_RUNTIME_API}" ]; then
  exec /usr/local/bin/aws-lambda-rie $RUNTIME_ENTRYPOINT
else
  exec $RUNTIME_ENTRYPOINT
fi
"""
BOOTSTRAP_SH = b"""#!/bin/sh
export PYTHONPATH="/var/runtime:${PYTHONPATH:-}"
exec /var/lang/bin/python3.12 -m awslambdaric "$_HANDLER"
"""
BASE_ENV = ["LANG=en_US.UTF-8", "TZ=:/etc/localtime", "PATH=/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:/opt/bin",
            "LAMBDA_TASK_ROOT=/var/task", "LAMBDA_RUNTIME_DIR=/var/runtime",
            "AWS_EXECUTION_ENV=AWS_Lambda_python3.12"]


def lambda_like_base(work: Path) -> Path:
    """An OCI layout shaped like AWS's python:3.12 base, with the real awslambdaric in /var/runtime."""
    require(RIC.is_dir(), "awslambdaric for python3.12 (`make lambda-ric`, part of `make test`)")
    config = {"architecture": "amd64", "os": "linux",
              "config": {"Env": BASE_ENV, "WorkingDir": "/var/task", "Entrypoint": ["/lambda-entrypoint.sh"],
                         "Cmd": ["app.handler"]},
              "rootfs": {"type": "layers", "diff_ids": []}, "history": []}
    files: dict[str, Any] = {"etc/os-release": b'NAME="Amazon Linux"\nVERSION_ID="2023"\n',
                             "lambda-entrypoint.sh": ENTRYPOINT_SH, "var/runtime/bootstrap": BOOTSTRAP_SH}
    files.update(tree_entries(RIC, "var/runtime"))
    rootfs = build_layer({k: v for k, v in files.items() if "__pycache__" not in k}, work / "rootfs.tar.gz", epoch=0)
    task = build_layer({"var/task/.keep": b""}, work / "task.tar.gz", epoch=0)
    image = append_layers(Image(json.dumps(config).encode(), (), OCI), Addendum(rootfs, "ADD rootfs /"),
                          Addendum(task, "WORKDIR /var/task"))
    root = work / "base"
    layout.write(canonical(image, 0), root)
    return root


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the model, the unpacked image bundle: config.json + rootfs/)."""
    require(shutil.which("umoci"), "umoci (Debian package; `make system-deps`)")
    from slimserve.packagers.closure import build_closure

    work = tmp_path_factory.mktemp("container-ric")
    model = build_tiny_onnx(work / "tiny.onnx")
    bundle = load_bundle(model)
    out = work / "out"
    package_container(bundle, out, TARGET, base_ref=f"oci:{lambda_like_base(work)}", platform="aws-lambda-container",
                      engine="none", closure=build_closure(TARGET, bundle.runtime_extra))
    proc = subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{out / 'image'}:latest", str(work / "bundle")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return model, work / "bundle"


def _process(bundle: Path) -> dict[str, Any]:
    """The process the image runs, as umoci derives it from the image config (OCI runtime spec)."""
    process: dict[str, Any] = json.loads((bundle / "config.json").read_text())["process"]
    return process


def _start(bundle: Path, api: RuntimeApi) -> subprocess.Popen[str]:
    """Entry point + CMD from the rootfs: what /lambda-entrypoint.sh and /var/runtime/bootstrap exec, i.e.
    `python3.12 -m awslambdaric <CMD>` in the image's working directory with /var/runtime on the path; the
    image's environment with its paths moved into the rootfs."""
    rootfs = bundle / "rootfs"
    process = _process(bundle)
    entrypoint, handler = process["args"]
    assert (rootfs / entrypoint.lstrip("/")).read_bytes() == ENTRYPOINT_SH
    assert b'-m awslambdaric "$_HANDLER"' in (rootfs / "var/runtime/bootstrap").read_bytes()
    python = find_python("3.12")
    require(python is not None, "python3.12")
    env = dict(item.split("=", 1) for item in process["env"])
    env.update({key: str(rootfs / value.lstrip("/")) for key, value in env.items()
                if key in ("LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR")})
    env.update(PATH="/usr/bin:/bin", AWS_LAMBDA_RUNTIME_API=f"127.0.0.1:{api.port}", _HANDLER=handler,
               AWS_LAMBDA_FUNCTION_NAME="model", AWS_LAMBDA_FUNCTION_MEMORY_SIZE="512", AWS_REGION="eu-west-1")
    cwd = rootfs / process["cwd"].lstrip("/")
    # -m puts the working directory first on sys.path; the bootstrap's PYTHONPATH adds /var/runtime.
    boot = ("import runpy, sys; sys.path[:0] = sys.argv[1].split(':'); sys.argv = ['awslambdaric', sys.argv[2]]; "
            "runpy.run_module('awslambdaric', run_name='__main__')")
    path = f"{cwd}:{rootfs / 'var/runtime'}"
    return subprocess.Popen([str(python), "-I", "-S", "-c", boot, path, handler], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_the_image_runs_its_handler_under_the_bases_runtime_client(unpacked: tuple[Path, Path],
                                                                    runtime_api: RuntimeApi) -> None:
    import onnxruntime as ort

    model, bundle = unpacked
    process = _process(bundle)
    assert process["args"] == ["/lambda-entrypoint.sh", "lambda_handler.handler"]  # the base's entry point kept
    assert process["cwd"] == "/var/task"
    rootfs = bundle / "rootfs"
    assert not (rootfs / "var/task/awslambdaric").exists()  # the client is the base's, not slimserve's
    assert (rootfs / "var/task/numpy").is_dir() and (rootfs / "var/task/model" / model.name).is_file()
    x = np.random.default_rng(11).standard_normal((3, 16)).astype(np.float32)
    events = [
        ("req-1", {"inputs": {"x": x.tolist()}}),
        ("req-2", {"version": "2.0", "rawPath": "/", "requestContext": {"http": {"method": "POST"}},
                   "body": json.dumps({"inputs": {"x": x[:1].tolist()}}), "isBase64Encoded": False}),
        ("req-3", {"inputs": {"x": "not a tensor"}}),
        ("req-4", {"version": "2.0", "rawPath": "/health", "requestContext": {"http": {"method": "GET"}}}),
        ("req-5", {"version": "2.0", "rawPath": "/", "requestContext": {"http": {"method": "POST"}},
                   "body": "{oops", "isBase64Encoded": False}),
    ]
    for item in events:
        runtime_api.events.put(item)
    proc = _start(bundle, runtime_api)
    posts = _collect(runtime_api, len(events), proc)
    output = _stop(proc)
    by_id = {request_id: (kind, payload) for kind, request_id, payload in posts}
    assert {kind for kind, _ in by_id.values()} == {"response"}, (posts, output)
    want = ort.InferenceSession(str(model)).run(None, {"x": x})[0]
    np.testing.assert_allclose(np.asarray(by_id["req-1"][1]["outputs"]["y"], dtype=np.float32), want,
                               rtol=1e-5, atol=1e-5)
    http = by_id["req-2"][1]
    assert http["statusCode"] == 200
    np.testing.assert_allclose(np.asarray(json.loads(http["body"])["outputs"]["y"], dtype=np.float32), want[:1],
                               rtol=1e-5, atol=1e-5)
    assert set(by_id["req-3"][1]) == {"error"} and by_id["req-3"][1]["error"], by_id["req-3"]
    assert by_id["req-4"][1]["statusCode"] == 200 and json.loads(by_id["req-4"][1]["body"])["status"] == "ok"
    assert by_id["req-5"][1]["statusCode"] == 400 and "error" in json.loads(by_id["req-5"][1]["body"])
    init = [json.loads(line) for line in output.splitlines() if line.startswith("{") and '"init"' in line]
    assert init, output  # the handler's structured init line, on the client's stdout as Lambda collects it


@pytest.mark.slow
def test_an_image_without_its_model_reports_an_init_error(unpacked: tuple[Path, Path], runtime_api: RuntimeApi,
                                                          tmp_path: Path) -> None:
    model, bundle = unpacked
    broken = tmp_path / "bundle"
    shutil.copytree(bundle, broken, symlinks=True)
    (broken / "rootfs/var/task/model" / model.name).unlink()
    proc = _start(broken, runtime_api)
    kind, _, payload = _collect(runtime_api, 1, proc)[0]
    output = _stop(proc)
    assert kind == "init/error", (kind, payload, output)
    assert payload["errorType"] and model.name in payload["errorMessage"], payload


def test_a_base_without_an_entrypoint_is_refused(tmp_path: Path) -> None:
    """Without the base's entry point nothing would start a runtime client: refused before anything is written."""
    from slimserve.errors import SlimserveError

    config = {"architecture": "amd64", "os": "linux", "config": {"Env": BASE_ENV, "Cmd": ["python3"]},
              "rootfs": {"type": "layers", "diff_ids": []}, "history": []}
    layer = build_layer({"etc/os-release": b'NAME="plain"\n'}, tmp_path / "rootfs.tar.gz", epoch=0)
    base = tmp_path / "plain"
    layout.write(canonical(append_layers(Image(json.dumps(config).encode(), (), OCI), Addendum(layer, "ADD /")), 0),
                 base)
    site = tmp_path / "site"
    (site / "numpy").mkdir(parents=True)
    (site / "numpy" / "__init__.py").write_text("# stand-in\n")
    bundle = load_bundle(build_tiny_onnx(tmp_path / "tiny.onnx"))
    with pytest.raises(SlimserveError, match="no ENTRYPOINT") as caught:
        package_container(bundle, tmp_path / "out", TARGET, base_ref=f"oci:{base}", platform="aws-lambda-container",
                          engine="none", closure=site)
    assert "awslambdaric" in (caught.value.hint or "")
    assert not (tmp_path / "out").exists()
