"""AWS Lambda entry point (`lambda_handler.handler`). Shipped as-is in function.zip beside model_runtime.py.

Imports only the standard library and `model_runtime` (numpy, onnxruntime, tokenizers come from the
layer). The model loads once, at module import (Lambda's init phase), and is reused by every invocation.

Layout in function.zip:  lambda_handler.py, model_runtime.py, model/ (slimserve.json, model.onnx, tokenizer).
`SLIMSERVE_MODEL_DIR` overrides the model folder.

SnapStart: with `snapshot_restore_py` importable (Lambda's Python 3.12+ runtimes), `warm_up` runs the
manifest's warm-up request before the snapshot and `after_restore` reseeds randomness after each restore.

Events:
- direct invocation `{"inputs": [...]}` returns the prediction dict, or `{"error": message}` for bad input;
- API Gateway REST (v1: `httpMethod`, `path`), HTTP API (v2) and function URL events
  (`requestContext.http.method`, `rawPath`) are routed by `ROUTES`, the one table the container's
  `http_app` uses too: `GET /health` (and `/healthz`, `GET /`) answers health, `POST /`, `/predict` and
  `/invocations` predict, `POST /v1/chat/completions` answers OpenAI's chat completions (text-generation
  models only; chat_completions.py), anything else is a 404, or a 405 with `Allow` for a known path.
  `"stream": true` is a 400 here: Lambda's managed Python runtimes return whole responses (response
  streaming needs a custom runtime); the container server (`http_app`) streams it with `open_stream`.
  Predictions answer 200, 400 with `{"error": message}` for bad input, 413 naming the limit for a
  request over one of `LIMITS`, 500 for internal errors.

Limits (manifest `runtime` section, each overridable by its variable; see model_runtime.RequestLimits):
  max_batch   SLIMSERVE_MAX_BATCH        texts (or tensor rows) per request
  max_chars   SLIMSERVE_MAX_TEXT_CHARS   characters per text, refused before tokenizing
  max_tokens  SLIMSERVE_MAX_TOKENS       texts × padded tokens after truncation, per request
  max_elements SLIMSERVE_MAX_ELEMENTS    numbers per tensor request, all inputs together
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import chat_completions
from model_runtime import InputError, LimitError, LoadedModel

LOG = logging.getLogger("slimserve")
LOG.setLevel(logging.INFO)

# Observability, on stdout (Lambda sends it to CloudWatch Logs): one JSON line at init and one per request
# (SLIMSERVE_LOG=off silences them); SLIMSERVE_METRICS=emf adds CloudWatch Embedded Metric Format lines, which
# CloudWatch turns into metrics (namespace SLIMSERVE_METRICS_NAMESPACE, default "slimserve") without an API
# call or a dependency.
LOG_LINES = os.environ.get("SLIMSERVE_LOG", "json").strip().lower() != "off"
EMF = os.environ.get("SLIMSERVE_METRICS", "").strip().lower() == "emf"
NAMESPACE = os.environ.get("SLIMSERVE_METRICS_NAMESPACE") or "slimserve"

_started = time.perf_counter()
MODEL_DIR = Path(os.environ.get("SLIMSERVE_MODEL_DIR") or Path(__file__).resolve().parent / "model")
MODEL = LoadedModel(MODEL_DIR)
LIMITS = MODEL.limits()
INIT_MS = (time.perf_counter() - _started) * 1000
_REQUEST = threading.local()  # what the current request asked for (the container front runs threads)


def emit(record: dict[str, Any]) -> None:
    if LOG_LINES:
        print(json.dumps(record, separators=(",", ":"), default=str), flush=True)


def emit_metrics(values: dict[str, tuple[float, str]]) -> None:
    """One CloudWatch Embedded Metric Format document: `values` maps a metric to (value, unit)."""
    if not EMF:
        return
    document: dict[str, Any] = {
        "_aws": {"Timestamp": int(time.time() * 1000), "CloudWatchMetrics": [{
            "Namespace": NAMESPACE, "Dimensions": [["Task"]],
            "Metrics": [{"Name": name, "Unit": unit} for name, (_, unit) in values.items()]}]},
        "Task": MODEL.task, **{name: value for name, (value, _) in values.items()}}
    print(json.dumps(document, separators=(",", ":")), flush=True)


def batch_size(payload: Any) -> int | None:
    """Texts, images, questions, pairs or documents (or tensor rows) a request carries."""
    inputs = payload.get("inputs") if isinstance(payload, dict) else None
    if isinstance(inputs, list):
        return len(inputs)
    if isinstance(inputs, dict):
        documents = inputs.get("documents")
        if isinstance(documents, list):
            return len(documents)
        first = next(iter(inputs.values()), None)
        return len(first) if isinstance(first, list) and MODEL.kind == "tensor" else 1
    return None if inputs is None else 1


def _record(request_id: str | None, where: str, action: str | None, status: int, started: float) -> None:
    duration = (time.perf_counter() - started) * 1000
    batch = getattr(_REQUEST, "batch", None)
    outcome = "ok" if status < 400 else "client_error" if status < 500 else "error"
    emit({"event": "request", "request_id": request_id, "route": where, "action": action, "status": status,
          "outcome": outcome, "batch": batch, "duration_ms": round(duration, 2), "task": MODEL.task})
    if action in (PREDICT, CHAT):
        emit_metrics({"InferenceDuration": (round(duration, 2), "Milliseconds"),
                      "BatchSize": (float(batch or 0), "Count"), "Errors": (float(status >= 500), "Count"),
                      "ClientErrors": (float(400 <= status < 500), "Count")})


def warm_up() -> bool:
    """Run the manifest's warm-up request once (SnapStart's before-snapshot hook): onnxruntime allocates its
    arenas and the tokenizer its caches on the first inference, and a snapshot taken after it restores warm.
    False when the manifest has no warm-up request (folders optimized before it was recorded)."""
    inputs = MODEL.spec.get("warmup")
    if inputs is None:
        return False
    if MODEL.kind == "tensor":
        MODEL.predict_tensors(inputs)
    else:
        MODEL.predict(inputs)
    return True


def after_restore() -> None:
    """SnapStart restores many environments from one snapshot: anything random drawn before it would repeat
    in all of them, so reseed from the OS (sampling parameters with an explicit seed are unaffected)."""
    import random

    random.seed()


def register_snapstart_hooks() -> bool:
    """Register the hooks with the runtime's `snapshot_restore_py` (present in Lambda's Python 3.12+ runtimes
    and beside awslambdaric); elsewhere there is nothing to register and the handler works the same."""
    try:
        from snapshot_restore_py import register_after_restore, register_before_snapshot
    except ImportError:
        return False
    register_before_snapshot(warm_up)
    register_after_restore(after_restore)
    return True


SNAPSTART = register_snapstart_hooks()
emit({"event": "init", "task": MODEL.task, "model": MODEL_DIR.name, "init_ms": round(INIT_MS, 2),
      "snapstart": SNAPSTART, "limits": LIMITS.as_dict()})
emit_metrics({"InitDuration": (round(INIT_MS, 2), "Milliseconds")})

HEALTH, PREDICT, CHAT = "health", "predict", "chat"
CHAT_PATH = "/v1/chat/completions"
GENERATION = "text-generation"
# path -> method -> action: the one routing table of both fronts (Lambda HTTP events and http_app).
ROUTES: dict[str, dict[str, str]] = {
    "/": {"GET": HEALTH, "POST": PREDICT},
    "/health": {"GET": HEALTH},
    "/healthz": {"GET": HEALTH},
    "/predict": {"POST": PREDICT},
    "/invocations": {"POST": PREDICT},
    CHAT_PATH: {"POST": CHAT},
}


class Route(NamedTuple):
    """Where a request goes: an action, or the status (404/405) and the `Allow` header to answer with."""

    action: str | None
    status: int
    allow: str = ""


def route(method: str, path: str) -> Route:
    methods = ROUTES.get(path)
    if methods is None or (path == CHAT_PATH and MODEL.task != GENERATION):
        return Route(None, 404)
    if method not in methods:  # RFC 9110 section 15.5.6: a 405 lists the methods the path has
        return Route(None, 405, ", ".join(sorted(methods)))
    return Route(methods[method], 200)


def health() -> dict[str, Any]:
    return {"status": "ok", "task": MODEL.spec.get("task"), "limits": LIMITS.as_dict()}


# The Inference API's; "options" is accepted and unused, "stream" (text-generation) needs a streaming front.
REQUEST_FIELDS = ("inputs", "parameters", "options", "stream")
NO_STREAMING = ('this deployment answers whole responses: send "stream": false, or deploy the container target, '
                "whose server streams server-sent events")


def _check_request(payload: Any) -> None:
    if not isinstance(payload, dict):
        raise InputError('request must be a JSON object like {"inputs": [...]}')
    if "inputs" not in payload:
        raise InputError('missing field "inputs"')
    unknown = sorted(set(payload) - set(REQUEST_FIELDS))
    if unknown:
        raise InputError(f"unknown field {unknown[0]!r} (a request has {', '.join(REQUEST_FIELDS)})")
    if payload.get("stream", False) not in (True, False):
        raise InputError('"stream" must be true or false')


def wants_stream(payload: Any) -> bool:
    """Whether a decoded request asks for its answer as a stream (`"stream": true`)."""
    return isinstance(payload, dict) and payload.get("stream") is True


def _model_name(payload: dict[str, Any]) -> str:
    """The `model` a chat completion answers with: the caller's name for it (one deployment, one model)."""
    name = payload.get("model")
    return name[:256] if isinstance(name, str) and name else os.environ.get("SLIMSERVE_MODEL_NAME", "slimserve")


def _chat(payload: Any) -> Any:
    """A non-streamed OpenAI chat completion."""
    inputs, parameters, stream, _usage = chat_completions.translate(payload)
    if stream:
        raise InputError(NO_STREAMING)
    _REQUEST.batch = 1
    answer = MODEL.predict(inputs, parameters, LIMITS)[0]
    return chat_completions.completion(answer, _model_name(payload))


def _sse(item: Any) -> str:
    return f"data: {json.dumps(item, separators=(',', ':'), allow_nan=False)}\n\n"


def open_stream(action: str, payload: Any) -> Iterator[str]:
    """Server-sent events (`data: {...}` lines) answering a `"stream": true` request: text-generation-
    inference's token events on the Inference API routes, `chat.completion.chunk`s then `[DONE]` on the
    chat route. Validated before it returns (InputError: answer 400/413 instead); an error after the first
    event ends the stream with an `{"error"}` event, since the 200 has been sent."""
    if action == CHAT:
        inputs, parameters, _stream, include_usage = chat_completions.translate(payload)
        _REQUEST.batch = 1
        items: Iterator[Any] = chat_completions.chunks(MODEL.stream(inputs, parameters, LIMITS),
                                                       _model_name(payload), include_usage)
        tail = ["data: [DONE]\n\n"]
    else:
        _check_request(payload)
        _REQUEST.batch = batch_size(payload)
        items, tail = MODEL.stream(payload["inputs"], payload.get("parameters"), LIMITS), []

    def lines() -> Iterator[str]:
        try:
            for item in items:
                yield _sse(item)
        except InputError as exc:
            yield _sse(chat_completions.error(str(exc), exc.status) if action == CHAT else
                       {"error": str(exc), "error_type": "validation"})
            return
        except Exception:
            LOG.exception("inference failed while streaming")
            yield _sse(chat_completions.error("internal error", 500) if action == CHAT else
                       {"error": "internal error", "error_type": "generation"})
            return
        yield from tail

    return lines()


def _predict(payload: Any) -> Any:
    """Validate a decoded request and run the model; InputError carries a message safe for the caller."""
    _REQUEST.batch = batch_size(payload)
    _check_request(payload)
    if payload.get("stream"):
        raise InputError(NO_STREAMING if MODEL.task == GENERATION else
                         f'"stream" is for text-generation models; this one ({MODEL.task}) answers whole responses')
    inputs = payload["inputs"]
    if MODEL.kind != "tensor":
        return MODEL.predict(inputs, payload.get("parameters"), LIMITS)
    if payload.get("parameters"):
        raise InputError("this model takes no parameters")
    if not isinstance(inputs, dict) or not all(isinstance(v, list) for v in inputs.values()):
        raise InputError('"inputs" must be an object of named arrays: {"name": [[...], ...]}')
    result: dict[str, Any] = MODEL.predict_tensors(inputs, LIMITS)
    if not _finite(result["outputs"]):
        raise InputError("the model produced non-finite numbers (NaN or infinity) for these inputs: "
                         "check their range and scale")
    return result


def _finite(value: Any) -> bool:
    """JSON has no NaN/Infinity: such outputs cannot be answered, and usually mean out-of-range inputs."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


def parse_json(body: str) -> Any:
    """The request body as JSON; every way it can fail to parse is the caller's 400, never a 500."""
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        raise InputError(f"request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:  # e.g. "[" * 100000: the decoder recurses once per level
        raise InputError("request body is not valid JSON: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer over sys.get_int_max_str_digits() digits
        raise InputError(f"request body is not valid JSON: {str(exc).splitlines()[0][:160]}") from None


def _http_request(event: Any) -> tuple[str, str] | None:
    """(method, path) of an HTTP event, None for a direct invocation.

    REST API (v1) events carry `httpMethod` and `path`; HTTP API (v2) and function URL events carry
    `requestContext.http.method` and `rawPath` (which starts with the stage name on a named v2 stage).
    A console test event with only a `body` is taken for `POST /`.
    """
    if not isinstance(event, dict) or not any(k in event for k in ("httpMethod", "requestContext", "rawPath", "body")):
        return None
    context = event.get("requestContext")
    context = context if isinstance(context, dict) else {}
    http = context.get("http")
    http = http if isinstance(http, dict) else {}
    method = event.get("httpMethod") or http.get("method") or "POST"
    path = event.get("rawPath") or event.get("path") or "/"
    stage = context.get("stage")
    if "rawPath" in event and isinstance(stage, str) and stage not in ("", "$default") and isinstance(path, str):
        prefix = f"/{stage}"
        if path == prefix or path.startswith(prefix + "/"):
            path = path[len(prefix):] or "/"
    return str(method).upper(), str(path)


def _http(status: int, body: Any, allow: str = "") -> dict[str, Any]:
    headers = {"content-type": "application/json"}
    if allow:
        headers["allow"] = allow
    return {"statusCode": status, "headers": headers, "body": json.dumps(body, allow_nan=False),
            "isBase64Encoded": False}


def _header(event: dict[str, Any], name: str) -> str:
    headers = event.get("headers")
    if not isinstance(headers, dict):
        return ""
    for key, value in headers.items():
        if isinstance(key, str) and key.lower() == name and isinstance(value, str):
            return value
    return ""


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def raw_payload(content_type: str, body: bytes) -> Any:
    """A request from a non-JSON body: an image file POSTed as is (`Content-Type: image/jpeg`) is one input."""
    kind = media_type(content_type)
    if kind.startswith("image/") or kind == "application/octet-stream":
        if MODEL.kind != "image":
            raise InputError(f"this model does not take {kind} bodies: POST JSON like {{\"inputs\": [...]}}")
        return {"inputs": [body]}
    raise InputError(f"unsupported Content-Type {kind!r}: POST application/json (or an image for image models)")


def _decode_body(event: dict[str, Any]) -> Any:
    body = event.get("body")
    if body is None or body == "":
        raise InputError('empty request body: POST a JSON object like {"inputs": [...]}')
    if not isinstance(body, str):
        raise InputError("request body must be a JSON string")
    content_type = _header(event, "content-type")
    raw: bytes | None = None
    if event.get("isBase64Encoded"):
        try:
            raw = base64.b64decode(body, validate=True)
        except binascii.Error:
            raise InputError("request body is not valid base64") from None
    if content_type and media_type(content_type) not in ("application/json", "text/json", "text/plain", ""):
        return raw_payload(content_type, raw if raw is not None else body.encode("utf-8", "surrogateescape"))
    if raw is not None:
        try:
            body = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError("request body is not valid base64-encoded UTF-8") from None
    return parse_json(body)


def record(request_id: str | None, method: str, path: str, status: int, started: float) -> None:
    """The request's log line (and metrics), for a front that answers without `respond` (a stream)."""
    _record(request_id, f"{method} {path}", route(method, path).action, status, started)


def respond(method: str, path: str, payload: Callable[[], Any], request_id: str | None = None) -> dict[str, Any]:
    """An HTTP answer (Lambda proxy shape) for `method path`; `payload()` reads and decodes the body only
    when the route predicts. Never raises: bad input is a 400/413, anything else a logged 500. Logs one
    line (and, with SLIMSERVE_METRICS=emf, the metrics) per request."""
    started = time.perf_counter()
    _REQUEST.batch = None
    answer = _respond(method, path, payload)
    _record(request_id, f"{method} {path}", route(method, path).action, int(answer["statusCode"]), started)
    return answer


def _respond(method: str, path: str, payload: Callable[[], Any]) -> dict[str, Any]:
    found = route(method, path)
    if found.action == HEALTH:
        return _http(200, health())
    if found.action is None:
        if found.status == 405:
            return _http(405, {"error": f"{method} is not allowed on {path} (use {found.allow})"}, found.allow)
        return _http(404, {"error": f"no route for {method} {path}"})
    chat = found.action == CHAT
    try:
        return _http(200, _chat(payload()) if chat else _predict(payload()))
    except InputError as exc:
        return _http(exc.status, chat_completions.error(str(exc), exc.status) if chat else {"error": str(exc)})
    except Exception:  # a bug or a resource problem: log it for CloudWatch, tell the caller nothing internal
        LOG.exception("inference failed")
        return _http(500, chat_completions.error("internal error", 500) if chat else {"error": "internal error"})


def handler(event: Any, context: Any = None) -> Any:
    """Lambda entry point; never raises: bad input is a 400/413 (or `{"error"}`), anything else a 500."""
    request_id = getattr(context, "aws_request_id", None)
    request = _http_request(event)
    if request is not None:
        return respond(*request, lambda: _decode_body(event), request_id=request_id)
    started = time.perf_counter()
    _REQUEST.batch = None
    status = 200
    try:
        return _predict(event)
    except InputError as exc:
        status = exc.status
        return {"error": str(exc)}
    except Exception:  # a bug or a resource problem: log it for CloudWatch, tell the caller nothing internal
        status = 500
        LOG.exception("inference failed")
        return {"error": "internal error"}
    finally:
        _record(request_id, "invoke", PREDICT, status, started)


__all__ = [
    "CHAT",
    "LIMITS",
    "MODEL",
    "PREDICT",
    "ROUTES",
    "SNAPSTART",
    "InputError",
    "LimitError",
    "after_restore",
    "handler",
    "health",
    "media_type",
    "open_stream",
    "parse_json",
    "raw_payload",
    "record",
    "register_snapstart_hooks",
    "respond",
    "route",
    "wants_stream",
    "warm_up",
]
