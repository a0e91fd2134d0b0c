"""Options from a file, so a pipeline line stays short: `slimserve.toml`, or `[tool.slimserve]` in pyproject.toml.

Searched from the working folder upwards; in each folder `slimserve.toml` wins over `pyproject.toml`, and a
pyproject.toml without `[tool.slimserve]` is skipped. `--config FILE` (or SLIMSERVE_CONFIG) names one.

    # slimserve.toml
    python = "3.12"                 # top level: every command that has the option
    [build]                         # one table per command: that command only (wins over the top level)
    model = "all-MiniLM-L6-v2"
    platform = "aws-lambda-zip"
    min-fidelity = 0.99
    output = "dist/model"           # paths are relative to the file's folder

Keys are the long option names (`min-fidelity`; `min_fidelity` works too) or argument names (`model`).
The result is a click `default_map` ({command: {param: value}}): click applies it as the defaults, so a
flag on the command line always wins. Strict: an unknown key or a value of the wrong kind is a one-line
error with a suggestion.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import click

from slimserve.errors import SlimserveError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CONFIG_NAME = "slimserve.toml"
ENV_VAR = "SLIMSERVE_CONFIG"


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise SlimserveError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SlimserveError(f"{path} is not valid TOML: {exc}") from None


def find_config(start: Path) -> tuple[Path, dict[str, Any]] | None:
    """The nearest config at or above `start`: (file, its slimserve table), or None."""
    start = start.absolute()
    for folder in (start, *start.parents):
        own = folder / CONFIG_NAME
        if own.is_file():
            return own, read_toml(own)
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file():
            table = read_toml(pyproject).get("tool", {}).get("slimserve")
            if table is not None:
                if not isinstance(table, dict):
                    raise SlimserveError(f"{pyproject}: [tool.slimserve] must be a table")
                return pyproject, table
    return None


def load_config(explicit: Path | None = None, cwd: Path | None = None) -> tuple[Path, dict[str, Any]] | None:
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise SlimserveError(f"config file {path} does not exist")
        data = read_toml(path)
        if path.name == "pyproject.toml":
            data = data.get("tool", {}).get("slimserve", {})
        return path, data
    return find_config(cwd or Path.cwd())


# --- turning a table into a click default_map ----------------------------------------------------------

def _keys(param: click.Parameter) -> list[str]:
    """The names a config file may use for a parameter: long option names, and the parameter's name."""
    names = [o.lstrip("-") for o in param.opts if o.startswith("--")] if isinstance(param, click.Option) else []
    if param.name:
        names += [param.name, param.name.replace("_", "-")]
    return list(dict.fromkeys(names))


def _settable(command: click.Command) -> dict[str, click.Parameter]:
    """config key -> parameter, for every parameter a file may set (not --help or eager actions)."""
    found: dict[str, click.Parameter] = {}
    for param in command.params:
        if not param.expose_value or param.name in (None, "help"):
            continue
        for key in _keys(param):
            found.setdefault(key, param)
    return found


def _where(path: Path, table: str | None, key: str) -> str:
    return f"{path}: {'[' + table + '] ' if table else ''}{key}"


def _convert(path: Path, table: str | None, key: str, param: click.Parameter, value: Any) -> Any:
    """Check a TOML value's kind against the parameter; click converts and range-checks it afterwards."""
    where = _where(path, table, key)
    many = param.multiple or param.nargs == -1
    if isinstance(param, click.Option) and param.is_flag and not param.count:
        if not isinstance(value, bool):
            raise SlimserveError(f"{where} must be true or false, got {value!r}")
        return value
    if many:
        items = [value] if not isinstance(value, list) else value
        if any(isinstance(v, (list, dict)) for v in items):
            raise SlimserveError(f"{where} must be a string or a list of strings")
        return [_path(path, param, v) for v in items]
    if isinstance(value, (list, dict)):
        raise SlimserveError(f"{where} takes one value, got a {'list' if isinstance(value, list) else 'table'}")
    return _path(path, param, value)


def _path(config: Path, param: click.Parameter, value: Any) -> Any:
    """Relative paths in a config file are relative to the file's folder, wherever the command runs."""
    if isinstance(param.type, click.Path) and isinstance(value, str) and not Path(value).is_absolute():
        return str((config.parent / value).absolute())
    return value


def _unknown(path: Path, table: str | None, key: str, known: Iterable[str]) -> SlimserveError:
    close = difflib.get_close_matches(key, sorted(set(known)), n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(sorted(set(known)))}"
    return SlimserveError(f"{_where(path, table, key)}: unknown key", hint=hint)


def to_default_map(path: Path, data: Mapping[str, Any],
                   commands: Mapping[str, click.Command]) -> dict[str, dict[str, Any]]:
    """{command: {param name: value}} from a config table; raises on any key no command knows."""
    settable = {name: _settable(cmd) for name, cmd in commands.items()}
    shared_keys = {k for keys in settable.values() for k in keys}
    result: dict[str, dict[str, Any]] = {name: {} for name in commands}
    tables = {k: v for k, v in data.items() if k in commands}
    for key, value in data.items():
        if key in commands:
            if not isinstance(value, dict):
                raise SlimserveError(f"{path}: [{key}] must be a table of options for `slimserve {key}`")
            continue
        if isinstance(value, dict):
            raise _unknown(path, None, key, list(commands))
        if key not in shared_keys:
            raise _unknown(path, None, key, list(shared_keys) + list(commands))
        for name, keys in settable.items():
            if key in keys:
                param = keys[key]
                result[name][str(param.name)] = _convert(path, None, key, param, value)
    for name, table in tables.items():
        for key, value in table.items():
            if key not in settable[name]:
                raise _unknown(path, name, key, settable[name])
            param = settable[name][key]
            result[name][str(param.name)] = _convert(path, name, key, param, value)
    return {name: values for name, values in result.items() if values}


def default_map(group: click.Group, ctx: click.Context, explicit: Path | None = None,
                cwd: Path | None = None) -> dict[str, dict[str, Any]] | None:
    """The click default_map for `group`'s commands from the nearest config file, or None without one."""
    found = load_config(explicit, cwd)
    if found is None:
        return None
    path, data = found
    commands: dict[str, click.Command] = {}
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is not None:
            commands[name] = command
    return to_default_map(path, data, commands)
