"""`slimserve profiles` lists the shipped platform profiles; `slimserve profiles show NAME` prints one.

Both take `--format text|json`; json is the profile as parsed (`Profile.model_dump`), a list for the listing
and one object for `show`, so a script can read any limit without parsing the table. `profiles --format json
show NAME` works too (the group's format applies when `show` is given none); `show --json` is kept as an
alias.
"""

from __future__ import annotations

import json
import sys

import click


@click.group("profiles", invoke_without_command=True)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="text: a table; json: every shipped profile as parsed (a list, by name), for scripts.")
@click.pass_context
def command(ctx: click.Context, fmt: str) -> None:
    """List platform profiles, or show one with every limit and the page it comes from."""
    if ctx.invoked_subcommand is not None:
        return
    from slimserve.profiles.loader import list_profiles, load_profile

    if fmt == "json":  # the same shape as `profiles show NAME --json`, one per profile
        profiles = [load_profile(name).model_dump(mode="json") for name in list_profiles()]
        click.echo(json.dumps(profiles, indent=2, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="platform profiles (slimserve profiles show NAME)", title_justify="left")
    for column in ("name", "package", "memory", "python", "arch", "title"):
        table.add_column(column, no_wrap=column != "title")
    for name in list_profiles():
        p = load_profile(name)
        py = p.runtime.python
        table.add_row(p.name, p.package, p.memory.describe(), py[0] if len(py) == 1 else f"{py[0]}–{py[-1]}",
                      ", ".join(p.runtime.archs), p.title)
    Console(file=sys.stdout, highlight=False, width=None if sys.stdout.isatty() else 140).print(table)


@command.command("show")
@click.argument("name", metavar="NAME|FILE")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default=None,
              help="text (default): every limit with its source; json: the parsed profile, for scripts.")
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.pass_context
def show(ctx: click.Context, name: str, fmt: str | None, as_json: bool) -> None:
    """Print one profile (a shipped NAME or a profile FILE) with the source of every number."""
    from slimserve.profiles.loader import load_profile
    from slimserve.profiles.schema import LIMIT_FAMILIES

    parent = ctx.parent.params.get("fmt") if ctx.parent is not None else None
    if as_json and fmt == "text":
        raise click.UsageError("--json and --format text contradict each other")
    p = load_profile(name)
    if as_json or (fmt or parent) == "json":
        click.echo(json.dumps(p.model_dump(mode="json"), indent=2, ensure_ascii=False))
        return
    lines = [f"{p.name}: {p.title}", f"  provider {p.provider}, package {p.package}", f"  docs     {p.docs}", ""]
    rt = p.runtime
    lines += [f"  python   {', '.join(rt.python)}", f"  arch     {', '.join(rt.archs)}",
              f"           source: {rt.source}"] + ([f"           note: {rt.note}"] if rt.note else [])
    mem = p.memory
    default = f" (default {mem.default:,})" if mem.default is not None else ""
    lines += [f"  memory   {mem.describe()}{default}", f"           source: {mem.source}"]
    lines += [f"           note: {mem.note}"] if mem.note else []
    lines += [f"  cpu      {p.cpu.describe()}", f"           source: {p.cpu.source}"]
    lines += [f"           note: {p.cpu.note}"] if p.cpu.note else []
    lines += ["", "  limits (checked)"]
    for key in LIMIT_FAMILIES:
        limit = getattr(p.limits, key)
        if limit is None:
            continue
        flags = [f for f in (limit.severity == "warn" and "warn only", limit.per_archive and "per archive") if f]
        extra = f" [{', '.join(flags)}]" if flags else ""
        lines += [f"    {key:<16} {limit.display()}{extra}", f"{'':21}source: {limit.source}"]
        lines += [f"{'':21}note: {limit.note}"] if limit.note else []
    if p.image is not None:
        b = p.image.base_size
        lines += ["", f"  image    base {p.image.base} ≈ {b.display()} (estimate)", f"           source: {b.source}"]
        lines += [f"           note: {b.note}"] if b.note else []
    if p.packager is not None:
        k = p.packager
        lines += ["", f"  packager {k.artifact}, driven by {k.interface}"
                      + (f" on port {k.port}" if k.port is not None else "")]
        lines += [f"           base {k.base}"] if k.base else []
        lines += [f"           handler in {k.app_dir}, runtime closure in {k.packages_dir}"]
        lines += [f"           source: {k.source}"] if k.source else []
        lines += [f"           note: {k.note}"] if k.note else []
    if p.info:
        lines += ["", "  other limits (informational)"]
        for key, limit in sorted(p.info.items()):
            lines += [f"    {key:<24} {limit.display()}", f"{'':29}source: {limit.source}"]
            lines += [f"{'':29}note: {limit.note}"] if limit.note else []
    lines += ["", "  sources"] + [f"    {url}" for url in p.sources()]
    click.echo("\n".join(lines))
