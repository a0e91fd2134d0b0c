"""Azure Functions entry point (Python v2 programming model). Shipped as `function_app.py` at the root of
function.zip, beside lambda_handler.py, model_runtime.py, task_*.py and model/.

The Functions host indexes the module-level `app` and calls its functions with a `func.HttpRequest`.
Routing, validation, limits, answers and log lines are `lambda_handler`'s (`respond`): one implementation
for every front (Lambda events, the container's WSGI app, and this). The model loads once, when the worker
imports this module, and is reused by every invocation.

    POST /api/predict  {"inputs": [...]}  -> the prediction; image models also take an image file as the
                                             body (Content-Type: image/*)
    POST /api/v1/chat/completions         -> OpenAI's chat completions (text-generation models; 404 otherwise)
    GET  /api/health                      -> {"status": "ok", "task": ..., "limits": {...}}

Both take the function key (`x-functions-key` header or `?code=`): `AuthLevel.FUNCTION`. Bad requests get a
400 with {"error": message}, requests over a limit a 413 naming it, a body over SLIMSERVE_MAX_BODY_BYTES
(default 6 MiB, as on Lambda and in the container) a 413 before it is parsed.

Imports only the standard library, the shipped runtime and `azure.functions`, which the Functions host
provides (it is not in the package). The dependencies (numpy, onnxruntime, tokenizers or Pillow) come from
`.python_packages/lib/site-packages`, which the Python worker puts on sys.path.
"""

import os
import sys
from pathlib import Path
from typing import Any

import azure.functions as func

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # the worker appends the script root; a local `func start` run may not
    sys.path.append(_HERE)

if __package__:
    from . import lambda_handler
    from .model_runtime import InputError, LimitError
else:
    import lambda_handler  # type: ignore[no-redef]
    from model_runtime import InputError, LimitError  # type: ignore[no-redef]


def _max_body_bytes() -> int:
    raw = os.environ.get("SLIMSERVE_MAX_BODY_BYTES", "").strip()
    try:
        value = int(raw) if raw else 6 * 1024 * 1024
    except ValueError:
        raise ValueError(f"SLIMSERVE_MAX_BODY_BYTES must be a whole number of bytes, got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"SLIMSERVE_MAX_BODY_BYTES must be positive, got {raw!r}")
    return value


MAX_BODY_BYTES = _max_body_bytes()

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


def read_payload(req: func.HttpRequest) -> Any:
    """The decoded request, as the container front reads it: JSON, or an image file for image models."""
    raw = req.get_body() or b""
    if len(raw) > MAX_BODY_BYTES:
        raise LimitError(f"request body over {MAX_BODY_BYTES} bytes (SLIMSERVE_MAX_BODY_BYTES)")
    if not raw:
        raise InputError('empty request body: POST a JSON object like {"inputs": [...]}')
    content_type = str(req.headers.get("content-type") or "")
    if lambda_handler.media_type(content_type) not in ("application/json", "text/json", "text/plain", ""):
        return lambda_handler.raw_payload(content_type, raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError("request body is not UTF-8") from None
    return lambda_handler.parse_json(text)


def _answer(method: str, path: str, req: func.HttpRequest, context: Any) -> func.HttpResponse:
    request_id = getattr(context, "invocation_id", None) or req.headers.get("x-request-id")
    answer = lambda_handler.respond(method, path, lambda: read_payload(req), request_id=request_id)
    headers = {k: v for k, v in (answer.get("headers") or {}).items() if k.lower() != "content-type"}
    return func.HttpResponse(body=str(answer["body"]), status_code=int(answer["statusCode"]), headers=headers,
                             mimetype="application/json", charset="utf-8")


@app.route(route="predict", methods=["POST"])
def predict(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    """POST /api/predict: the model's answer, or a 400/413 with {"error": ...}."""
    return _answer("POST", "/predict", req, context)


@app.route(route="v1/chat/completions", methods=["POST"])
def chat_completions(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    """POST /api/v1/chat/completions: OpenAI's chat completions, whole (text-generation models; else 404)."""
    return _answer("POST", "/v1/chat/completions", req, context)


@app.route(route="health", methods=["GET"])
def health(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    """GET /api/health: the task and the request limits this deployment enforces."""
    return _answer("GET", "/health", req, context)
