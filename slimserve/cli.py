"""The `slimserve` command: argument parsing, progress display, exit codes and the one error handler.

Subcommands live in `slimserve/commands/` and are imported only when invoked, so `--help` stays fast.
Exit codes: 0 success (and "fits"), 1 a result that breaks a limit/budget or a tool failure, 2 bad input.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from slimserve import __version__
from slimserve.errors import SlimserveError

# name -> (module under slimserve.commands, one-line help). One registry; the CLI's choices come from it.
COMMANDS: dict[str, tuple[str, str]] = {
    "optimize": ("optimize", "Export a model to ONNX, apply a recipe, measure fidelity."),
    "check": ("check", "Hold an optimized model against platform limits; measure cold start and memory."),
    "profiles": ("profiles", "List platform profiles or show one with its sources."),
    "package": ("package", "Emit deployable artifacts: Lambda layer + function zips, or a container image."),
    "compare": ("compare", "Run several recipes and put their trade-offs side by side."),
    "build": ("build", "Compare, choose the best candidate under budgets, package and check it."),
}


def unknown(kind: str, name: str, close: Sequence[str], command_path: str) -> SlimserveError:
    """`error: no such command 'biuld'` + `hint: did you mean 'build'? see ...`: one shape for misspelt
    commands and options (click's own message puts the suggestion on the error line)."""
    see = f"see `{command_path} --help`"
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? {see}" if close else see
    return SlimserveError(f"no such {kind} {name!r}", hint=hint)


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        """A misspelt command gets the closest names (click >= 8.4 would suggest only from `self.commands`,
        which a lazy group leaves empty)."""
        name = click.utils.make_str(args[0])
        if name not in COMMANDS and not name.startswith("-") and not ctx.resilient_parsing:
            raise unknown("command", name, difflib.get_close_matches(name, list(COMMANDS), n=2), ctx.command_path)
        return super().resolve_command(ctx, args)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module = importlib.import_module(f"slimserve.commands.{COMMANDS[cmd_name][0]}")
        command: click.Command = module.command
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_) for name, (_, help_) in COMMANDS.items()])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="slimserve")
@click.option("--debug", is_flag=True, envvar="SLIMSERVE_DEBUG", help="Show tracebacks for errors.")
@click.option("--config", "config", type=click.Path(path_type=Path, dir_okay=False), envvar="SLIMSERVE_CONFIG",
              metavar="FILE", help="Options file (default: the nearest slimserve.toml or pyproject.toml "
                                   "[tool.slimserve] from here upwards). Command-line flags override it.")
@click.pass_context
def cli(ctx: click.Context, debug: bool, config: Path | None) -> None:
    """Make ML models fit serverless platforms: optimize, check, package, compare."""
    from slimserve.config import default_map

    ctx.obj = {"debug": debug}
    ctx.default_map = default_map(cli, ctx, config)  # click applies it as each command's defaults
    if not debug and ctx.invoked_subcommand in ONNXRUNTIME_COMMANDS:
        quiet_onnxruntime()


# Commands that run onnxruntime in this process (the others never import it, and stay fast).
ONNXRUNTIME_COMMANDS = ("optimize", "compare", "build", "check", "package")


def quiet_onnxruntime() -> None:
    """onnxruntime logs a failing node on stderr in red before raising, and its quantizer warns through
    Python's root logger ("WARNING:root:Quantized bias ..."); slimserve turns failures into its one `error:`
    line and records what matters in the result's notes, so both are noise (kept with --debug). Sessions
    that set no severity of their own use this default."""
    import logging

    import onnxruntime

    onnxruntime.set_default_logger_severity(4)
    logging.getLogger().setLevel(logging.ERROR)


def _error(message: str, hint: str | None = None) -> None:
    click.secho(f"error: {message}", fg="red", err=True)
    if hint:
        click.echo(f"hint: {hint}", err=True)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and map every failure to one `error:` line and an exit code (never a traceback)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("SLIMSERVE_DEBUG") not in (None, "", "0")
    if "--debug" in args:  # accepted before or after the subcommand, as the error hints suggest
        args = ["--debug"] + [a for a in args if a != "--debug"]
    try:
        result: Any = cli.main(args=args, prog_name="slimserve", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.exceptions.Abort:
        _error("interrupted")
        return 130
    except click.UsageError as exc:
        command = exc.ctx.command_path if exc.ctx is not None else "slimserve"
        name = getattr(exc, "option_name", None) or getattr(exc, "command_name", None)
        if isinstance(name, str) and type(exc).__name__ in ("NoSuchOption", "NoSuchCommand"):
            kind = "option" if isinstance(exc, click.NoSuchOption) else "command"
            error = unknown(kind, name, getattr(exc, "possibilities", None) or (), command)
            _error(error.message, error.hint)
        else:
            _error(exc.format_message(), hint=f"see `{command} --help`")
        return 2
    except click.ClickException as exc:
        _error(exc.format_message())
        return exc.exit_code
    except SlimserveError as exc:
        if debug:
            traceback.print_exc()
        _error(exc.message, exc.hint)
        return exc.exit_code
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    except OSError as exc:
        from slimserve.atomic import DISK_ERRNOS, disk_error, failed_path

        if exc.errno not in DISK_ERRNOS:  # not the disk: a bug like any other
            return _internal_error(exc, debug)
        if debug:
            traceback.print_exc()
        error = disk_error(failed_path(exc), exc)
        _error(error.message, error.hint)
        return error.exit_code
    except Exception as exc:  # noqa: BLE001  # a bug, not a user error: say so, keep the traceback behind --debug
        return _internal_error(exc, debug)
    return int(result or 0)


def _internal_error(exc: BaseException, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    _error(f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
           hint="rerun with --debug and report the traceback")
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
