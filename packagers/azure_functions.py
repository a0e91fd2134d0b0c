"""Azure Functions (Flex Consumption, Linux) zip: the v2 programming model around the shipped runtime.

function.zip layout (deployed to /home/site/wwwroot, the Functions host's script root):
    function_app.py                      slimserve/runtime/azure_function_app.py: `app` with predict + health
    lambda_handler.py, model_runtime.py, task_*.py ...   the runtime every front shares (routing, limits)
    host.json                            version 2.0, functionTimeout from `check`
    requirements.txt                     what .python_packages holds, for the record (no remote build needed)
    .python_packages/lib/site-packages/  numpy, onnxruntime, tokenizers (text) or Pillow (images)
    model/                               slimserve.json, model.onnx (+ .data), tokenizer ...

The dependencies are the same slimmed, pinned closure as Lambda's layer (packagers/closure.py), built for
the target Python with wheels for Lambda's glibc (2.26 for 3.10/3.11, 2.34 for 3.12+): the Functions
Python images are Debian 11/12 (glibc 2.31/2.36), and an older glibc tag loads on a newer glibc. Its
bytecode names the deployed path (`SITE_PREFIX`). The Python worker puts `.python_packages/lib/site-packages`
on sys.path and provides `azure-functions` itself, so the package carries no copy of it.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from slimserve.atomic import atomic_dir
from slimserve.bundle import ModelBundle
from slimserve.errors import SlimserveError
from slimserve.manifest import MANIFEST_NAME, Closure, PackageSection, sha256_file, write_manifest
from slimserve.packagers.closure import build_closure, closure_info
from slimserve.packagers.handler_code import handler_entries
from slimserve.packagers.lambda_target import ZipArtifact, checks_record, request_limits, verdict_for
from slimserve.packagers.model_check import check_model
from slimserve.packagers.model_files import model_entries, shipped_manifest
from slimserve.packagers.repro_zip import write_zip
from slimserve.packagers.reproducible import tree_entries
from slimserve.packagers.target import Target
from slimserve.progress import NULL_PROGRESS, Progress
from slimserve.runtime import handler_modules

if TYPE_CHECKING:
    from slimserve.profiles.rules import PlatformVerdict
    from slimserve.profiles.schema import Profile
    from slimserve.report import Report

PLATFORM = "azure-functions-flex"
TARGET: Final = "azure-functions"
APP_ROOT = "/home/site/wwwroot"
SITE_DIR = ".python_packages/lib/site-packages"
SITE_PREFIX = f"{APP_ROOT}/{SITE_DIR}"
ENTRY = "function_app.py"
SHIPPED_ENTRY = "azure_function_app.py"  # its name in slimserve/runtime
MODEL_SUBDIR = "model"
DEFAULT_TIMEOUT_S = 30  # without a check, as for Lambda; with one, from the worst accepted request
FUNCTIONS = ("predict", "health")


def profile() -> Profile:
    """Flex Consumption's Pythons, architectures and instance sizes come from its profile (data)."""
    from slimserve.profiles.loader import load_profile

    return load_profile(PLATFORM)


@dataclass(frozen=True)
class AzureArtifacts:
    out: Path
    function: ZipArtifact
    manifest: Path
    deploy: Path
    memory_mb: int
    timeout_s: int
    python: str


def validate_target(target: Target) -> None:
    """Refuse, before anything is built, a Python or architecture Flex Consumption does not run."""
    prof = profile()
    if target.python not in prof.runtime.python:
        raise SlimserveError(f"{prof.title} does not run Python {target.python}",
                             hint=f"pass --python {' / '.join(prof.runtime.python)}")
    if target.arch not in prof.runtime.archs:
        raise SlimserveError(f"{prof.title} runs on {', '.join(prof.runtime.archs)} only, not {target.arch}",
                             hint="drop --arch (or pass --arch x86_64)")


def choose_memory(memory_mb: int | None, verdict: PlatformVerdict | None = None) -> int:
    """The instance memory to create the app with: the one asked for, else the one `check` recommends (the
    smallest Flex size holding the measured peak), else the profile's default; refused when Flex has no
    such size."""
    prof = profile()
    memory = memory_mb if memory_mb is not None else (verdict.recommended_memory_mb if verdict else None)
    memory = int(memory) if memory is not None else int(prof.memory.default or prof.memory.lowest)
    if not prof.memory.allows(memory):
        sizes = ", ".join(str(v) for v in prof.memory.values or ())
        raise SlimserveError(f"--memory {memory} MB is not a Flex Consumption instance size ({sizes} MB)",
                             hint="pass one of those sizes, or leave --memory out to use the measured one")
    return memory


def choose_timeout(verdict: PlatformVerdict | None = None) -> int:
    """host.json's functionTimeout: the one `check` derived from the worst accepted request at the chosen
    memory (profiles.rules.timeout_s), or DEFAULT_TIMEOUT_S without a check."""
    timeout = None if verdict is None else verdict.timeout_s
    return int(timeout) if timeout is not None and timeout >= 1 else DEFAULT_TIMEOUT_S


def host_json(timeout_s: int) -> bytes:
    """host.json for the v2 model. No extensionBundle: the HTTP trigger is built into the host. Logs at
    Information so the handler's JSON lines (printed to stdout) reach Application Insights."""
    hours, rest = divmod(int(timeout_s), 3600)
    document = {
        "version": "2.0",
        "functionTimeout": f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}",
        "logging": {"logLevel": {"default": "Information"}},
    }
    return (json.dumps(document, indent=2) + "\n").encode()


def requirements_txt(pins: list[str]) -> bytes:
    lines = ["# Installed in .python_packages/lib/site-packages (slimmed, bytecode only): deploy without a",
             "# remote build. azure-functions comes with the Functions host's Python worker.", *pins]
    return ("\n".join(lines) + "\n").encode()


def function_entries(bundle: ModelBundle, closure: Path, timeout_s: int,
                     target: Target | None = None) -> dict[str, Path | bytes]:
    """arcname -> source for function.zip: the v2 entry point, the shared runtime (with bytecode for
    `target`'s interpreter, packagers/handler_code.py), host.json, the dependencies and the model folder."""
    entries = handler_entries((*handler_modules("lambda_handler.py"), SHIPPED_ENTRY), target, APP_ROOT,
                              renames={SHIPPED_ENTRY: ENTRY})
    entries["host.json"] = host_json(timeout_s)
    entries["requirements.txt"] = requirements_txt(closure_info(closure)["pins"])
    entries.update(tree_entries(closure, SITE_DIR))
    for rel, source in model_entries(bundle).items():
        entries[f"{MODEL_SUBDIR}/{rel}"] = source
    return entries


def build_function_zip(bundle: ModelBundle, target: Target, folder: Path, timeout_s: int,
                       progress: Progress = NULL_PROGRESS) -> tuple[ZipArtifact, Path]:
    closure = build_closure(target, bundle.runtime_extra, progress=progress, prefix=SITE_PREFIX)
    with progress.stage("zip the function app", total=1) as stage:
        path = folder / "function.zip"
        unzipped = write_zip(path, function_entries(bundle, closure, timeout_s, target))
        stage.advance()
    return ZipArtifact(path, path.stat().st_size, unzipped, sha256_file(path)), closure


def azure_package_size(bundle: ModelBundle, target: Target) -> tuple[int, int]:
    """(zipped, unzipped) bytes of function.zip as `package_azure` builds it."""
    with tempfile.TemporaryDirectory(prefix="slimserve-azure-size-") as tmp:
        artifact, _ = build_function_zip(bundle, target, Path(tmp), DEFAULT_TIMEOUT_S)
    return artifact.bytes, artifact.unzipped_bytes


def package_azure(bundle: ModelBundle, out: Path, target: Target, memory_mb: int | None = None,
                  check: Report | None = None, progress: Progress = NULL_PROGRESS) -> AzureArtifacts:
    """Write function.zip, slimserve.json and DEPLOY.md to `out`, atomically.

    `check` (a report that includes azure-functions-flex) sizes the instance memory and the function
    timeout and is recorded in the manifest and DEPLOY.md; `memory_mb` overrides the memory."""
    from slimserve.packagers.azure_deploy import deploy_notes

    out = Path(out).absolute()
    validate_target(target)
    check_model(bundle)  # refuse a model that cannot be served before building anything
    verdict = verdict_for(check, PLATFORM)
    memory = choose_memory(memory_mb, verdict)
    timeout = choose_timeout(verdict)
    with atomic_dir(out, inputs=[bundle.model_path]) as staging:
        function, closure = build_function_zip(bundle, target, staging, timeout, progress)
        write_manifest(staging, _manifest(bundle, target, memory, timeout, function, closure, check, verdict))
        notes = deploy_notes(target, function, memory=memory, timeout_s=timeout, limits=request_limits(bundle),
                             check=check, verdict=verdict, task_name=bundle.manifest.runtime.task,
                             example_inputs=_example_inputs(bundle))
        (staging / "DEPLOY.md").write_text(notes, encoding="utf-8")
    moved = ZipArtifact(out / "function.zip", function.bytes, function.unzipped_bytes, function.sha256)
    return AzureArtifacts(out=out, function=moved, manifest=out / MANIFEST_NAME, deploy=out / "DEPLOY.md",
                          memory_mb=memory, timeout_s=timeout, python=target.python)


def _manifest(bundle: ModelBundle, target: Target, memory: int, timeout: int, function: ZipArtifact,
              closure: Path, check: Report | None, verdict: PlatformVerdict | None) -> Any:
    from slimserve.manifest import CheckRecord

    info = closure_info(closure)
    package = PackageSection(
        target=TARGET, platform=PLATFORM, python=target.python, arch=target.arch,
        artifacts=[function.as_artifact()], model_dir=MODEL_SUBDIR, runtime=f"python {target.python}",
        memory_mb=memory, timeout_s=timeout,
        closure=Closure.from_info(info))
    if check is not None and verdict is not None:
        record = CheckRecord.model_validate(checks_record(verdict, check.package, check.cold_start))
        package = package.model_copy(update={"checks": record})
    return shipped_manifest(bundle.manifest).packaged(package, handler=f"{ENTRY}:app")


def _example_inputs(bundle: ModelBundle) -> Any:
    from slimserve.measure.coldstart import sample_event

    warmup = bundle.manifest.runtime.spec().get("warmup")
    return warmup if warmup is not None else sample_event(bundle.manifest.to_dict())["inputs"]


def package_from_path(path: Path, out: Path, *, python: str, arch: str, numpy: str = "pypi", memory_mb: int | None = None,
                      check: bool = True, progress: Progress = NULL_PROGRESS) -> tuple[AzureArtifacts, Report | None]:
    """`slimserve package PATH --target azure-functions`: the folder (or bare .onnx) checked against
    azure-functions-flex (unless `check` is False), then packaged with the memory and timeout it measured.
    Bad input (Python, architecture, memory size, an unservable model) fails before anything slow runs."""
    from slimserve.bundle import load_bundle
    from slimserve.pipeline.check import CheckOptions, run_check

    target = Target.parse(python, arch, numpy)
    validate_target(target)
    if memory_mb is not None:
        choose_memory(memory_mb)
    bundle = load_bundle(Path(path))
    check_model(bundle)
    report = run_check(Path(path), [PLATFORM], CheckOptions(memory_mb=memory_mb, python=python, arch=arch,
                                                             numpy=numpy),
                       progress) if check else None
    return package_azure(bundle, Path(out), target, memory_mb, report, progress), report
