"""Request limits and malformed bodies: each limit is a 413 naming it (direct calls an `{"error"}`),
malformed JSON is a 400 on both fronts with nothing logged, and limits come from the manifest or env."""

from __future__ import annotations

import importlib
import io
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from slimserve.runtime import RUNTIME_DIR
from slimserve.runtime.model_runtime import CHARS_PER_TOKEN, DEFAULT_MAX_TOKENS, RequestLimits
from tests.helpers_lambda import tensor_model_dir, text_model_dir
from tests.test_handler import http, load_handler

DEEP = "[" * 100_000 + "]" * 100_000
HUGE_INT = '{"inputs": [' + "9" * 5000 + "]}"


def test_limits_default_from_the_manifest_and_yield_to_the_environment() -> None:
    spec = {"kind": "text", "max_length": 256, "max_batch": 32}
    limits = RequestLimits.from_spec(spec, environ={})
    assert limits == RequestLimits(max_batch=32, max_chars=256 * CHARS_PER_TOKEN, max_tokens=DEFAULT_MAX_TOKENS,
                                   max_elements=1 << 20)
    recorded = RequestLimits.from_spec({**spec, "max_chars": 500, "max_tokens": 1000}, environ={})
    assert (recorded.max_chars, recorded.max_tokens) == (500, 1000)
    env = {"SLIMSERVE_MAX_TOKENS": "64", "SLIMSERVE_MAX_BATCH": "2", "SLIMSERVE_MAX_TEXT_CHARS": ""}
    assert RequestLimits.from_spec(spec, environ=env) == RequestLimits(2, 256 * CHARS_PER_TOKEN, 64, 1 << 20)
    assert RequestLimits.from_spec({"kind": "tensor"}, environ={}, row_elements=3 << 20).max_elements == 3 << 20
    with pytest.raises(ValueError, match="SLIMSERVE_MAX_TOKENS must be a positive integer"):
        RequestLimits.from_spec(spec, environ={"SLIMSERVE_MAX_TOKENS": "0"})


@pytest.fixture
def small_budget_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The tiny text model (max_length 16, max_batch 4) with a 20-token budget per request."""
    monkeypatch.setenv("SLIMSERVE_MAX_TOKENS", "20")
    return load_handler(text_model_dir(tmp_path / "text", max_batch=4, max_chars=200), monkeypatch)


def test_token_budget_counts_the_padded_batch_after_truncation(small_budget_text: ModuleType) -> None:
    long = " ".join(["hello"] * 20)  # 20 words, truncated to 16 tokens
    assert small_budget_text.handler(http({"inputs": [long]}), None)["statusCode"] == 200  # 1 × 16
    assert small_budget_text.handler(http({"inputs": ["hello world"] * 4}), None)["statusCode"] == 200  # 4 × 2
    resp = small_budget_text.handler(http({"inputs": [long, "hello"]}), None)  # padded: 2 × 16 = 32 > 20
    assert resp["statusCode"] == 413, resp
    error = json.loads(resp["body"])["error"]
    assert "2 texts × 16 tokens = 32 tokens > 20" in error and "SLIMSERVE_MAX_TOKENS" in error
    direct = small_budget_text.handler({"inputs": [long, "hello"]}, None)
    assert set(direct) == {"error"} and "max_tokens" in direct["error"]


def test_tensor_elements_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLIMSERVE_MAX_ELEMENTS", "40")
    handler = load_handler(tensor_model_dir(tmp_path / "tensor", max_batch=8), monkeypatch)
    assert handler.handler(http({"inputs": {"x": [[0.0] * 16] * 2}}), None)["statusCode"] == 200
    resp = handler.handler(http({"inputs": {"x": [[0.0] * 16] * 3}}), None)
    assert resp["statusCode"] == 413 and "48 numbers > 40" in json.loads(resp["body"])["error"]
    assert "SLIMSERVE_MAX_ELEMENTS" in handler.handler({"inputs": {"x": [[0.0] * 16] * 3}}, None)["error"]


def test_health_reports_the_limits(small_budget_text: ModuleType) -> None:
    resp = small_budget_text.handler({"rawPath": "/health", "requestContext": {"http": {"method": "GET"}}}, None)
    assert json.loads(resp["body"])["limits"] == {"max_batch": 4, "max_chars": 200, "max_tokens": 20,
                                                  "max_elements": 1 << 20}


@pytest.mark.parametrize("body", [DEEP, HUGE_INT, '{"inputs": ' + "[" * 5000 + "]" * 5000 + "}"],
                         ids=["deep-nesting", "huge-int", "deep-inputs"])
def test_malformed_json_is_a_400_on_lambda_without_a_logged_traceback(
        small_budget_text: ModuleType, body: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="slimserve"):
        resp = small_budget_text.handler(http(body, raw=True), None)
    assert resp["statusCode"] == 400, resp
    assert json.loads(resp["body"])["error"].startswith(("request body is not valid JSON", '"inputs" must be'))
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


@pytest.fixture
def container_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("SLIMSERVE_MODEL_DIR", str(tensor_model_dir(tmp_path / "tensor", max_batch=8)))
    monkeypatch.syspath_prepend(str(RUNTIME_DIR))
    for name in ("http_app", "lambda_handler"):
        sys.modules.pop(name, None)
    yield importlib.import_module("http_app").app
    for name in ("http_app", "lambda_handler"):
        sys.modules.pop(name, None)


@pytest.mark.parametrize("body", [DEEP, HUGE_INT], ids=["deep-nesting", "huge-int"])
def test_malformed_json_is_a_400_in_the_container_without_a_logged_traceback(
        container_app: Any, body: str, caplog: pytest.LogCaptureFixture) -> None:
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen["status"] = status

    data = body.encode()
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/predict", "CONTENT_LENGTH": str(len(data)),
               "wsgi.input": io.BytesIO(data)}
    with caplog.at_level(logging.DEBUG, logger="slimserve"):
        answer = json.loads(b"".join(container_app(environ, start_response)))
    assert seen["status"].startswith("400") and "not valid JSON" in answer["error"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


# -- the worst accepted request, through the real package in a fresh python3.12 -------------------------

_WORST_RUNNER = r"""
import json, os, sys, time
os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:1])  # one CPU: what the projection starts from
sys.path[:0] = json.loads(sys.argv[1])
t0 = time.perf_counter()
import lambda_handler
t1 = time.perf_counter()
events = json.loads(open(sys.argv[2]).read())
answers, times = [], []
for event in events:
    s = time.perf_counter()
    answers.append(lambda_handler.handler(event, None))
    times.append((time.perf_counter() - s) * 1000)
with open("/proc/self/status") as fh:
    peak = next(int(line.split()[1]) / 1024 for line in fh if line.startswith("VmHWM:"))
print(json.dumps({"init_ms": (t1 - t0) * 1000, "times": times, "peak_rss_mb": peak,
                  "answers": [a if "error" in a or "statusCode" in a else sorted(a) for a in answers]}))
"""


def _template_setting(template: str, key: str) -> int:
    return int(next(line.split(":")[1] for line in template.splitlines() if line.strip().startswith(f"{key}:")))


@pytest.mark.slow
def test_worst_accepted_minilm_request_fits_what_the_template_sets(minilm_int8: Path, tmp_path: Path) -> None:
    """The largest request the packaged handler accepts, built here from its limits (not the probe's),
    runs in a fresh python3.12 on one CPU within the template's MemorySize and Timeout (projected onto
    Lambda's CPU share at that memory); one more text is refused with a 413 naming the budget."""
    import subprocess
    import zipfile

    from tokenizers import Tokenizer

    from slimserve.bundle import load_bundle
    from slimserve.packagers.interpreters import find_python
    from slimserve.packagers.lambda_target import choose_memory, choose_timeout, package_lambda
    from slimserve.packagers.target import Target
    from slimserve.pipeline.check import CheckOptions, run_check

    exe = find_python("3.12")
    assert exe is not None, "pyenv's python3.12 is part of this machine kind"
    report = run_check(minilm_int8, ["aws-lambda-zip"], CheckOptions(runs=1))
    verdict = report.verdict("aws-lambda-zip")
    out = tmp_path / "out"
    package_lambda(load_bundle(minilm_int8), out, Target("3.12"), choose_memory(None, verdict),
                   choose_timeout(verdict), report)
    template = (out / "template.yaml").read_text()
    memory, timeout = _template_setting(template, "MemorySize"), _template_setting(template, "Timeout")

    runtime = json.loads((out / "slimserve.json").read_text())["runtime"]
    limits = RequestLimits.from_spec(runtime, environ={})
    max_length = int(runtime["max_length"])
    words = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "serverless", "functions", "scale", "to", "zero"]
    text = " ".join(words[i % len(words)] for i in range(limits.max_chars))[:limits.max_chars]
    tokenizer = Tokenizer.from_file(str(minilm_int8 / runtime["tokenizer"]))
    tokenizer.no_truncation()
    assert len(tokenizer.encode(text).ids) >= max_length  # every text is truncated to the full length
    count = min(limits.max_batch, limits.max_tokens // max_length)
    events = [{"inputs": [text] * count}, http({"inputs": [text] * (count + 1)})]
    (tmp_path / "events.json").write_text(json.dumps(events))

    for name, dest in (("layer.zip", "opt"), ("function.zip", "task")):
        with zipfile.ZipFile(out / name) as zf:
            zf.extractall(tmp_path / dest)
    proc = subprocess.run([str(exe), "-I", "-S", "-c", _WORST_RUNNER,
                           json.dumps([str(tmp_path / "task"), str(tmp_path / "opt" / "python")]),
                           str(tmp_path / "events.json")],
                          check=False, capture_output=True, text=True, timeout=600, env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["answers"][0] == ["embeddings"], result["answers"][0]
    refused = result["answers"][1]
    assert refused["statusCode"] == 413 and "max_tokens" in refused["body"], refused

    lambda_vcpus = memory / 1769  # Lambda: CPU in proportion to memory (profiles/aws-lambda-zip.toml)
    projected_s = (result["init_ms"] + result["times"][0]) * max(1.0, 1 / lambda_vcpus) / 1000
    assert result["peak_rss_mb"] + 64 <= memory, (result["peak_rss_mb"], memory)
    assert projected_s <= timeout, (projected_s, timeout)
