"""AWS Lambda entry point (`lambda_handler.handler`). Shipped as-is in function.zip beside model_runtime.py.

Imports only the standard library and `model_runtime` (numpy, onnxruntime, tokenizers come from the
layer). The model loads once, at module import (Lambda's init phase), and is reused by every invocation.

Layout in function.zip:  lambda_handler.py, model_runtime.py, model/ (slimserve.json, model.onnx, tokenizer).
`SLIMSERVE_MODEL_DIR` overrides the model folder.

Events:
- direct invocation `{"inputs": [...]}` returns the prediction dict, or `{"error": message}` for bad input;
- API Gateway (REST v1, HTTP v2) and function URL events (a `body` string, maybe base64) get an HTTP
  response: 200 with the prediction, 400 with `{"error": message}` for bad input, 500 for internal errors.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from model_runtime import InputError, LoadedModel

LOG = logging.getLogger("slimserve")
LOG.setLevel(logging.INFO)

MODEL_DIR = Path(os.environ.get("SLIMSERVE_MODEL_DIR") or Path(__file__).resolve().parent / "model")
MODEL = LoadedModel(MODEL_DIR)
# Longest accepted text in characters; the tokenizer truncates to max_length tokens anyway, this bounds work.
MAX_TEXT_CHARS = int(os.environ.get("SLIMSERVE_MAX_TEXT_CHARS") or MODEL.spec.get("max_chars", 20_000))
MAX_BATCH = MODEL.max_batch


def _predict(payload: Any) -> dict[str, Any]:
    """Validate a decoded request and run the model; InputError carries a message safe for the caller."""
    if not isinstance(payload, dict):
        raise InputError('request must be a JSON object like {"inputs": [...]}')
    if "inputs" not in payload:
        raise InputError('missing field "inputs"')
    inputs = payload["inputs"]
    if MODEL.kind == "text":
        if not isinstance(inputs, list) or not all(isinstance(t, str) for t in inputs):
            raise InputError('"inputs" must be a list of strings')
        if not inputs:
            raise InputError('"inputs" is empty')
        if len(inputs) > MAX_BATCH:
            raise InputError(f"too many inputs: {len(inputs)} > {MAX_BATCH} per request")
        longest = max(len(t) for t in inputs)
        if longest > MAX_TEXT_CHARS:
            raise InputError(f"input text too long: {longest} > {MAX_TEXT_CHARS} characters")
        for index, text in enumerate(inputs):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:  # e.g. a lone surrogate from "\ud800" in the JSON
                raise InputError(f"inputs[{index}] is not valid Unicode text (lone surrogate)") from None
        answer: dict[str, Any] = MODEL.predict_texts(inputs)
        return answer
    if not isinstance(inputs, dict) or not all(isinstance(v, list) for v in inputs.values()):
        raise InputError('"inputs" must be an object of named arrays: {"name": [[...], ...]}')
    for name, value in inputs.items():
        if len(value) > MAX_BATCH:
            raise InputError(f"too many rows in input {name!r}: {len(value)} > {MAX_BATCH} per request")
    result: dict[str, Any] = MODEL.predict_tensors(inputs)
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


def _is_http(event: Any) -> bool:
    return isinstance(event, dict) and ("body" in event or "requestContext" in event or "httpMethod" in event)


def _http(status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {"statusCode": status, "headers": {"content-type": "application/json"},
            "body": json.dumps(body, allow_nan=False), "isBase64Encoded": False}


def _decode_body(event: dict[str, Any]) -> Any:
    body = event.get("body")
    if body is None or body == "":
        raise InputError('empty request body: POST a JSON object like {"inputs": [...]}')
    if not isinstance(body, str):
        raise InputError("request body must be a JSON string")
    if event.get("isBase64Encoded"):
        try:
            body = base64.b64decode(body, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise InputError("request body is not valid base64-encoded UTF-8") from None
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        raise InputError(f"request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None


def handler(event: Any, context: Any = None) -> dict[str, Any]:
    """Lambda entry point; never raises: bad input is a 400 (or `{"error"}`), anything else a 500."""
    http = _is_http(event)
    try:
        result = _predict(_decode_body(event) if http else event)
        if http:
            return _http(200, result)
        return result
    except InputError as exc:
        return _http(400, {"error": str(exc)}) if http else {"error": str(exc)}
    except Exception:  # a bug or a resource problem: log it for CloudWatch, tell the caller nothing internal
        LOG.exception("inference failed")
        return _http(500, {"error": "internal error"}) if http else {"error": "internal error"}
