"""`check` on a text-generation model (issue 13): the worst accepted request generates every new token the
limit allows, and the decode speed (time to first token, tokens/s) measured in fresh processes is
projected onto each platform's CPU share and held against `--min-tokens-per-s`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from slimserve.packagers.interpreters import find_python
from tests.conftest import assert_clean_error, require, run_cli
from tests.test_family_generation import CHATML, _build


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = _build(tmp_path_factory.mktemp("llama") / "model", "llama", chat_template=CHATML)
    out = tmp_path_factory.mktemp("llama-fp32") / "out"
    result = run_cli("optimize", str(folder), "-o", str(out), "--recipe", "fp32", "--format", "json")
    assert result.returncode == 0, result.stderr
    return out


def _check(out: Path, *args: str) -> tuple[int, dict[str, Any]]:
    result = run_cli("check", str(out), "--platform", "aws-lambda-zip", "--platform", "gcp-cloud-run",
                     "--runs", "1", "--format", "json", *args)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def _finding(platform: dict[str, Any], rule: str) -> dict[str, Any]:
    found = [f for f in platform["checks"] if f["id"] == rule]
    assert len(found) == 1, platform["checks"]
    return found[0]


@pytest.mark.slow
def test_check_measures_and_projects_generation_speed(llama: Path) -> None:
    require(find_python("3.12"), "python3.12")
    runtime = json.loads((llama / "slimserve.json").read_text())["runtime"]
    code, report = _check(llama)
    assert code == 0
    cold = report["cold_start"]
    limit = runtime["max_new_tokens_limit"]
    # the worst request asks for every token the limit allows, beside the shortest prompt (BOS + 1 token)
    assert runtime["worst_new_tokens"] == min(limit, runtime["context_window"] - 2)
    assert f"+ {runtime['worst_new_tokens']} new tokens" in cold["worst_request"]
    lambda_zip = report["platforms"]["aws-lambda-zip"]
    speed = _finding(lambda_zip, "generation-speed")
    assert speed["status"] == "pass" and speed["unit"] == "tokens/s" and speed["measured"] > 0
    assert "time to first token" in speed["reason"] and speed["estimate"]
    # a floor between the small settings' share of a vCPU and a full one: the recommended memory rises to it
    floor = round(speed["measured"] * 4, 1)
    code, held = _check(llama, "--min-tokens-per-s", str(floor))
    lam = held["platforms"]["aws-lambda-zip"]
    assert code == 0 and lam["recommended_memory_mb"] > lambda_zip["recommended_memory_mb"]
    assert _finding(lam, "generation-speed")["measured"] >= floor
    # a floor no setting reaches: exit 1, the finding says what to do
    code, failed = _check(llama, "--min-tokens-per-s", "1e9")
    lam = failed["platforms"]["aws-lambda-zip"]
    assert code == 1 and lam["recommended_memory_mb"] is None
    assert _finding(lam, "generation-speed")["status"] == "fail"
    assert "int4-weight" in _finding(lam, "generation-speed")["reason"]


def test_min_tokens_per_s_is_for_generation_models_and_positive(tmp_path: Path) -> None:
    result = run_cli("check", str(tmp_path), "--min-tokens-per-s", "0")
    assert_clean_error(result, contains="min-tokens-per-s")
