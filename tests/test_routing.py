"""One routing table for both fronts: the Lambda handler's HTTP events and the container's WSGI app answer
every (method, path) alike: health on GET, predictions only on the documented POST paths, 404/405 otherwise."""

from __future__ import annotations

import importlib
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from slimserve.runtime import RUNTIME_DIR
from tests.helpers_lambda import tensor_model_dir

BODY = json.dumps({"inputs": {"x": [[0.5] * 16]}})

# (method, path) -> (status, Allow header or None, what a 200 answers)
TABLE = [
    ("GET", "/health", 200, None, "health"),
    ("GET", "/healthz", 200, None, "health"),
    ("GET", "/", 200, None, "health"),
    ("POST", "/", 200, None, "prediction"),
    ("POST", "/predict", 200, None, "prediction"),
    ("POST", "/invocations", 200, None, "prediction"),
    ("POST", "/health", 405, "GET", None),
    ("POST", "/healthz", 405, "GET", None),
    ("GET", "/predict", 405, "POST", None),
    ("PUT", "/predict", 405, "POST", None),
    ("DELETE", "/", 405, "GET, POST", None),
    ("DELETE", "/admin/x", 404, None, None),
    ("POST", "/admin/x", 404, None, None),
    ("GET", "/nowhere", 404, None, None),
]
IDS = [f"{m} {p}" for m, p, *_ in TABLE]


@pytest.fixture
def fronts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ModuleType, ModuleType]]:
    """(lambda_handler, http_app) loaded as shipped, over one tiny tensor model."""
    monkeypatch.setenv("SLIMSERVE_MODEL_DIR", str(tensor_model_dir(tmp_path / "tensor", max_batch=8)))
    monkeypatch.syspath_prepend(str(RUNTIME_DIR))
    for name in ("http_app", "lambda_handler"):
        sys.modules.pop(name, None)
    http_app = importlib.import_module("http_app")
    yield sys.modules["lambda_handler"], http_app
    for name in ("http_app", "lambda_handler"):
        sys.modules.pop(name, None)


def rest_v1(method: str, path: str) -> dict[str, Any]:
    return {"resource": "/{proxy+}", "path": path, "httpMethod": method, "body": BODY, "isBase64Encoded": False,
            "requestContext": {"stage": "prod", "path": f"/prod{path}", "httpMethod": method}}


def http_v2(method: str, path: str) -> dict[str, Any]:
    return {"version": "2.0", "routeKey": "$default", "rawPath": path, "body": BODY, "isBase64Encoded": False,
            "requestContext": {"stage": "$default", "http": {"method": method, "path": path}}}


def http_v2_named_stage(method: str, path: str) -> dict[str, Any]:
    """On a named HTTP API stage, rawPath starts with the stage."""
    full = "/prod" + (path if path != "/" else "")
    return {"version": "2.0", "routeKey": "ANY /{proxy+}", "rawPath": full, "body": BODY, "isBase64Encoded": False,
            "requestContext": {"stage": "prod", "http": {"method": method, "path": full}}}


def function_url(method: str, path: str) -> dict[str, Any]:
    return {"version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "", "body": BODY,
            "isBase64Encoded": False, "headers": {"content-type": "application/json"},
            "requestContext": {"domainName": "abc.lambda-url.us-east-1.on.aws", "stage": "$default",
                               "http": {"method": method, "path": path, "protocol": "HTTP/1.1"}}}


EVENTS = {"rest-v1": rest_v1, "http-v2": http_v2, "http-v2-stage": http_v2_named_stage, "function-url": function_url}


def _expect(status: int, allow: str | None, kind: str | None, got_status: int, headers: dict[str, str],
            body: dict[str, Any]) -> None:
    assert got_status == status, (got_status, body)
    assert headers.get("allow") == allow
    if kind == "health":
        assert body["status"] == "ok" and "outputs" not in body
    elif kind == "prediction":
        assert len(body["outputs"]["y"][0]) == 4
    else:
        assert "outputs" not in body and body["error"]


@pytest.mark.parametrize("shape", sorted(EVENTS))
@pytest.mark.parametrize(("method", "path", "status", "allow", "kind"), TABLE, ids=IDS)
def test_lambda_http_events_follow_the_table(fronts: tuple[ModuleType, ModuleType], shape: str, method: str,
                                             path: str, status: int, allow: str | None, kind: str | None) -> None:
    handler = fronts[0]
    resp = handler.handler(EVENTS[shape](method, path), None)
    headers = {k.lower(): v for k, v in resp["headers"].items()}
    _expect(status, allow, kind, resp["statusCode"], headers, json.loads(resp["body"]))


@pytest.mark.parametrize(("method", "path", "status", "allow", "kind"), TABLE, ids=IDS)
def test_container_app_follows_the_same_table(fronts: tuple[ModuleType, ModuleType], method: str, path: str,
                                              status: int, allow: str | None, kind: str | None) -> None:
    app = fronts[1].app
    seen: dict[str, Any] = {}

    def start_response(line: str, headers: list[tuple[str, str]]) -> None:
        seen["status"], seen["headers"] = int(line.split()[0]), {k.lower(): v for k, v in headers}

    data = BODY.encode()
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "CONTENT_LENGTH": str(len(data)),
               "wsgi.input": io.BytesIO(data)}
    body = json.loads(b"".join(app(environ, start_response)))
    _expect(status, allow, kind, seen["status"], seen["headers"], body)


def test_direct_invocation_stays_a_prediction(fronts: tuple[ModuleType, ModuleType]) -> None:
    handler = fronts[0]
    assert len(handler.handler(json.loads(BODY), None)["outputs"]["y"]) == 1
    console_test = {"body": BODY}  # the Lambda console's test event: a body and nothing else is POST /
    assert handler.handler(console_test, None)["statusCode"] == 200
