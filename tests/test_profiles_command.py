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


def test_profiles_show_format_json_is_the_parsed_profile() -> None:
    expected = load_profile("aws-lambda-container").model_dump(mode="json")
    for args in (("profiles", "show", "aws-lambda-container", "--format", "json"),
                 ("profiles", "--format", "json", "show", "aws-lambda-container"),  # the group's format applies
                 ("profiles", "show", "aws-lambda-container", "--json")):
        result = run_cli(*args)
        assert result.returncode == 0, (args, result.stderr)
        assert json.loads(result.stdout) == expected, args
    text = run_cli("profiles", "show", "aws-lambda-container", "--format", "text")
    assert text.returncode == 0 and text.stdout.startswith("aws-lambda-container: ")


def test_profiles_show_format_json_of_a_bad_name_is_one_clean_error() -> None:
    from tests.conftest import assert_clean_error

    result = run_cli("profiles", "show", "aws-lambda-zp", "--format", "json")
    assert_clean_error(result, contains="did you mean 'aws-lambda-zip'")
    assert result.stdout == ""
    assert_clean_error(run_cli("profiles", "show", "aws-lambda-zip", "--format", "yaml"), contains="yaml")
