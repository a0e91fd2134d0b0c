"""`slimserve package PATH --target lambda|container|azure-functions -o OUT`: emit deployable artifacts.

Lambda: layer.zip + function.zip + template.yaml + slimserve.json + DEPLOY.md, after a `check` against
aws-lambda-zip whose recommended memory goes into the template and whose results go into the manifest.
Azure Functions (Flex Consumption): function.zip + slimserve.json + DEPLOY.md (the `az` commands), after a
`check` against azure-functions-flex whose recommended instance memory and timeout they use.
Exit codes: 0 written (and fits), 1 written but the check says it does not fit, 2 bad input.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from slimserve.commands.options import arch_option, numpy_option, python_option
from slimserve.packagers.container import DEFAULT_PLATFORM
from slimserve.profiles.loader import load_profile, packaged_platforms

_FLEX = load_profile("azure-functions-flex")  # its Pythons and instance sizes, for --help
_FLEX_PYTHONS = ", ".join(_FLEX.runtime.python)
_FLEX_SIZES = "/".join(str(v) for v in _FLEX.memory.values)

if TYPE_CHECKING:
    from slimserve.packagers.container import ContainerArtifacts
    from slimserve.report import Report


@click.command("package", context_settings={"max_content_width": 110})
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--target", "kind", type=click.Choice(["lambda", "container", "azure-functions"]), required=True,
              help="lambda: layer + function zips and a SAM template; container: an OCI image; "
                   "azure-functions: a Flex Consumption function app zip and its az commands.")
@click.option("-o", "--output", "out", type=click.Path(path_type=Path, file_okay=False), required=True,
              metavar="OUT", help="Folder to write (replaced atomically).")
@python_option(f"Target Python version (azure-functions: {_FLEX_PYTHONS}).")
@arch_option()
@numpy_option()
@click.option("--memory", "memory_mb", type=click.IntRange(min=1), metavar="MB",
              help=f"Lambda memory setting (azure-functions: the instance memory, {_FLEX_SIZES}). "
                   "Default: the one `check` recommends.")
@click.option("--no-check", is_flag=True, help="Skip measuring cold start and limits (faster; no `checks`).")
@click.option("--snapstart/--no-snapstart", default=None,
              help="Lambda: SnapStart in template.yaml (a published version behind the `live` alias). "
                   "Default: on for python3.12 and later.")
@click.option("--tracing/--no-tracing", default=False,
              help="Lambda: X-Ray active tracing in template.yaml (Tracing: Active; SAM adds the X-Ray write "
                   "policy to the function's role) and in DEPLOY.md's CLI routes. The handler needs no X-Ray SDK.")
@click.option("--base", "base_ref", metavar="REF",
              help="Container base image (registry reference or oci:PATH). Default depends on --platform.")
@click.option("--platform", "platform", type=click.Choice(packaged_platforms("container")),
              default=DEFAULT_PLATFORM, show_default=True,
              help="Container platform the image is for (the profiles with a container [packager]).")
@click.option("--push", "push_ref", metavar="REF", help="Push the image to this reference (skips blobs it has).")
@click.option("--insecure-registry", "insecure", multiple=True, metavar="HOST:PORT",
              help="Registries to reach over plain HTTP (repeatable).")
@click.option("--engine", type=click.Choice(["auto", "none", "docker"]), default="auto", show_default=True,
              help="docker: build with a Docker daemon; auto: use one if it answers, else build daemonless.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="Summary format on stdout.")
def command(path: Path, kind: str, out: Path, python: str, arch: str, numpy: str, memory_mb: int | None, no_check: bool,
            snapstart: bool | None, tracing: bool, base_ref: str | None, platform: str, push_ref: str | None, insecure: tuple[str, ...], engine: str,
            fmt: str) -> int:
    """Package an optimize output folder (or a bare .onnx) for a serverless platform."""
    from slimserve.api import package
    from slimserve.packagers.target import Target
    from slimserve.ui import progress_for

    if kind in ("lambda", "azure-functions"):
        _refuse_container_options(base=base_ref, push=push_ref, insecure_registry=insecure)
    if kind != "lambda" and snapstart is not None:
        raise click.UsageError("--snapstart/--no-snapstart apply only to --target lambda")
    if kind != "lambda" and tracing:
        raise click.UsageError("--tracing applies only to --target lambda")
    if kind == "azure-functions":
        return _azure(path, out, python, arch, numpy, memory_mb, no_check, fmt)
    with progress_for(sys.stderr) as progress:
        # every shipped file proven to lie inside the folder, the model loaded in onnxruntime (even with
        # --no-check), references without credentials: all before anything is built or written
        result = package(path, out, target="container" if kind == "container" else "lambda", python=python,
                         arch=arch, memory_mb=memory_mb, check=not no_check, platform=platform, base=base_ref,
                         push=push_ref, insecure_registries=insecure, engine=engine, snapstart=snapstart,
                         tracing=tracing, progress=progress, numpy=numpy)
    if result.image is not None:
        return _container(result.image, out, platform, fmt)
    artifacts, report, fits = result.lambda_artifacts, result.report, result.fits
    assert artifacts is not None  # a lambda Package always carries its artifacts
    target = Target.parse(python, arch)  # for the runtime's name only: the numpy build was checked above
    rows = [(z.path.name, z.bytes, z.unzipped_bytes, z.sha256) for z in (artifacts.layer, artifacts.function)]
    summary = {"target": "lambda", "out": str(artifacts.out), "runtime": target.lambda_runtime, "arch": arch,
               "memory_mb": artifacts.memory_mb, "handler": "lambda_handler.handler", "fits": fits,
               "artifacts": {name: {"bytes": b, "unzipped_bytes": u, "sha256": s} for name, b, u, s in rows},
               "files": [str(artifacts.template), str(artifacts.manifest), str(artifacts.deploy)]}
    if fmt == "json":
        click.echo(json.dumps(summary, indent=2))
    else:
        _table(rows, summary, report)
    return 1 if fits is False else 0


def _refuse_container_options(**given: Any) -> None:
    """Options that only shape images must not be silently ignored for a zip (Lambda, Azure Functions)."""
    ctx = click.get_current_context()
    explicit = [name for name in ("platform", "engine")
                if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
    explicit += [name for name, value in given.items() if value]
    if explicit:
        flags = ", ".join("--" + name.replace("_", "-") for name in explicit)
        verb = "applies" if len(explicit) == 1 else "apply"
        raise click.UsageError(f"{flags} {verb} only to --target container")


def _azure(path: Path, out: Path, python: str, arch: str, numpy: str, memory_mb: int | None, no_check: bool, fmt: str) -> int:
    """`--target azure-functions`: function.zip for Flex Consumption, sized by a check against its profile."""
    from slimserve.packagers.azure_functions import ENTRY, PLATFORM, package_from_path
    from slimserve.ui import progress_for

    with progress_for(sys.stderr) as progress:
        artifacts, report = package_from_path(path, out, python=python, arch=arch, numpy=numpy, memory_mb=memory_mb,
                                              check=not no_check, progress=progress)
    verdict = None if report is None else report.verdict(PLATFORM)
    fits = None if verdict is None else verdict.fits
    z = artifacts.function
    summary = {"target": "azure-functions", "platform": PLATFORM, "out": str(artifacts.out),
               "python": artifacts.python, "arch": arch, "memory_mb": artifacts.memory_mb,
               "timeout_s": artifacts.timeout_s, "entry": f"{ENTRY}:app", "fits": fits,
               "artifacts": {z.path.name: {"bytes": z.bytes, "unzipped_bytes": z.unzipped_bytes, "sha256": z.sha256}},
               "files": [str(artifacts.manifest), str(artifacts.deploy)]}
    if fmt == "json":
        click.echo(json.dumps(summary, indent=2))
        return 1 if fits is False else 0
    click.echo(f"Azure Functions (Flex Consumption) app for Python {artifacts.python}, instance memory "
               f"{artifacts.memory_mb} MB, functionTimeout {artifacts.timeout_s} s")
    click.echo(f"  function.zip: {z.bytes / 1e6:.1f} MB zipped, {z.unzipped_bytes / 1e6:.1f} MB unzipped, "
               f"sha256 {z.sha256[:16]}")
    if report is not None and verdict is not None:
        click.echo(f"  {verdict.name}: {'fits' if verdict.fits else 'DOES NOT FIT'}; cold start "
                   f"{report.cold_start.total_ms:.0f} ms measured here (python {report.cold_start.python}), "
                   f"peak RSS {report.peak_rss_mb:.0f} MB")
        for finding in verdict.findings:
            if finding.status != "pass":
                click.echo(f"  {finding.status}: {finding.reason}")
    click.echo(f"written to {artifacts.out} (slimserve.json, DEPLOY.md with the az commands)")
    return 1 if fits is False else 0


def _container(result: ContainerArtifacts, out: Path, platform: str, fmt: str) -> int:
    facts = result.facts.to_dict()
    summary = {"target": "container", "out": str(out), **facts, "platform": platform,
               "image_platform": facts.get("platform"), "pushed": result.pushed}
    if fmt == "json":
        click.echo(json.dumps(summary, indent=2, default=str))
    else:
        click.echo(f"container image for {platform} written to {out}/image (OCI layout), "
                   f"build context in {out}/context")
        for key in ("digest", "uncompressed_bytes", "compressed_bytes"):
            if key in facts:
                click.echo(f"  {key}: {facts[key]}")
        if summary["pushed"]:
            click.echo(f"  pushed: {summary['pushed']}")
    return 0


def _table(rows: list[tuple[str, int, int, str]], summary: dict[str, Any], report: Report | None) -> None:
    from rich.console import Console
    from rich.table import Table

    from slimserve.packagers.lambda_target import PLATFORM

    table = Table(title=f"Lambda artifacts ({summary['runtime']}, {summary['arch']}, {summary['memory_mb']} MB)")
    for col, justify in (("artifact", "left"), ("zipped", "right"), ("unzipped", "right"), ("sha256", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for name, zipped, unzipped, sha in rows:
        table.add_row(name, f"{zipped / 1e6:.1f} MB", f"{unzipped / 1e6:.1f} MB", sha[:16])
    console = Console(file=sys.stdout)
    console.print(table)
    if report is not None:
        lam = report.verdict(PLATFORM)
        cold = report.cold_start
        verdict = "fits" if lam.fits else "DOES NOT FIT"
        console.print(f"{lam.name}: {verdict}; cold start {cold.total_ms:.0f} ms measured here "
                      f"(python {cold.python}), peak RSS {report.peak_rss_mb:.0f} MB")
        for finding in lam.findings:
            if finding.status != "pass":
                console.print(f"  {finding.status}: {finding.reason}")
    console.print(f"written to {summary['out']} (template.yaml, slimserve.json, DEPLOY.md)")
