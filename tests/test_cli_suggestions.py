"""A misspelt command or option: one `error:` line naming it and a `hint:` with the closest names, exit 2."""

from __future__ import annotations

import pytest

from tests.conftest import assert_clean_error, run_cli


@pytest.mark.parametrize(("args", "error", "hint"), [
    (("biuld",), "error: no such command 'biuld'", "hint: did you mean 'build'? see `slimserve --help`"),
    (("chek", "model"), "error: no such command 'chek'", "hint: did you mean 'check'? see `slimserve --help`"),
    (("profiles", "shw"), "error: no such command 'shw'",
     "hint: did you mean 'show'? see `slimserve profiles --help`"),
    (("build", "model", "-o", "out", "--min-fidelty", "0.9"), "error: no such option '--min-fidelty'",
     "hint: did you mean '--min-fidelity'? see `slimserve build --help`"),
    (("--dbug", "build"), "error: no such option '--dbug'", "hint: did you mean '--debug'? see `slimserve --help`"),
])
def test_misspellings_get_the_closest_name(args: tuple[str, ...], error: str, hint: str) -> None:
    result = run_cli(*args)
    assert_clean_error(result, code=2)
    assert result.stderr.splitlines() == [error, hint]
    assert result.stdout == ""


def test_nothing_close_points_at_help() -> None:
    result = run_cli("zzzz")
    assert_clean_error(result, code=2)
    assert result.stderr.splitlines() == ["error: no such command 'zzzz'", "hint: see `slimserve --help`"]


def test_real_commands_and_help_still_resolve() -> None:
    assert run_cli("--help").returncode == 0
    assert run_cli("build", "--help").returncode == 0
    assert run_cli("--version").returncode == 0
