"""Config files: found from the working folder upwards, strict about keys, overridden by flags."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from slimserve.config import find_config, to_default_map
from slimserve.errors import SlimserveError
from tests.conftest import assert_clean_error, run_cli


@click.command("demo")
@click.argument("model")
@click.option("--platform", "platforms", multiple=True)
@click.option("--min-fidelity", type=float)
@click.option("-o", "--output", type=click.Path(path_type=Path))
@click.option("--debug-mode", is_flag=True)
def demo(model: str, platforms: tuple[str, ...], min_fidelity: float | None, output: Path | None,
         debug_mode: bool) -> None:
    click.echo(f"{model}|{','.join(platforms)}|{min_fidelity}|{output}|{debug_mode}")


@click.command("other")
@click.option("--python")
def other(python: str | None) -> None:
    click.echo(python)


COMMANDS = {"demo": demo, "other": other}


def test_tables_top_level_keys_paths_and_lists(tmp_path: Path) -> None:
    data = {"python": "3.12", "demo": {"model": "m", "platform": "aws-lambda-zip", "min-fidelity": 0.99,
                                       "output": "dist/out", "debug-mode": True}}
    result = to_default_map(tmp_path / "slimserve.toml", data, COMMANDS)
    assert result == {"demo": {"model": "m", "platforms": ["aws-lambda-zip"], "min_fidelity": 0.99,
                               "output": str(tmp_path / "dist" / "out"), "debug_mode": True},
                      "other": {"python": "3.12"}}
    # underscores work too, and a list for a repeatable option
    again = to_default_map(tmp_path / "x.toml", {"demo": {"min_fidelity": 0.9, "platforms": ["a", "b"]}}, COMMANDS)
    assert again == {"demo": {"min_fidelity": 0.9, "platforms": ["a", "b"]}}


@pytest.mark.parametrize(("data", "message", "hint"), [
    ({"demo": {"min-fidelty": 0.9}}, "[demo] min-fidelty: unknown key", "did you mean 'min-fidelity'?"),
    ({"dmeo": {"model": "x"}}, "dmeo: unknown key", "did you mean 'demo'?"),
    ({"pyhton": "3.12"}, "pyhton: unknown key", "did you mean 'python'?"),
    ({"demo": {"debug-mode": "yes"}}, "[demo] debug-mode must be true or false", None),
    ({"demo": {"min-fidelity": [0.9]}}, "[demo] min-fidelity takes one value", None),
    ({"demo": "aws"}, "[demo] must be a table", None),
])
def test_strict_keys_and_kinds(tmp_path: Path, data: dict[str, object], message: str, hint: str | None) -> None:
    with pytest.raises(SlimserveError) as info:
        to_default_map(tmp_path / "slimserve.toml", data, COMMANDS)
    assert message in info.value.message
    if hint:
        assert info.value.hint == hint


def test_flags_override_the_file(tmp_path: Path) -> None:
    defaults = to_default_map(tmp_path / "c.toml", {"demo": {"model": "m", "platform": "p", "min-fidelity": 0.9}},
                              COMMANDS)
    from click.testing import CliRunner

    runner = CliRunner()
    group = click.Group(commands=COMMANDS)
    assert runner.invoke(group, ["demo"], default_map=defaults).output.startswith("m|p|0.9|")
    out = runner.invoke(group, ["demo", "other-model", "--platform", "q", "--min-fidelity", "0.5"],
                        default_map=defaults).output
    assert out.startswith("other-model|q|0.5|")


def test_search_from_the_working_folder_upwards(tmp_path: Path) -> None:
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert find_config(deep) is None
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')  # no [tool.slimserve]: skipped
    (tmp_path / "a" / "pyproject.toml").write_text('[tool.slimserve.build]\nplatform = "aws-lambda-zip"\n')
    found = find_config(deep)
    assert found is not None and found[0] == tmp_path / "a" / "pyproject.toml"
    assert found[1] == {"build": {"platform": "aws-lambda-zip"}}
    (deep / "slimserve.toml").write_text('[build]\nplatform = "gcp-cloud-run"\n')
    assert find_config(deep) == (deep / "slimserve.toml", {"build": {"platform": "gcp-cloud-run"}})


# --- through the real CLI ---------------------------------------------------------------------------

def test_cli_applies_the_file_and_flags_win(tmp_path: Path, tiny_onnx: Path) -> None:
    # `check` rejects a memory setting before measuring anything: a cheap way to see which value won.
    (tmp_path / "slimserve.toml").write_text(
        f'[check]\npath = "{tiny_onnx.name}"\nplatform = "aws-lambda-zip"\nmemory = 20000\n')
    from_file = run_cli("check", cwd=tmp_path)  # PATH, platform and memory all from the file
    assert_clean_error(from_file, contains="--memory 20000 MB")
    from_flag = run_cli("check", "--memory", "20001", cwd=tmp_path)
    assert_clean_error(from_flag, contains="--memory 20001 MB")
    sub = tmp_path / "sub"
    sub.mkdir()
    assert_clean_error(run_cli("check", cwd=sub), contains="--memory 20000 MB")  # found from a subfolder
    # a top-level key reaches every command that has the option
    (tmp_path / "slimserve.toml").write_text(f'python = "3.9"\n[check]\npath = "{tiny_onnx.name}"\n'
                                             'platform = "aws-lambda-zip"\n')
    assert_clean_error(run_cli("check", cwd=tmp_path), contains="unsupported target Python '3.9'")


def test_cli_unknown_key_is_one_line_with_a_suggestion(tmp_path: Path) -> None:
    (tmp_path / "slimserve.toml").write_text('[build]\nplatfrom = "aws-lambda-zip"\n')
    assert_clean_error(run_cli("build", "x", "-o", "out", cwd=tmp_path), contains="did you mean 'platform'")
    (tmp_path / "slimserve.toml").write_text('[build\n')
    assert_clean_error(run_cli("profiles", cwd=tmp_path), contains="not valid TOML")
    explicit = tmp_path / "ci.toml"
    explicit.write_text('[compare]\njobs = 0\n')
    (tmp_path / "slimserve.toml").unlink()
    result = run_cli("--config", str(explicit), "compare", "x", "-o", "out", cwd=tmp_path)
    assert_clean_error(result, contains="jobs")
