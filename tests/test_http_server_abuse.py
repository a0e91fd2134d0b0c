"""The container server as shipped (http_app.py + waitress + the runtime closure, python3.12 on 127.0.0.1):
stalled clients cannot starve real requests or the health check, and SIGTERM drains before exiting 0.

Every test bounds its connections and its time and stops the server itself.
"""

from __future__ import annotations

import http.client
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from slimserve.packagers.interpreters import find_python
from slimserve.runtime import RUNTIME_DIR, handler_modules
from tests.helpers_lambda import _manifest, tensor_model_dir

PYTHON = "3.12"
pytestmark = pytest.mark.skipif(find_python(PYTHON) is None, reason=f"python{PYTHON} is not installed")
STALLED = 300  # waitress's default connection_limit is 100: this many half-open clients blocked everything


@pytest.fixture(scope="module")
def sites() -> list[Path]:
    """The runtime closure and waitress exactly as the Cloud Run image ships them (/app/packages)."""
    from slimserve.packagers.closure import build_closure
    from slimserve.packagers.container import _server_site, platform_spec
    from slimserve.packagers.target import Target

    target = Target(PYTHON)
    return [build_closure(target, False), *_server_site(target, platform_spec("gcp-cloud-run"))]


def slow_model_dir(folder: Path) -> Path:
    """y = x @ I, `n` times in an ONNX Loop: the request chooses how long inference takes (≈1 µs a turn)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    vi = helper.make_tensor_value_info
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("MatMul", ["h_in", "w"], ["h_out"])],
        "body", [vi("i", TensorProto.INT64, []), vi("cond_in", TensorProto.BOOL, []), vi("h_in", TensorProto.FLOAT, None)],
        [vi("cond_out", TensorProto.BOOL, []), vi("h_out", TensorProto.FLOAT, None)])
    graph = helper.make_graph(
        [helper.make_node("Squeeze", ["n"], ["m"]), helper.make_node("Loop", ["m", "true", "x"], ["y"], body=body)],
        "slow", [vi("x", TensorProto.FLOAT, ["batch", 16]), vi("n", TensorProto.INT64, [1])],
        [vi("y", TensorProto.FLOAT, ["batch", 16])],
        [numpy_helper.from_array(np.eye(16, dtype=np.float32), "w"), numpy_helper.from_array(np.array(True), "true")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(folder / "model.onnx"))
    _manifest(folder, "model.onnx", {"kind": "tensor", "task": "tensor", "max_batch": 8},
              [{"name": "x", "dtype": "float32", "shape": ["batch", 16]}, {"name": "n", "dtype": "int64", "shape": [1]}],
              [{"name": "y", "dtype": "float32", "shape": ["batch", 16]}])
    return folder


class Server:
    """`python3.12 -S /app/http_app.py` with PYTHONPATH=/app/packages:/app, as the image's CMD runs it."""

    def __init__(self, sites: list[Path], model: Path, work: Path, env: dict[str, str] | None = None) -> None:
        app = work / "app"
        app.mkdir()
        for name in handler_modules("http_app.py", "lambda_handler.py"):
            shutil.copyfile(RUNTIME_DIR / name, app / name)
        exe = find_python(PYTHON)
        assert exe is not None
        full_env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PORT": "0", "SLIMSERVE_MODEL_DIR": str(model),
                    "PYTHONPATH": os.pathsep.join([*map(str, sites), str(app)]), "PYTHONUNBUFFERED": "1",
                    **(env or {})}
        self.proc = subprocess.Popen([str(exe), "-S", str(app / "http_app.py")], cwd=work, env=full_env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.log: list[str] = []
        self.port = int(self.wait_for("serving on").split(":")[-1].split()[0])

    def wait_for(self, text: str, timeout: float = 60) -> str:
        assert self.proc.stderr is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stderr], [], [], 0.2)
            if ready:
                line = self.proc.stderr.readline()
                self.log.append(line)
                if text in line:
                    return line
                if not line and self.proc.poll() is not None:
                    break
        raise AssertionError(f"no {text!r} from the server: {''.join(self.log)[-2000:]}")

    def request(self, method: str, path: str, body: Any = None, timeout: float = 10) -> tuple[int, dict[str, Any]]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            data = None if body is None else json.dumps(body).encode()
            conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read())
        finally:
            conn.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def server(sites: list[Path], tmp_path: Path) -> Iterator[Server]:
    srv = Server(sites, tensor_model_dir(tmp_path / "model", max_batch=8), tmp_path)
    yield srv
    srv.stop()


def test_stalled_clients_do_not_starve_requests_or_health(server: Server) -> None:
    stalled: list[socket.socket] = []
    try:
        for _ in range(STALLED):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sock.sendall(b"GET /heal")  # half a request line, then silence
            stalled.append(sock)
        time.sleep(0.5)  # let the server's loop take every one of them
        started = time.monotonic()
        status, body = server.request("GET", "/health", timeout=5)
        assert status == 200 and body["status"] == "ok"
        status, body = server.request("POST", "/predict", {"inputs": {"x": [[0.5] * 16]}}, timeout=5)
        assert status == 200 and len(body["outputs"]["y"][0]) == 4
        assert time.monotonic() - started < 5
    finally:
        for sock in stalled:
            sock.close()


def test_oversized_bodies_and_headers_are_refused(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:  # refused before it is sent
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (7 << 20))
        assert sock.recv(64).split(b" ")[1] == b"413"
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (128 << 10) + b"\r\n\r\n")
        answer = sock.recv(64)
        assert answer.split(b" ")[1] == b"431", answer


def _in_background(server: Server, body: Any) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["status"], result["body"] = server.request("POST", "/predict", body, timeout=30)
        except Exception as exc:  # noqa: BLE001  # the test reports what the client saw
            result["error"] = repr(exc)
        result["at"] = time.monotonic()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def _turns_for(server: Server, seconds: float) -> int:
    """Loop turns that keep this machine's server busy for about `seconds` (timed on 200,000 turns)."""
    started = time.monotonic()
    status, _ = server.request("POST", "/predict", {"inputs": {"x": [[1.0] * 16], "n": [200_000]}}, timeout=30)
    assert status == 200
    return int(200_000 * seconds / max(time.monotonic() - started, 1e-3))


def test_sigterm_finishes_in_flight_requests_then_exits_0(sites: list[Path], tmp_path: Path) -> None:
    srv = Server(sites, slow_model_dir(tmp_path / "slow"), tmp_path)
    try:
        thread, result = _in_background(srv, {"inputs": {"x": [[1.0] * 16], "n": [_turns_for(srv, 3.0)]}})
        time.sleep(0.7)
        sent = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        srv.wait_for("draining", timeout=5)
        with pytest.raises(OSError):  # no longer listening
            socket.create_connection(("127.0.0.1", srv.port), timeout=2).close()
        thread.join(timeout=30)
        assert result.get("status") == 200 and result["at"] > sent, result  # answered after the SIGTERM
        assert srv.proc.wait(timeout=15) == 0
    finally:
        srv.stop()


def test_sigterm_waits_no_longer_than_the_grace_period(sites: list[Path], tmp_path: Path) -> None:
    srv = Server(sites, slow_model_dir(tmp_path / "slow"), tmp_path, {"SLIMSERVE_GRACE_S": "1"})
    try:
        thread, _ = _in_background(srv, {"inputs": {"x": [[1.0] * 16], "n": [_turns_for(srv, 15.0)]}})
        time.sleep(0.7)
        sent = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(timeout=10) == 0
        assert time.monotonic() - sent < 4
        thread.join(timeout=30)
    finally:
        srv.stop()


def test_busy_predictions_leave_health_answered_and_excess_gets_503(sites: list[Path], tmp_path: Path) -> None:
    """Four threads: two may predict (one runs, one waits its turn), two are kept for health checks."""
    srv = Server(sites, slow_model_dir(tmp_path / "slow"), tmp_path, {"SLIMSERVE_THREADS": "4"})
    try:
        slow = {"inputs": {"x": [[1.0] * 16], "n": [_turns_for(srv, 2.0)]}}
        calls = [_in_background(srv, slow) for _ in range(4)]
        time.sleep(0.5)
        started = time.monotonic()
        status, body = srv.request("GET", "/health", timeout=5)
        assert status == 200 and body["status"] == "ok" and time.monotonic() - started < 1.0
        for thread, _ in calls:
            thread.join(timeout=30)
        statuses = sorted(result.get("status", 0) for _, result in calls)
        assert statuses == [200, 200, 503, 503], [result for _, result in calls]
    finally:
        srv.stop()
