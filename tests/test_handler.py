"""The shipped Lambda handler: direct and HTTP events, 400s for every kind of bad input, never a crash.

The handler is loaded from its file the way Lambda does (module import = model load), with
`model_runtime` imported from beside it; the models are tiny real ONNX models with real tokenizers.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from slimserve.runtime import RUNTIME_DIR
from slimserve.runtime.model_runtime import LoadedModel
from tests.helpers_lambda import tensor_model_dir, text_model_dir


def load_handler(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.setenv("SLIMSERVE_MODEL_DIR", str(model_dir))
    monkeypatch.syspath_prepend(str(RUNTIME_DIR))
    spec = importlib.util.spec_from_file_location(f"lambda_handler_{id(model_dir)}", RUNTIME_DIR / "lambda_handler.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def text_handler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return load_handler(text_model_dir(tmp_path / "text", max_batch=4, max_chars=200), monkeypatch)


@pytest.fixture
def tensor_handler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return load_handler(tensor_model_dir(tmp_path / "tensor", max_batch=8), monkeypatch)


def http(body: Any, *, b64: bool = False, raw: bool = False) -> dict[str, Any]:
    """A function URL / API Gateway HTTP API (v2) event."""
    text = body if raw else json.dumps(body)
    if b64:
        text = base64.b64encode(text.encode()).decode()
    return {"version": "2.0", "routeKey": "$default", "rawPath": "/", "body": text, "isBase64Encoded": b64,
            "requestContext": {"http": {"method": "POST"}}}


def test_handler_imports_neither_torch_nor_slimserve() -> None:
    source = (RUNTIME_DIR / "lambda_handler.py").read_text()
    imports = [ln.strip() for ln in source.splitlines() if ln.startswith(("import ", "from "))]
    assert all(("torch" not in ln and "slimserve" not in ln) for ln in imports), imports


def test_direct_text_invocation_matches_loaded_model(text_handler: ModuleType, tmp_path: Path) -> None:
    texts = ["serverless models start fast", "hello world and more"]
    got = text_handler.handler({"inputs": texts}, None)
    want = LoadedModel(tmp_path / "text").predict_texts(texts)
    assert np.allclose(got["embeddings"], want["embeddings"], atol=1e-6)
    assert np.allclose(np.linalg.norm(got["embeddings"], axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("b64", [False, True])
def test_http_events_get_http_responses(text_handler: ModuleType, b64: bool) -> None:
    resp = text_handler.handler(http({"inputs": ["hello world"]}, b64=b64), None)
    assert resp["statusCode"] == 200 and resp["headers"]["content-type"] == "application/json"
    assert len(json.loads(resp["body"])["embeddings"][0]) == 8


def test_api_gateway_v1_event(text_handler: ModuleType) -> None:
    event = {"resource": "/", "httpMethod": "POST", "body": json.dumps({"inputs": ["hi"]}), "isBase64Encoded": False}
    assert text_handler.handler(event, None)["statusCode"] == 200


BAD_TEXT = [
    (http("{not json", raw=True), "not valid JSON"),
    (http("", raw=True), "empty request body"),
    ({"body": None, "requestContext": {}}, "empty request body"),
    (http("!!!notbase64", raw=True, b64=False) | {"isBase64Encoded": True}, "base64"),
    (http([1, 2]), "JSON object"),
    (http({"text": ["a"]}), 'missing field "inputs"'),
    (http({"inputs": 3}), "a string or a list of strings"),
    (http({"inputs": ["ok", 3]}), "list of strings"),
    (http({"inputs": []}), "empty"),
    (http({"inputs": ["ok"], "parameters": {"top_k": 2}}), "unknown parameter 'top_k'"),
    (http({"inputs": ["ok"], "parameters": [1]}), '"parameters" must be a JSON object'),
    (http({"inputs": ["ok"], "extra": 1}), "unknown field 'extra'"),
    (http("\x89PNG", raw=True) | {"headers": {"Content-Type": "image/png"}}, "does not take image/png"),
]
OVER_LIMIT_TEXT = [
    (http({"inputs": ["a"] * 5}), "too many inputs: 5 > 4"),
    (http({"inputs": ["x" * 201]}), "too long: 201 > 200"),
]


@pytest.mark.parametrize(("event", "message"), BAD_TEXT, ids=[m for _, m in BAD_TEXT])
def test_bad_http_input_is_a_400_with_a_clear_message(text_handler: ModuleType, event: dict[str, Any],
                                                      message: str) -> None:
    resp = text_handler.handler(event, None)
    assert resp["statusCode"] == 400, resp
    assert message in json.loads(resp["body"])["error"]


@pytest.mark.parametrize(("event", "message"), OVER_LIMIT_TEXT, ids=[m for _, m in OVER_LIMIT_TEXT])
def test_input_over_a_limit_is_a_413_naming_it(text_handler: ModuleType, event: dict[str, Any], message: str) -> None:
    resp = text_handler.handler(event, None)
    assert resp["statusCode"] == 413, resp
    assert message in json.loads(resp["body"])["error"]


@pytest.mark.parametrize("event", [None, 42, "text", {"inputs": None}, {"inputs": [None]}])
def test_bad_direct_input_returns_an_error_not_an_exception(text_handler: ModuleType, event: Any) -> None:
    assert "error" in text_handler.handler(event, None)


def test_internal_errors_are_a_generic_500(text_handler: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(feeds: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(text_handler.MODEL, "run", broken)
    resp = text_handler.handler(http({"inputs": ["hi"]}), None)
    assert resp["statusCode"] == 500 and json.loads(resp["body"]) == {"error": "internal error"}
    assert text_handler.handler({"inputs": ["hi"]}, None) == {"error": "internal error"}


def test_tensor_model_direct_and_http(tensor_handler: ModuleType, tmp_path: Path) -> None:
    x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    got = tensor_handler.handler({"inputs": {"x": x.tolist()}}, None)
    want = LoadedModel(tmp_path / "tensor").predict_tensors({"x": x})
    assert np.allclose(got["outputs"]["y"], want["outputs"]["y"], atol=1e-5)
    assert tensor_handler.handler(http({"inputs": {"x": x.tolist()}}), None)["statusCode"] == 200


@pytest.mark.parametrize(("inputs", "message"), [
    ({"z": [[0.0] * 16]}, "missing inputs: x"),
    ({"x": [["a"] * 16]}, "not a numeric array"),
    ({"x": [[0.0] * 3]}, "do not fit the model"),
    ([[0.0] * 16], "named arrays"),
    ({"x": 1.0}, "named arrays"),
])
def test_bad_tensor_input_is_a_400(tensor_handler: ModuleType, inputs: Any, message: str) -> None:
    resp = tensor_handler.handler(http({"inputs": inputs}), None)
    assert resp["statusCode"] == 400, resp
    assert message in json.loads(resp["body"])["error"]


def test_too_many_tensor_rows_is_a_413(tensor_handler: ModuleType) -> None:
    resp = tensor_handler.handler(http({"inputs": {"x": [[0.0] * 16] * 9}}), None)
    assert resp["statusCode"] == 413 and "too many rows in input 'x': 9 > 8" in json.loads(resp["body"])["error"]


def test_model_loads_once_at_import(text_handler: ModuleType) -> None:
    session = text_handler.MODEL.session
    for _ in range(3):
        text_handler.handler({"inputs": ["hello"]}, None)
    assert text_handler.MODEL.session is session and "model_runtime" in sys.modules


def test_lone_surrogates_are_a_400(text_handler: ModuleType) -> None:
    response = text_handler.handler(http('{"inputs": ["\\ud800 hello"]}', raw=True))
    assert response["statusCode"] == 400 and "Unicode" in json.loads(response["body"])["error"]
    assert "error" in text_handler.handler({"inputs": ["\ud800"]})


def test_non_finite_tensor_numbers_are_a_400(tensor_handler: ModuleType) -> None:
    spec = tensor_handler.MODEL.session.get_inputs()[0]
    name, width = spec.name, spec.shape[-1]
    response = tensor_handler.handler(http({"inputs": {name: [[1e39] * width]}}))
    assert response["statusCode"] == 400 and "infinity" in json.loads(response["body"])["error"]
    assert "error" in tensor_handler.handler({"inputs": {name: [[float("nan")] * width]}})
