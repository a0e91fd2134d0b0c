"""HTTP front for container platforms (Cloud Run, Azure Container Apps): a WSGI app plus its server.

Shipped as-is inside container images beside `model_runtime.py` and the model folder. Imports only the
standard library, the shipped runtime and (when present) `waitress`, a small pure-Python WSGI server
with a thread pool. The model loads once, at import; requests reuse the session.

    POST /            {"inputs": ["text", ...]}        -> {"embeddings": [...]} or {"labels", "scores"}
    POST /            {"inputs": {name: nested lists}}  -> {"outputs": {...}}   (tensor models)
    GET  /health      -> {"status": "ok", "task": ...}

Bad requests get a 400 with {"error": message}; the server never crashes on input.
Run: `python http_app.py` serves on 0.0.0.0:$PORT (8080 when unset), as Cloud Run expects.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from model_runtime import InputError, LoadedModel, available_cpus

MODEL_DIR = Path(os.environ.get("SLIMSERVE_MODEL_DIR") or Path(__file__).resolve().parent / "model")
MAX_BODY_BYTES = int(os.environ.get("SLIMSERVE_MAX_BODY_BYTES", str(6 * 1024 * 1024)))

MODEL = LoadedModel(MODEL_DIR)

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def predict(payload: Any) -> dict[str, Any]:
    """The answer for one decoded JSON request, or InputError with a message fit for the caller."""
    if not isinstance(payload, dict) or "inputs" not in payload:
        raise InputError('the request must be a JSON object with an "inputs" field')
    inputs = payload["inputs"]
    if MODEL.kind == "text":
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs or not all(isinstance(t, str) for t in inputs):
            raise InputError('"inputs" must be a non-empty list of strings')
        if len(inputs) > MODEL.max_batch:
            raise InputError(f"at most {MODEL.max_batch} inputs per request (got {len(inputs)})")
        return MODEL.predict_texts(inputs)
    if not isinstance(inputs, dict):
        raise InputError('"inputs" must be an object mapping input names to nested lists')
    return MODEL.predict_tensors(inputs)


def _reply(start_response: StartResponse, status: str, body: dict[str, Any]) -> list[bytes]:
    data = json.dumps(body).encode("utf-8")
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    method = environ.get("REQUEST_METHOD", "GET")
    path = environ.get("PATH_INFO", "/")
    if method == "GET" and path in ("/", "/health", "/healthz"):
        return _reply(start_response, "200 OK", {"status": "ok", "task": MODEL.spec.get("task")})
    if method != "POST" or path not in ("/", "/predict", "/invocations"):
        return _reply(start_response, "404 Not Found", {"error": f"no route for {method} {path}"})
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = -1
    if length <= 0 or length > MAX_BODY_BYTES:
        return _reply(start_response, "400 Bad Request",
                      {"error": f"the request needs a JSON body of at most {MAX_BODY_BYTES} bytes"})
    try:
        payload = json.loads(environ["wsgi.input"].read(length))
        return _reply(start_response, "200 OK", predict(payload))
    except (ValueError, UnicodeDecodeError) as exc:  # InputError is a ValueError; so is bad JSON
        message = str(exc) if isinstance(exc, InputError) else f"the body is not valid JSON: {exc}"
        return _reply(start_response, "400 Bad Request", {"error": message})


def serve(port: int | None = None, host: str = "0.0.0.0") -> None:
    port = int(os.environ.get("PORT", "8080")) if port is None else port
    try:
        import waitress
    except ImportError:  # the image ships waitress; this fallback keeps local runs dependency-free
        from socketserver import ThreadingMixIn
        from wsgiref.simple_server import WSGIServer, make_server

        class _Threading(ThreadingMixIn, WSGIServer):
            daemon_threads = True

        print(f"serving on {host}:{port} (wsgiref; waitress not installed)", file=sys.stderr, flush=True)
        make_server(host, port, app, server_class=_Threading).serve_forever()
        return
    print(f"serving on {host}:{port} (waitress)", file=sys.stderr, flush=True)
    waitress.serve(app, host=host, port=port, threads=max(2, available_cpus() * 2), ident="slimserve")


if __name__ == "__main__":
    serve()
