"""The Cloud Run WSGI front: routes, methods and the same answers as the Lambda handler."""

from __future__ import annotations

import importlib
import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from slimserve.runtime import RUNTIME_DIR
from tests.helpers_lambda import tensor_model_dir


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("SLIMSERVE_MODEL_DIR", str(tensor_model_dir(tmp_path / "tensor", max_batch=8)))
    monkeypatch.syspath_prepend(str(RUNTIME_DIR))
    for name in ("http_app", "lambda_handler"):
        sys.modules.pop(name, None)
    module = importlib.import_module("http_app")
    yield module.app
    for name in ("http_app", "lambda_handler"):
        sys.modules.pop(name, None)


def call(app: Any, method: str, path: str, body: bytes = b"") -> tuple[str, dict[str, str], dict[str, Any]]:
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen["status"], seen["headers"] = status, dict(headers)

    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "CONTENT_LENGTH": str(len(body)),
               "wsgi.input": io.BytesIO(body)}
    payload = b"".join(app(environ, start_response))
    return seen["status"], seen["headers"], json.loads(payload)


def test_health_predict_and_errors(app: Any) -> None:
    status, _, body = call(app, "GET", "/healthz")
    assert status.startswith("200") and body["status"] == "ok"
    status, _, body = call(app, "POST", "/predict", json.dumps({"inputs": {"x": [[0.5] * 16]}}).encode())
    assert status.startswith("200") and len(body["outputs"]["y"][0]) == 4
    status, _, body = call(app, "POST", "/predict", b"{not json")
    assert status.startswith("400") and "JSON" in body["error"]


def test_wrong_method_is_405_with_allow_and_unknown_path_404(app: Any) -> None:
    status, headers, _ = call(app, "PUT", "/predict")
    assert status.startswith("405") and headers["Allow"] == "POST"
    status, _, _ = call(app, "DELETE", "/nowhere")
    assert status.startswith("404")


def test_chat_route_and_streaming_are_for_generation_models_only(app: Any) -> None:
    """A tensor (or any non-generation) model has no chat completions route and no streamed answers."""
    status, _, body = call(app, "POST", "/v1/chat/completions", json.dumps({"messages": []}).encode())
    assert status.startswith("404") and "no route" in body["error"]
    request = {"inputs": {"x": [[0.5] * 16]}, "stream": True}
    status, _, body = call(app, "POST", "/predict", json.dumps(request).encode())
    assert status.startswith("400") and "streaming is for text-generation" in body["error"]
