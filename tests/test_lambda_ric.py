"""The packaged function driven by AWS's own runtime interface client (`awslambdaric`, what Lambda's managed
Python runtimes run), against a Lambda Runtime API served by the test on 127.0.0.1.

The function runs as Lambda runs it: `python3.12 -m awslambdaric lambda_handler.handler` in a fresh,
isolated interpreter whose path is the unzipped function, the unzipped layer and the client (installed for
3.12 by `make lambda-ric`, part of `make test`). The server implements the endpoints the client uses: next
invocation, response, error, init error, and SnapStart's restore/next.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from slimserve.bundle import load_bundle
from slimserve.packagers.interpreters import find_python
from slimserve.packagers.lambda_target import package_lambda
from slimserve.packagers.target import Target
from tests.conftest import require
from tests.helpers_lambda import text_model_dir

RIC = Path(__file__).resolve().parents[1] / ".cache" / "lambda-ric" / "3.12"
API = "/2018-06-01/runtime"


@dataclass
class RuntimeApi:
    """The Lambda Runtime API for one function: events to hand out, and everything the client posted."""

    events: queue.Queue[tuple[str, Any]] = field(default_factory=queue.Queue)
    posts: queue.Queue[tuple[str, str, Any, dict[str, str]]] = field(default_factory=queue.Queue)
    gets: list[str] = field(default_factory=list)
    port: int = 0


def _handler_class(api: RuntimeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # http.server's naming
            api.gets.append(self.path)
            if self.path == f"{API}/invocation/next":
                request_id, event = api.events.get()  # blocks like the real API until there is work
                self._send(200, json.dumps(event).encode(), {
                    "Lambda-Runtime-Aws-Request-Id": request_id,
                    "Lambda-Runtime-Deadline-Ms": str(int(time.time() * 1000) + 60_000),
                    "Lambda-Runtime-Invoked-Function-Arn": "arn:aws:lambda:eu-west-1:123456789012:function:model",
                    "Lambda-Runtime-Trace-Id": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=1;Sampled=0",
                    "Content-Type": "application/json"})
            elif self.path == f"{API}/restore/next":
                self._send(200)
            else:
                self._send(404)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            try:
                payload: Any = json.loads(body) if body else None
            except ValueError:
                payload = body.decode("utf-8", "replace")
            parts = self.path.removeprefix(API + "/").split("/")
            request_id = parts[1] if len(parts) == 3 and parts[0] == "invocation" else ""
            kind = parts[-1] if request_id else "/".join(parts)
            api.posts.put((kind, request_id, payload, dict(self.headers)))
            self._send(202, b'{"status": "OK"}', {"Content-Type": "application/json"})

    return Handler


@pytest.fixture
def runtime_api() -> Iterator[RuntimeApi]:
    api = RuntimeApi()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(api))
    server.daemon_threads = True
    api.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield api
    server.shutdown()


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny text model packaged for python3.12 and unzipped like Lambda does (task/ and opt/)."""
    root = tmp_path_factory.mktemp("ric")
    package_lambda(load_bundle(text_model_dir(root / "model", max_batch=4, max_chars=200)), root / "pkg",
                   Target("3.12"), memory_mb=512)
    for name, where in (("layer.zip", "opt"), ("function.zip", "task")):
        with zipfile.ZipFile(root / "pkg" / name) as zf:
            zf.extractall(root / where)
    return root


def _start(root: Path, api: RuntimeApi, **extra_env: str) -> subprocess.Popen[str]:
    require(RIC.is_dir(), "awslambdaric for python3.12 (`make lambda-ric`, part of `make test`)")
    python = find_python("3.12")
    require(python is not None, "python3.12")
    boot = ("import runpy, sys; sys.path[:0] = sys.argv[1].split(':'); sys.argv = ['awslambdaric', sys.argv[2]]; "
            "runpy.run_module('awslambdaric', run_name='__main__')")
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{api.port}",
           "LAMBDA_TASK_ROOT": str(root / "task"), "AWS_LAMBDA_FUNCTION_NAME": "model",
           "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512", "AWS_LAMBDA_FUNCTION_VERSION": "1",
           "AWS_REGION": "eu-west-1", "OPENBLAS_NUM_THREADS": "1", **extra_env}
    path = ":".join(str(p) for p in (root / "task", root / "opt" / "python", RIC))
    return subprocess.Popen([str(python), "-I", "-S", "-c", boot, path, "lambda_handler.handler"],
                            cwd=root / "task", env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _collect(api: RuntimeApi, count: int, proc: subprocess.Popen[str], timeout: float = 120) -> list[tuple[str, str, Any]]:
    posts = []
    deadline = time.monotonic() + timeout
    while len(posts) < count:
        try:
            kind, request_id, payload, _ = api.posts.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            proc.kill()
            raise AssertionError(f"only {len(posts)} of {count} posts; function output:\n{proc.communicate()[0]}") from None
        posts.append((kind, request_id, payload))
    return posts


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.kill()
    return proc.communicate(timeout=30)[0]


def test_awslambdaric_drives_the_packaged_handler(packaged: Path, runtime_api: RuntimeApi) -> None:
    events = [
        ("req-1", {"inputs": ["serverless models start fast", "hello world"]}),
        ("req-2", {"version": "2.0", "rawPath": "/", "requestContext": {"http": {"method": "POST"}},
                   "body": json.dumps({"inputs": ["stay small"]}), "isBase64Encoded": False}),
        ("req-3", {"inputs": 3}),
        ("req-4", {"version": "2.0", "rawPath": "/health", "requestContext": {"http": {"method": "GET"}}}),
    ]
    for item in events:
        runtime_api.events.put(item)
    proc = _start(packaged, runtime_api)
    posts = _collect(runtime_api, len(events), proc)
    _stop(proc)
    by_id = {request_id: (kind, payload) for kind, request_id, payload in posts}
    assert {kind for kind, _ in by_id.values()} == {"response"}, posts
    direct = by_id["req-1"][1]
    assert len(direct["embeddings"]) == 2 and len(direct["embeddings"][0]) > 0
    http = by_id["req-2"][1]
    assert http["statusCode"] == 200 and len(json.loads(http["body"])["embeddings"]) == 1
    assert by_id["req-3"][1] == {"error": '"inputs" must be a string or a list of strings'}
    assert by_id["req-4"][1]["statusCode"] == 200 and json.loads(by_id["req-4"][1]["body"])["status"] == "ok"


def test_an_init_failure_reaches_init_error_with_a_useful_message(packaged: Path, runtime_api: RuntimeApi,
                                                                   tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    (broken / "task").mkdir(parents=True)
    (broken / "opt").symlink_to(packaged / "opt")
    for item in (packaged / "task").iterdir():
        if item.is_file():  # copies: the handler finds its model beside its own resolved path
            (broken / "task" / item.name).write_bytes(item.read_bytes())
    (broken / "task" / "model").mkdir()
    (broken / "task" / "model" / "slimserve.json").write_text((packaged / "task" / "model" / "slimserve.json").read_text())
    proc = _start(broken, runtime_api)
    kind, _, payload = _collect(runtime_api, 1, proc)[0]
    output = _stop(proc)
    assert kind == "init/error", (kind, payload, output)
    assert payload["errorType"] and "model.onnx" in payload["errorMessage"], payload


def test_snapstart_init_runs_the_hooks_and_serves_after_restore(packaged: Path, runtime_api: RuntimeApi) -> None:
    runtime_api.events.put(("req-1", {"inputs": ["after the restore"]}))
    proc = _start(packaged, runtime_api, AWS_LAMBDA_INITIALIZATION_TYPE="snap-start")
    (kind, request_id, payload), = _collect(runtime_api, 1, proc)
    _stop(proc)
    assert runtime_api.gets[0] == f"{API}/restore/next", runtime_api.gets  # snapshot taken before any invocation
    assert kind == "response" and request_id == "req-1" and len(payload["embeddings"]) == 1
