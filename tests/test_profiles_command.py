"""`slimserve profiles`: the table for people, and `--format json` for scripts (the parsed profiles)."""

from __future__ import annotations

import json

from slimserve.profiles.loader import list_profiles, load_profile
from tests.conftest import run_cli


def test_profiles_json_lists_every_shipped_profile_as_parsed() -> None:
    result = run_cli("profiles", "--format", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [p["name"] for p in data] == list(list_profiles())
    lam = next(p for p in data if p["name"] == "aws-lambda-zip")
    assert lam == load_profile("aws-lambda-zip").model_dump(mode="json")  # same shape as `show NAME --json`
    shown = json.loads(run_cli("profiles", "show", "aws-lambda-zip", "--json").stdout)
    assert shown == lam


def test_profiles_text_is_the_default_table() -> None:
    result = run_cli("profiles")
    assert result.returncode == 0, result.stderr
    assert "platform profiles" in result.stdout and all(name in result.stdout for name in list_profiles())
