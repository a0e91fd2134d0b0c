"""HTTP front for container platforms (Cloud Run, ECS, Azure Container Apps): a WSGI app plus its server.

Shipped as-is inside container images beside `lambda_handler.py`, `model_runtime.py` and the model
folder. Routing, validation, limits and answers are `lambda_handler`'s (`ROUTES`, `respond`): one
implementation for both fronts. Imports only the standard library, the shipped runtime and (when present)
`waitress`, a small pure-Python WSGI server with a thread pool. The model loads once, at import.

    POST /, /predict, /invocations   {"inputs": [...]}  -> the prediction (see lambda_handler); image
                                     models also take an image file as the body (Content-Type: image/*);
                                     text generation with "stream": true answers server-sent events,
                                     one per token (text-generation-inference's events)
    POST /v1/chat/completions        OpenAI chat completions (text generation), "stream": true too
    GET  /, /health, /healthz        -> {"status": "ok", "task": ..., "limits": {...}}
    anything else                    -> 404, or 405 with Allow on a known path

Bad requests get a 400 with {"error": message}, requests over a limit a 413 naming it; the server never
crashes on input. Run: `python http_app.py` serves on 0.0.0.0:$PORT (8080 when unset), as Cloud Run expects.

Server settings, chosen so that slow or stalled clients cannot starve real requests or the health check
(waitress's defaults let 100 half-open connections stop it accepting for two minutes). Each has a variable:
  SLIMSERVE_CONNECTION_LIMIT  1000  open connections; poll() instead of select() so more than 1,024 work,
                                    and never above the open-files limit (raised to its hard limit) - 64
  SLIMSERVE_CHANNEL_TIMEOUT_S 75    a connection without a complete request is closed after this idle time
                                    (above AWS ALB's 60 s keep-alive, so a balancer never reuses a closed one)
  cleanup_interval            5 s   how often idle connections are looked for
  SLIMSERVE_MAX_BODY_BYTES    6 MiB request body (Lambda's payload limit); larger is a 413 before it is read
  max_request_header_size     64 KiB
  SLIMSERVE_THREADS           16    worker threads; two are kept for health checks and errors: at most
                                    threads - 2 predictions wait or run, more get a 503 with Retry-After
  SLIMSERVE_CONCURRENCY       1     predictions running at once (each already uses every CPU through
                                    onnxruntime's threads; the memory `check` measured is for one)
  backlog                     2048  pending connections the kernel queues while all slots are busy
Graceful shutdown: on SIGTERM (Cloud Run and ECS send it before stopping an instance) the server stops
listening, answers every request it has received, closes each connection once it is idle, and exits 0 once they are done or after SLIMSERVE_GRACE_S seconds (default 10), whichever comes first.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import lambda_handler
from model_runtime import InputError, LimitError

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 413: "Content Too Large",
            500: "Internal Server Error", 503: "Service Unavailable"}
HEALTH_THREADS = 2  # worker threads predictions may never take, so health checks are answered while busy


def _env_number(name: str, default: float, environ: Mapping[str, str] | None = None) -> float:
    raw = (os.environ if environ is None else environ).get(name, "")
    try:
        value = float(raw) if raw.strip() else default
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {raw!r}")
    return value


MAX_BODY_BYTES = int(_env_number("SLIMSERVE_MAX_BODY_BYTES", 6 * 1024 * 1024))
THREADS = max(HEALTH_THREADS + 1, int(_env_number("SLIMSERVE_THREADS", 16)))
CONCURRENCY = int(_env_number("SLIMSERVE_CONCURRENCY", 1))
GRACE_S = _env_number("SLIMSERVE_GRACE_S", 10.0)
_SLOTS = threading.BoundedSemaphore(THREADS - HEALTH_THREADS)  # predictions waiting or running
_RUNNING = threading.BoundedSemaphore(CONCURRENCY)  # predictions running


def _reply(start_response: StartResponse, status: int, body: str,
           extra: Iterable[tuple[str, str]] = ()) -> list[bytes]:
    data = body.encode("utf-8")
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(data))), *extra]
    start_response(f"{status} {_REASONS.get(status, 'Error')}", headers)
    return [data]


def _read_json(environ: dict[str, Any]) -> Any:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise InputError("Content-Length is not a number") from None
    if length > MAX_BODY_BYTES:
        raise LimitError(f"request body over {MAX_BODY_BYTES} bytes (SLIMSERVE_MAX_BODY_BYTES)")
    raw = environ["wsgi.input"].read(length) if length > 0 else b""
    if not raw:
        raise InputError('empty request body: POST a JSON object like {"inputs": [...]}')
    content_type = str(environ.get("CONTENT_TYPE") or "")
    if lambda_handler.media_type(content_type) not in ("application/json", "text/json", "text/plain", ""):
        return lambda_handler.raw_payload(content_type, raw)
    try:
        return lambda_handler.parse_json(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise InputError("request body is not UTF-8") from None


def _request_id(environ: dict[str, Any]) -> str | None:
    """The caller's or the platform's request id for the log line (Cloud Run sends X-Cloud-Trace-Context)."""
    value = environ.get("HTTP_X_REQUEST_ID") or environ.get("HTTP_X_CLOUD_TRACE_CONTEXT")
    return str(value)[:128] if value else None


class _Stream:
    """A server-sent-events body: waitress sends each event as it is yielded (chunked), and calls `close`
    when the stream ends or the client goes away, which frees the prediction's slot and logs the request."""

    def __init__(self, lines: Iterator[str], done: Callable[[], None]) -> None:
        self._lines, self._done, self._closed = lines, done, False

    def __iter__(self) -> Iterator[bytes]:
        for line in self._lines:
            yield line.encode("utf-8")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            close = getattr(self._lines, "close", None)
            if close is not None:
                close()
            self._done()


SSE_HEADERS = [("Content-Type", "text/event-stream; charset=utf-8"), ("Cache-Control", "no-cache"),
               ("X-Accel-Buffering", "no")]  # proxies (nginx) must not buffer the events


def _predict(environ: dict[str, Any], start_response: StartResponse, method: str, path: str,
             action: str) -> Iterable[bytes]:
    """A prediction, holding a running slot (`_RUNNING`) until it is answered: for a stream, until its
    last event is sent, so concurrent streams never exceed SLIMSERVE_CONCURRENCY generate loops."""
    request_id, started = _request_id(environ), time.perf_counter()
    _RUNNING.acquire()
    released = streaming = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            _RUNNING.release()
            _SLOTS.release()

    try:
        failure: InputError | None = None
        payload: Any = None
        try:
            payload = _read_json(environ)
            if lambda_handler.wants_stream(payload):
                lines = lambda_handler.open_stream(action, payload)

                def done() -> None:
                    release()
                    lambda_handler.record(request_id, method, path, 200, started)

                start_response("200 OK", list(SSE_HEADERS))
                streaming = True
                return _Stream(lines, done)
        except InputError as exc:  # unreadable, or a stream refused before its first event: a 400/413
            failure = exc

        def read() -> Any:
            if failure is not None:
                raise failure
            return payload

        answer = lambda_handler.respond(method, path, read, request_id=request_id)
    finally:
        if not streaming:  # a stream releases when it closes
            release()
    return _answer(start_response, answer)


def _answer(start_response: StartResponse, answer: dict[str, Any]) -> list[bytes]:
    headers = answer.get("headers") or {}
    extra = [("Allow", headers["allow"])] if "allow" in headers else []
    return _reply(start_response, int(answer["statusCode"]), str(answer["body"]), extra)


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """WSGI front of `lambda_handler.respond`: the same routes, validation, limits and answers as Lambda,
    plus server-sent events for `"stream": true` generation requests."""
    method = str(environ.get("REQUEST_METHOD", "GET")).upper()
    path = str(environ.get("PATH_INFO") or "/")
    action = lambda_handler.route(method, path).action
    if action not in (lambda_handler.PREDICT, lambda_handler.CHAT):
        return _answer(start_response, lambda_handler.respond(method, path, lambda: None,
                                                              request_id=_request_id(environ)))
    if not _SLOTS.acquire(blocking=False):
        return _reply(start_response, 503, json.dumps({"error": "busy: too many requests waiting, retry shortly"}),
                      [("Retry-After", "1")])
    return _predict(environ, start_response, method, path, action)


def connection_limit(wanted: int) -> int:
    """`wanted`, but below the open-files limit (raised to its hard maximum when allowed): each connection
    is a file descriptor, and running out of them fails accept() for everyone, health checks included."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(16, min(wanted, int(soft) - 64))


def server_settings(host: str, port: int, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """waitress options, every one set on purpose (see the module docstring for why each value)."""
    return {
        "host": host, "port": port, "ident": "slimserve", "threads": THREADS,
        "connection_limit": connection_limit(int(_env_number("SLIMSERVE_CONNECTION_LIMIT", 1000, environ))),
        "channel_timeout": int(_env_number("SLIMSERVE_CHANNEL_TIMEOUT_S", 75, environ)),
        "cleanup_interval": 5,
        "max_request_header_size": 64 * 1024,
        "max_request_body_size": MAX_BODY_BYTES,
        "backlog": 2048,
        "asyncore_use_poll": True,  # select() cannot watch descriptors above 1,023
    }


def _busy(channel: Any) -> bool:
    """A connection with a received request not yet fully answered."""
    return bool(channel.requests) or bool(channel.total_outbufs_len)


def _drain(server: Any, grace_s: float, loop: Callable[[float], None]) -> bool:
    """Let received requests finish (up to `grace_s`), closing each connection once it is idle (a WSGI
    app may not send `Connection: close` itself: PEP 3333 hop-by-hop). True when every request was
    answered in time."""
    deadline = time.monotonic() + grace_s
    while True:
        busy = False
        for channel in list(server.active_channels.values()):
            if _busy(channel):
                busy = True
            else:
                channel.handle_close()
        if not busy:
            return True
        if time.monotonic() >= deadline:
            return False
        loop(0.05)


def _serve_waitress(waitress: Any, host: str, port: int) -> None:
    from waitress import wasyncore

    server = waitress.create_server(app, **server_settings(host, port))
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def loop(timeout: float) -> None:
        wasyncore.loop(timeout=timeout, map=server._map, use_poll=True, count=1)

    print(f"serving on {server.effective_host}:{server.effective_port} (waitress)", file=sys.stderr, flush=True)
    while not stop.is_set():
        loop(0.2)
    # Stop listening first. wasyncore.dispatcher.close closes the listening socket only (the server's own
    # close() also closes the trigger that worker threads pull when a response is ready).
    server.accepting = False
    wasyncore.dispatcher.close(server)
    print(f"SIGTERM: not listening any more; draining for up to {GRACE_S:g} s", file=sys.stderr, flush=True)
    finished = _drain(server, GRACE_S, loop)
    server.task_dispatcher.shutdown(cancel_pending=True, timeout=0.5 if finished else 0)
    print("stopped" if finished else f"stopped after {GRACE_S:g} s with requests unfinished",
          file=sys.stderr, flush=True)
    if not finished:  # worker threads are still inside the model: do not wait for them at interpreter exit
        os._exit(0)


def _serve_wsgiref(host: str, port: int) -> None:
    """The fallback for local runs without waitress: threads, no limits, no graceful shutdown."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIServer, make_server

    class _Threading(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    server = make_server(host, port, app, server_class=_Threading)
    print(f"serving on {host}:{server.server_port} (wsgiref; waitress not installed)", file=sys.stderr, flush=True)
    server.serve_forever()


def serve(port: int | None = None, host: str = "0.0.0.0") -> None:
    port = int(os.environ.get("PORT", "8080")) if port is None else port
    try:
        import waitress
    except ImportError:  # the image ships waitress; this fallback keeps local runs dependency-free
        _serve_wsgiref(host, port)
        return
    _serve_waitress(waitress, host, port)


if __name__ == "__main__":
    serve()
