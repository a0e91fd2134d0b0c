"""HTTP front for container platforms (Cloud Run, Azure Container Apps): a WSGI app plus its server.

Shipped as-is inside container images beside `lambda_handler.py`, `model_runtime.py` and the model
folder. Requests go through `lambda_handler.handler` as API-Gateway-style events, so validation, limits
and answers are exactly the Lambda ones (one implementation). Imports only the standard library, the
shipped runtime and (when present) `waitress`, a small pure-Python WSGI server with a thread pool.
The model loads once, at import; requests reuse the session.

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
from typing import Any

import lambda_handler
from model_runtime import available_cpus

MAX_BODY_BYTES = int(os.environ.get("SLIMSERVE_MAX_BODY_BYTES", str(6 * 1024 * 1024)))

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 413: "Content Too Large",
            500: "Internal Server Error"}
_HEALTH = ("/", "/health", "/healthz")
_PREDICT = ("/", "/predict", "/invocations")


def _reply(start_response: StartResponse, status: int, body: str,
           extra: list[tuple[str, str]] | None = None) -> list[bytes]:
    data = body.encode("utf-8")
    start_response(f"{status} {_REASONS.get(status, 'Error')}",
                    [("Content-Type", "application/json"), ("Content-Length", str(len(data))), *(extra or [])])
    return [data]


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """WSGI front of `lambda_handler.handler`: one place validates requests and runs the model."""
    method = environ.get("REQUEST_METHOD", "GET")
    path = environ.get("PATH_INFO", "/")
    if method == "GET" and path in _HEALTH:
        return _reply(start_response, 200, json.dumps({"status": "ok", "task": lambda_handler.MODEL.spec.get("task")}))
    if path not in _HEALTH + _PREDICT:
        return _reply(start_response, 404, json.dumps({"error": f"no route for {path}"}))
    if method != "POST":  # a known path with the wrong method (RFC 9110 section 15.5.6: 405 with Allow)
        allow = "GET, POST" if path == "/" else ("GET" if path in _HEALTH else "POST")
        return _reply(start_response, 405, json.dumps({"error": f"{method} is not allowed on {path} (use {allow})"}),
                      [("Allow", allow)])
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > MAX_BODY_BYTES:
        return _reply(start_response, 413, json.dumps({"error": f"request body over {MAX_BODY_BYTES} bytes"}))
    raw = environ["wsgi.input"].read(length) if length > 0 else b""
    try:
        body = raw.decode("utf-8")
    except UnicodeDecodeError:
        return _reply(start_response, 400, json.dumps({"error": "request body is not UTF-8"}))
    answer = lambda_handler.handler({"httpMethod": method, "body": body, "isBase64Encoded": False})
    return _reply(start_response, int(answer["statusCode"]), str(answer["body"]))


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
