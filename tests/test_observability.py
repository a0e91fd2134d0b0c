"""The shipped handler's log lines and CloudWatch Embedded Metric Format documents, parsed as CloudWatch
would: one JSON line at init, one per request (request id, route, status, batch, duration), and with
SLIMSERVE_METRICS=emf the metric documents the EMF specification describes."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.helpers_lambda import text_model_dir
from tests.test_handler import http, load_handler


def _lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def _emf_ok(doc: dict[str, Any]) -> None:
    """The structure CloudWatch requires of an EMF document (its specification's required members)."""
    meta = doc["_aws"]
    assert isinstance(meta["Timestamp"], int)
    (directive,) = meta["CloudWatchMetrics"]
    assert directive["Namespace"] and directive["Dimensions"] == [["Task"]]
    assert isinstance(doc["Task"], str)
    for metric in directive["Metrics"]:
        assert metric["Unit"] in ("Milliseconds", "Count")
        assert isinstance(doc[metric["Name"]], (int, float))


def test_one_line_at_init_and_one_per_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("SLIMSERVE_METRICS", raising=False)
    handler = load_handler(text_model_dir(tmp_path / "text", max_batch=4, max_chars=200), monkeypatch)
    (init,) = _lines(capsys.readouterr().out)
    assert init["event"] == "init" and init["task"] == "feature-extraction" and init["init_ms"] > 0
    context = SimpleNamespace(aws_request_id="c0ffee")
    handler.handler({"inputs": ["serverless models", "start fast"]}, context)
    handler.handler(http({"inputs": ["x" * 500]}), context)  # over max_chars: 413
    handler.handler(http({"inputs": 3}), context)
    handler.handler({"version": "2.0", "rawPath": "/health", "requestContext": {"http": {"method": "GET"}}}, None)
    lines = _lines(capsys.readouterr().out)
    assert [line["event"] for line in lines] == ["request"] * 4
    direct, over, bad, health = lines
    assert direct == {**direct, "request_id": "c0ffee", "route": "invoke", "action": "predict", "status": 200,
                      "outcome": "ok", "batch": 2}
    assert direct["duration_ms"] > 0
    assert (over["status"], over["outcome"], over["route"], over["batch"]) == (413, "client_error", "POST /", 1)
    assert (bad["status"], bad["batch"]) == (400, 1)
    assert (health["action"], health["status"], health["request_id"]) == ("health", 200, None)


def test_emf_metrics_when_switched_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SLIMSERVE_METRICS", "emf")
    handler = load_handler(text_model_dir(tmp_path / "text", max_batch=4, max_chars=200), monkeypatch)
    handler.handler({"inputs": ["one", "two", "three"]}, None)
    handler.handler({"inputs": []}, None)
    docs = [line for line in _lines(capsys.readouterr().out) if "_aws" in line]
    for doc in docs:
        _emf_ok(doc)
    init, ok, bad = docs
    assert init["InitDuration"] > 0
    assert ok["BatchSize"] == 3 and ok["Errors"] == 0 and ok["ClientErrors"] == 0 and ok["InferenceDuration"] > 0
    assert bad["ClientErrors"] == 1


def test_logs_can_be_switched_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SLIMSERVE_LOG", "off")
    monkeypatch.delenv("SLIMSERVE_METRICS", raising=False)
    handler = load_handler(text_model_dir(tmp_path / "text"), monkeypatch)
    handler.handler({"inputs": ["quiet"]}, None)
    assert _lines(capsys.readouterr().out) == []
