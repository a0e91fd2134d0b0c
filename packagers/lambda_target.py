"""AWS Lambda zip artifacts: a runtime layer, a function zip, a SAM template, the manifest and DEPLOY.md.

function.zip layout (extracted to /var/task):   lambda_handler.py, model_runtime.py, task_*.py,
                                                model/slimserve.json, model/model.onnx, model/tokenizer.json ...
layer.zip layout (extracted to /opt):           python/numpy, python/onnxruntime, python/tokenizers (text)
                                                or python/PIL (images), *.dist-info

`lambda_package_size` is THE package-size measurement `check` uses: it builds the same two zips with the
same functions as `package_lambda`, in a temporary folder, and weighs them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slimserve.atomic import atomic_dir
from slimserve.bundle import ModelBundle
from slimserve.errors import SlimserveError
from slimserve.manifest import (
    MANIFEST_NAME,
    Artifact,
    CheckRecord,
    Closure,
    Manifest,
    PackageSection,
    sha256_file,
    write_manifest,
)
from slimserve.measure import ColdStart, PackageSize
from slimserve.packagers.closure import build_closure, closure_info
from slimserve.packagers.handler_code import handler_entries
from slimserve.packagers.model_check import check_model
from slimserve.packagers.model_files import model_entries, shipped_manifest
from slimserve.packagers.repro_zip import write_zip
from slimserve.packagers.reproducible import tree_entries
from slimserve.packagers.target import Target
from slimserve.progress import NULL_PROGRESS, Progress
from slimserve.runtime import handler_modules

TASK_ROOT = "/var/task"  # LAMBDA_TASK_ROOT: where function.zip is extracted

if TYPE_CHECKING:
    from slimserve.profiles.rules import PlatformVerdict
    from slimserve.report import Report

HANDLER = "lambda_handler.handler"
MODEL_SUBDIR = "model"
PLATFORM = "aws-lambda-zip"
DEFAULT_MEMORY_MB = 1024
DEFAULT_TIMEOUT_S = 30  # without a check; with one, the timeout comes from the worst accepted request


def _lambda_profile() -> Any:
    """Lambda's limits come from its profile (platform knowledge is data), not from constants here."""
    from slimserve.profiles.loader import load_profile

    return load_profile(PLATFORM)


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


@dataclass(frozen=True)
class ZipArtifact:
    """One zip written to disk: where it is, what it weighs zipped and unzipped, its sha256."""

    path: Path
    bytes: int
    unzipped_bytes: int
    sha256: str

    def as_manifest(self) -> dict[str, Any]:
        return {"bytes": self.bytes, "unzipped_bytes": self.unzipped_bytes, "sha256": self.sha256}

    def as_artifact(self) -> Artifact:
        return Artifact(path=self.path.name, bytes=self.bytes, sha256=self.sha256, unzipped_bytes=self.unzipped_bytes)


@dataclass(frozen=True)
class LambdaArtifacts:
    out: Path
    layer: ZipArtifact
    function: ZipArtifact
    template: Path
    manifest: Path
    deploy: Path
    memory_mb: int
    timeout_s: int = DEFAULT_TIMEOUT_S


def function_entries(bundle: ModelBundle, target: Target | None = None) -> dict[str, Path | bytes]:
    """arcname -> source for function.zip: the shipped handler and runtime (with their bytecode for
    `target`'s interpreter, packagers/handler_code.py), then the model folder."""
    entries = handler_entries(handler_modules("lambda_handler.py"), target, TASK_ROOT)
    for rel, source in model_entries(bundle).items():
        entries[f"{MODEL_SUBDIR}/{rel}"] = source
    return entries


def _zip(path: Path, entries: dict[str, Path | bytes]) -> ZipArtifact:
    unzipped = write_zip(path, entries)
    return ZipArtifact(path=path, bytes=path.stat().st_size, unzipped_bytes=unzipped, sha256=sha256_file(path))


def build_zips(bundle: ModelBundle, target: Target, folder: Path,
               progress: Progress = NULL_PROGRESS) -> tuple[ZipArtifact, ZipArtifact, Path]:
    """layer.zip and function.zip in `folder`; returns them and the closure they were made from."""
    closure = build_closure(target, bundle.runtime_extra, progress=progress)
    with progress.stage("zip layer and function", total=2) as stage:
        layer = _zip(folder / "layer.zip", dict(tree_entries(closure, "python")))
        stage.advance()
        function = _zip(folder / "function.zip", function_entries(bundle, target))
        stage.advance()
    return layer, function, closure


def lambda_package_size(bundle: ModelBundle, target: Target) -> PackageSize:
    """Bytes of a Lambda zip deployment (function + its one layer), zipped and unzipped, as built."""
    with tempfile.TemporaryDirectory(prefix="slimserve-size-") as tmp:
        layer, function, _ = build_zips(bundle, target, Path(tmp))
    return PackageSize(
        unzipped_bytes=layer.unzipped_bytes + function.unzipped_bytes,
        zipped_bytes=layer.bytes + function.bytes,
        parts={"layer.zip": layer.bytes, "function.zip": function.bytes},
        unzipped_parts={"layer.zip": layer.unzipped_bytes, "function.zip": function.unzipped_bytes},
        layers=1,
    )


def choose_memory(memory_mb: int | None, verdict: PlatformVerdict | None = None) -> int:
    """The memory setting to deploy with: the one asked for, else the one `check` recommends, else the
    default; refused when Lambda does not offer it. The caller (the pipeline) decides, the packager writes."""
    if memory_mb is None and verdict is not None:
        memory_mb = verdict.recommended_memory_mb
    memory = int(memory_mb) if memory_mb is not None else DEFAULT_MEMORY_MB
    allowed = _lambda_profile().memory
    if not allowed.allows(memory):
        raise SlimserveError(f"--memory {memory} MB is outside Lambda's {allowed.lowest}-{allowed.highest} MB")
    return memory


def choose_timeout(verdict: PlatformVerdict | None = None) -> int:
    """The function timeout `check` derived from the worst accepted request at the chosen memory
    (profiles.rules.timeout_s), or DEFAULT_TIMEOUT_S when no check measured one."""
    timeout = None if verdict is None else verdict.timeout_s
    return int(timeout) if timeout is not None and timeout >= 1 else DEFAULT_TIMEOUT_S


def request_limits(bundle: ModelBundle) -> dict[str, int]:
    """The request limits the shipped handler enforces for this model (its manifest, or the defaults)."""
    from slimserve.runtime.model_runtime import RequestLimits

    runtime = bundle.manifest.runtime
    row = None
    if runtime.kind != "text":
        shapes = [spec.shape for spec in bundle.manifest.model.inputs]
        if all(isinstance(d, int) and d > 0 for shape in shapes for d in shape[1:]):
            row = sum(math.prod(d for d in shape[1:] if isinstance(d, int)) for shape in shapes)
    limits = RequestLimits.from_spec(runtime.spec(), environ={}, row_elements=row).as_dict()
    if runtime.kind == "image":
        from slimserve.runtime.task_image import PixelLimits

        image = runtime.spec().get("image") or {}
        pixels = PixelLimits.from_spec(image if isinstance(image, dict) else {}, environ={})
        return {"max_batch": limits["max_batch"], "max_pixels": pixels.max_pixels,
                "max_request_pixels": pixels.max_request_pixels}
    relevant = ("max_batch", "max_chars", "max_tokens") if runtime.kind == "text" else ("max_batch", "max_elements")
    return {key: limits[key] for key in relevant}


def package_lambda(bundle: ModelBundle, out: Path, target: Target, memory_mb: int = DEFAULT_MEMORY_MB,
                   timeout_s: int = DEFAULT_TIMEOUT_S, check: Report | None = None,
                   progress: Progress = NULL_PROGRESS, snapstart: bool | None = None,
                   tracing: bool = False) -> LambdaArtifacts:
    """Write layer.zip, function.zip, template.yaml, slimserve.json and DEPLOY.md to `out`, atomically.

    `memory_mb` and `timeout_s` go into the template as given (see `choose_memory`/`choose_timeout`);
    `check`, the report of the check the settings came from, is recorded in the manifest and DEPLOY.md.
    `snapstart`: SnapStart in the template (None: on where the Python version supports it).
    `tracing`: X-Ray active tracing in the template and in DEPLOY.md's CLI routes (see `sam_template`).
    """
    out = Path(out).absolute()
    if snapstart and not snapstart_default(target):
        raise SlimserveError(f"SnapStart needs python3.12 or later, not {target.lambda_runtime}",
                             hint="drop --snapstart, or package for --python 3.12")
    check_model(bundle)  # refuse a model that cannot be served before building anything
    memory = choose_memory(memory_mb)  # validated against Lambda's settings before anything is built
    verdict = verdict_for(check)
    with atomic_dir(out, inputs=[bundle.model_path]) as staging:
        layer, function, closure = build_zips(bundle, target, staging, progress)
        (staging / "template.yaml").write_text(
            sam_template(target, memory, bundle.runtime_extra or False, timeout_s, snapstart, tracing=tracing,
                         generation=bundle.manifest.runtime.task == "text-generation"),
            encoding="utf-8")
        manifest = artifact_manifest(bundle, target, memory, layer, function, closure, check, timeout_s)
        write_manifest(staging, manifest)
        notes = deploy_notes(target, layer, function, memory=memory, timeout_s=timeout_s,
                             limits=request_limits(bundle), cold_start=None if check is None else check.cold_start,
                             verdict=verdict, snapstart=snapstart, task_name=bundle.manifest.runtime.task,
                             example_inputs=_example_inputs(bundle), tracing=tracing)
        (staging / "DEPLOY.md").write_text(notes, encoding="utf-8")
    moved = {name: ZipArtifact(out / name, z.bytes, z.unzipped_bytes, z.sha256)
             for name, z in (("layer.zip", layer), ("function.zip", function))}
    return LambdaArtifacts(out=out, layer=moved["layer.zip"], function=moved["function.zip"],
                           template=out / "template.yaml", manifest=out / MANIFEST_NAME,
                           deploy=out / "DEPLOY.md", memory_mb=memory, timeout_s=timeout_s)


def verdict_for(check: Report | None, platform: str = PLATFORM) -> PlatformVerdict | None:
    """The check's verdict for `platform`, None when there was no check or it did not cover the platform."""
    if check is None:
        return None
    try:
        return check.verdict(platform)
    except KeyError:
        return None


# The request limits DEPLOY.md lists: manifest key, the variable that overrides it, what it bounds.
LIMIT_ROWS = (
    ("max_batch", "SLIMSERVE_MAX_BATCH", "texts, images (or tensor rows) per request"),
    ("max_chars", "SLIMSERVE_MAX_TEXT_CHARS", "characters per text, refused before tokenizing"),
    ("max_tokens", "SLIMSERVE_MAX_TOKENS", "texts × padded tokens after truncation, per request"),
    ("max_elements", "SLIMSERVE_MAX_ELEMENTS", "numbers per tensor request, all inputs together"),
    ("max_pixels", "SLIMSERVE_MAX_PIXELS", "width × height of one image, read from its header before decoding"),
    ("max_request_pixels", "SLIMSERVE_MAX_REQUEST_PIXELS", "pixels of all images of one request together"),
)


def artifact_manifest(bundle: ModelBundle, target: Target, memory: int, layer: ZipArtifact,
                      function: ZipArtifact, closure: Path, check: Report | None,
                      timeout_s: int = DEFAULT_TIMEOUT_S) -> Manifest:
    """The model's manifest plus what packaging added: the handler and the `package` section (target,
    artifacts, runtime closure, and the check the settings came from)."""
    info = closure_info(closure)
    verdict = verdict_for(check)
    package = PackageSection(
        target="lambda", platform=PLATFORM, python=target.python, arch=target.arch,
        artifacts=[layer.as_artifact(), function.as_artifact()], model_dir=MODEL_SUBDIR,
        runtime=target.lambda_runtime, memory_mb=memory, timeout_s=timeout_s,
        closure=Closure.from_info(info))
    if check is not None and verdict is not None:  # absent, not null, when no check ran (--no-check)
        record = CheckRecord.model_validate(checks_record(verdict, check.package, check.cold_start))
        package = package.model_copy(update={"checks": record})
    return shipped_manifest(bundle.manifest).packaged(package, handler=HANDLER)


def checks_record(verdict: PlatformVerdict, package: PackageSize, cold: ColdStart) -> dict[str, Any]:
    """What the package was checked against: the platform's verdict and the measurements it judged."""
    record: dict[str, Any] = {
        "platform": verdict.name, "fits": verdict.fits, "checks": [dataclasses.asdict(f) for f in verdict.findings],
        "recommended_memory_mb": verdict.recommended_memory_mb, "title": verdict.title,
        "memory_mb": verdict.memory_mb, "memory_note": verdict.memory_note,
        "projection": None if verdict.projection is None else {**dataclasses.asdict(verdict.projection),
                                                               "estimate": True},
        "sources": list(verdict.sources),
    }
    if verdict.timeout_s is not None:
        record.update(worst_request_ms=verdict.worst_request_ms, recommended_timeout_s=verdict.timeout_s)
    record["package"] = {"unzipped_bytes": package.unzipped_bytes, "zipped_bytes": package.zipped_bytes,
                         "layers": package.layers, "parts": dict(sorted(package.parts.items())),
                         "unzipped_parts": dict(sorted(package.unzipped_parts.items())),
                         "image_bytes": package.image_bytes}
    record["cold_start"] = {
        "import_ms": cold.import_ms, "load_ms": cold.load_ms, "first_inference_ms": cold.first_inference_ms,
        "total_ms": cold.total_ms, "runs": cold.runs, "warm_ms": cold.warm_ms, "python": cold.python,
        "fallback": cold.fallback, "measured_here": True,
        **({"worst_ms": cold.worst_ms, "worst_peak_rss_mb": cold.worst_peak_rss_mb,
            "worst_request": cold.worst_request, "cpus": cold.cpus} if cold.worst_ms is not None else {})}
    record["peak_rss_mb"] = cold.max_rss_mb
    return record


LAYER_LIBRARIES = {"text": "onnxruntime, numpy, tokenizers", "image": "onnxruntime, numpy, Pillow", "": "onnxruntime, numpy"}


def snapstart_default(target: Target) -> bool:
    """SnapStart serves Python from 3.12 on (AWS Lambda SnapStart, runtimes supported)."""
    major, minor = (int(part) for part in target.python.split(".")[:2])
    return (major, minor) >= (3, 12)


def generation_budget_s(timeout_s: int) -> int:
    """Seconds a text-generation request may spend generating (SLIMSERVE_MAX_GENERATION_SECONDS): the function
    timeout minus a margin (15%, at least 2 s) for decoding and answering, so a slow request answers what it
    has with finish_reason "time_limit" instead of being killed at the timeout with nothing."""
    return max(1, timeout_s - max(2, math.ceil(0.15 * timeout_s)))


def function_environment(generation_timeout_s: int | None) -> dict[str, str]:
    """The function's environment variables (the template's and DEPLOY.md's CLI routes alike)."""
    env = {"OPENBLAS_NUM_THREADS": "1", "SLIMSERVE_METRICS": "emf"}
    if generation_timeout_s is not None:
        env["SLIMSERVE_MAX_GENERATION_SECONDS"] = str(generation_budget_s(generation_timeout_s))
    return env


def sam_template(target: Target, memory: int, text: bool | str = True, timeout_s: int = DEFAULT_TIMEOUT_S,
                 snapstart: bool | None = None, *, tracing: bool = False, generation: bool = False) -> str:
    """An AWS SAM template (cfn-lint clean): the layer, the function, and an IAM-authenticated function URL.

    `text` is the runtime extra ("text", "image", "") or, as older callers pass it, text or not.
    `snapstart` (default: on where the runtime supports it) publishes a version behind the `live` alias
    with SnapStart: the handler's before-snapshot hook runs a warm-up inference, so a restored environment
    starts with the model loaded and its session initialised. OPENBLAS_NUM_THREADS=1: numpy would start a
    BLAS thread pool at import that the runtime never uses (onnxruntime has its own threads). The handler's
    JSON log lines go to CloudWatch as JSON (LoggingConfig) and SLIMSERVE_METRICS=emf makes CloudWatch
    derive metrics from them (init and inference duration, batch size, errors) with no API call.
    `tracing` sets `Tracing: Active`: Lambda itself records an X-Ray segment per invocation (init, invocation,
    overhead), so the handler needs no X-Ray SDK; SAM adds the AWSXrayWriteOnlyAccess managed policy to the
    role it generates for the function (the template defines no role of its own). Off by default: traces
    are billed per trace recorded beyond X-Ray's free tier. `generation` (a text-generation model) bounds
    each request's generating time under the timeout (`generation_budget_s`)."""
    libraries = LAYER_LIBRARIES[("text" if text else "") if isinstance(text, bool) else text]
    snapstart = snapstart_default(target) if snapstart is None else snapstart
    snap = ("      AutoPublishAlias: live\n      SnapStart:\n        ApplyOn: PublishedVersions\n"
            if snapstart else "")
    trace = "      Tracing: Active\n" if tracing else ""
    variables = "".join(f'          {key}: "{value}"\n' if key != "SLIMSERVE_METRICS" else f"          {key}: {value}\n"
                        for key, value in function_environment(timeout_s if generation else None).items())
    return f"""AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Description: slimserve model endpoint ({target.lambda_runtime}, {target.arch})

Resources:
  RuntimeLayer:
    Type: AWS::Serverless::LayerVersion
    Properties:
      Description: "Inference runtime ({libraries}) for {target.lambda_runtime} {target.arch}"
      ContentUri: layer.zip
      CompatibleRuntimes:
        - {target.lambda_runtime}
      CompatibleArchitectures:
        - {target.arch}

  ModelFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: function.zip
      Handler: {HANDLER}
      Runtime: {target.lambda_runtime}
      Architectures:
        - {target.arch}
      MemorySize: {memory}
      Timeout: {timeout_s}
      Layers:
        - !Ref RuntimeLayer
      Environment:
        Variables:
{variables}      LoggingConfig:
        LogFormat: JSON
{trace}{snap}      FunctionUrlConfig:
        AuthType: AWS_IAM

Outputs:
  FunctionName:
    Description: Invoke directly with a JSON event holding an inputs list
    Value: !Ref ModelFunction
  FunctionUrl:
    Description: "HTTPS endpoint: requests must be SigV4-signed, see DEPLOY.md"
    Value: !GetAtt ModelFunctionUrl.FunctionUrl
"""


def _limits_section(memory: int, timeout_s: int, limits: dict[str, int] | None, cold: ColdStart | None,
                    verdict: PlatformVerdict | None) -> str:
    """DEPLOY.md's account of what one request may ask for and why memory and timeout are what they are."""
    limits = limits or {}
    rows = "\n".join(f"| `{key}` | {limits[key]:,} | `{env}` | {what} |" for key, env, what in LIMIT_ROWS
                     if key in limits)
    if cold is not None and cold.worst_ms is not None and verdict is not None and verdict.timeout_s is not None:
        measured = (f"`check` ran the largest request these limits accept ({cold.worst_request}) in a fresh "
                    f"{cold.python} process on {cold.cpus} CPU: {cold.worst_ms:,.0f} ms, peak RSS "
                    f"{cold.worst_peak_rss_mb or 0:,.0f} MB. At {memory:,} MB Lambda gives "
                    f"{memory / 1769:.2f} vCPU (1,769 MB ≈ 1 vCPU), so it is projected at "
                    f"{verdict.worst_request_ms or 0:,.0f} ms; `Timeout: {timeout_s}` is (projected init + "
                    "that) × 3, at least 10 s. `MemorySize` holds that peak × 1.5 + 64 MB.")
    else:
        measured = (f"No `check` ran (`--no-check`): `MemorySize: {memory}` and `Timeout: {timeout_s}` are defaults, "
                    "not measurements. Run `slimserve check` to measure the worst accepted request.")
    return f"""## Limits per request

The handler refuses, with a 413 naming the limit (`{{"error": ...}}` when invoked directly), any request over:

| limit | value | variable | what it bounds |
|---|---:|---|---|
{rows}

{measured}
Raising a limit through its variable makes requests larger than the ones measured: raise `MemorySize`
and `Timeout` with it (or rerun `check` with the limit written into the model's `slimserve.json`).
Lambda itself refuses a request body over 6 MB (synchronous invoke payload) before the handler runs:
a function URL or API Gateway answers 413 and a direct invoke fails with `RequestEntityTooLargeException`.
Base64 adds a third, so a JSON request holds at most ~4.5 MB of image files; a raw `image/jpeg` body
(binary media types enabled on API Gateway) is base64-encoded by Lambda too, so the same ~4.5 MB applies.
Larger images: upload them to S3 and classify from there (resize on the client first).
Routes over a function URL or API Gateway: `POST /`, `/predict`, `/invocations` predict; `GET /`, `/health`,
`/healthz` answer health; other paths are a 404, other methods a 405. Malformed JSON is a 400.
"""


def _example_inputs(bundle: ModelBundle) -> Any:
    """A request this model answers, for DEPLOY.md: the manifest's warm-up request, or one built from its
    inputs (a bare .onnx packaged without `optimize`)."""
    from slimserve.measure.coldstart import sample_event

    warmup = bundle.manifest.runtime.spec().get("warmup")
    return warmup if warmup is not None else sample_event(bundle.manifest.to_dict())["inputs"]


def _snapstart_note(target: Target, enabled: bool) -> str:
    if not snapstart_default(target):
        return ("\nSnapStart is not offered for this Python version (it needs python3.12 or later), so every cold "
                "start runs the whole init.\n")
    if not enabled:
        return ("\nSnapStart is off (`--no-snapstart`): every cold start runs the whole init. Package with "
                "`--snapstart` to restore environments from a snapshot instead.\n")
    return """
SnapStart is on: `sam deploy` publishes a version behind the `live` alias; Lambda runs the init (import,
model load, and the handler's warm-up inference, registered with `snapshot_restore_py`) once per version,
snapshots it, and restores new environments from the snapshot instead of re-running init. Invoke the alias
(the function URL is on it), not `$LATEST`, or SnapStart does not apply. For Python, AWS bills the snapshot's
caching (per GB-second while the version exists) and each restore (per GB restored): compare that with the
init time `check` reports at this memory before keeping it on; remove `AutoPublishAlias` and `SnapStart`
from template.yaml to turn it off.
"""


def _tracing_note(enabled: bool) -> str:
    """Why a trace appears (or not) without any tracing code in the function."""
    if not enabled:
        return ("\nX-Ray tracing is off. Package with `--tracing` (or add `Tracing: Active` to the function in "
                "template.yaml) to have Lambda record a trace of each invocation; the function needs no X-Ray SDK "
                "for that.\n")
    return """
X-Ray tracing is on (`Tracing: Active`): Lambda itself records a segment for each invocation, with the
init, invocation and overhead time, and SAM gives the function's role the `AWSXrayWriteOnlyAccess` managed
policy to send it. The function needs no X-Ray SDK and ships none (no new dependency): the trace shows
Lambda's phases, not the handler's steps; the handler's JSON log lines carry its load and inference
durations. X-Ray bills traces recorded beyond its free tier.
"""


def deploy_notes(target: Target, layer: ZipArtifact, function: ZipArtifact, *, memory: int = DEFAULT_MEMORY_MB,
                 timeout_s: int = DEFAULT_TIMEOUT_S, limits: dict[str, int] | None = None,
                 cold_start: ColdStart | None = None, verdict: PlatformVerdict | None = None,
                 snapstart: bool | None = None, task_name: str = "tensor", example_inputs: Any = None,
                 tracing: bool = False) -> str:
    snapstart = snapstart_default(target) if snapstart is None else snapstart
    xray_policy = ("aws iam attach-role-policy --role-name my-model-lambda \\\n"
                   "    --policy-arn arn:aws:iam::aws:policy/AWSXRayDaemonWriteAccess\n" if tracing else "")
    xray_flag = " \\\n    --tracing-config Mode=Active" if tracing else ""
    env = ",".join(f"{k}={v}" for k, v in function_environment(
        timeout_s if task_name == "text-generation" else None).items())
    from slimserve.tasks import BY_NAME

    task = BY_NAME.get(task_name, BY_NAME["tensor"])
    example = json.dumps({"inputs": example_inputs}) if example_inputs is not None else '{"inputs": ["hello world"]}'
    example = example.replace("'", "\\u0027")  # it goes inside single quotes on the command line
    if len(example) > 400:  # an image: show the raw-body call instead of a page of base64
        example = '{"inputs": ["<base64 of an image file>"]}'
    image_call = ("""
An image can also be POSTed as it is (`-H "content-type: image/jpeg" --data-binary @photo.jpg` instead of
the JSON body); keep requests under Lambda's 6 MB payload limit (about 4.5 MB of image once base64-encoded).
""" if task.family == "image" else "")
    limits_md = _limits_section(memory, timeout_s, limits, cold_start, verdict)
    profile_limits = _lambda_profile().limits
    direct, unzipped = profile_limits.zipped_size, profile_limits.unzipped_size
    big = [z.path.name for z in (layer, function) if z.bytes > direct.base()]
    mb = _mib
    s3_note = (f"{', '.join(big)} exceed{'s' if len(big) == 1 else ''} the {direct.display()} direct-upload limit: "
               "use the S3 route below (`sam deploy` already uploads through S3)."
               if big else f"Both zips are under the {direct.display()} direct-upload limit; the S3 route is optional.")
    runtime, arch = target.lambda_runtime, target.arch
    return f"""# Deploying this model to AWS Lambda

| file | zipped | unzipped |
|---|---|---|
| layer.zip | {mb(layer.bytes)} | {mb(layer.unzipped_bytes)} |
| function.zip | {mb(function.bytes)} | {mb(function.unzipped_bytes)} |

Runtime `{runtime}`, architecture `{arch}`, handler `{HANDLER}`. Lambda's limit is {unzipped.display()}
({unzipped.base():,.0f} bytes) unzipped for the function and all its layers together. {s3_note}

## With AWS SAM

```sh
sam deploy --template-file template.yaml --stack-name my-model --resolve-s3 --capabilities CAPABILITY_IAM
```

The template gives the function an IAM-authenticated function URL. For a public endpoint change
`AuthType: AWS_IAM` to `AuthType: NONE` (anyone can then call it and you pay for it).
{_snapstart_note(target, snapstart)}{_tracing_note(tracing)}
## With the AWS CLI

The function needs a role Lambda can assume with nothing but permission to write its logs{" and traces" if tracing else ""} (the managed
`AWSLambdaBasicExecutionRole` policy: `logs:CreateLogGroup`, `logs:CreateLogStream`, `logs:PutLogEvents`{
", and, for tracing, `AWSXRayDaemonWriteAccess`: `xray:PutTraceSegments`, `xray:PutTelemetryRecords`" if tracing else ""}):

```sh
ROLE_ARN=$(aws iam create-role --role-name my-model-lambda --query Role.Arn --output text \\
    --assume-role-policy-document '{{"Version": "2012-10-17", "Statement": [{{"Effect": "Allow",
      "Principal": {{"Service": "lambda.amazonaws.com"}}, "Action": "sts:AssumeRole"}}]}}')
aws iam attach-role-policy --role-name my-model-lambda \\
    --policy-arn arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole
{xray_policy}sleep 10  # a new role takes a few seconds to be usable by Lambda
LAYER_ARN=$(aws lambda publish-layer-version --layer-name my-model-runtime \\
    --zip-file fileb://layer.zip --compatible-runtimes {runtime} --compatible-architectures {arch} \\
    --query LayerVersionArn --output text)
aws lambda create-function --function-name my-model --runtime {runtime} --architectures {arch} \\
    --handler {HANDLER} --role "$ROLE_ARN" --memory-size {memory} --timeout {timeout_s} \\
    --environment "Variables={{{env}}}" --logging-config LogFormat=JSON{xray_flag} \\
    --layers "$LAYER_ARN" --zip-file fileb://function.zip
```

`--memory-size {memory}` and `--timeout {timeout_s}` are what `check` measured this model needs (below); without
them Lambda would give the function 128 MB and 3 s.

### Through S3 (required for a zip over {direct.display()})

```sh
aws s3 cp layer.zip s3://MY-BUCKET/my-model/layer.zip
aws s3 cp function.zip s3://MY-BUCKET/my-model/function.zip
LAYER_ARN=$(aws lambda publish-layer-version --layer-name my-model-runtime \\
    --content S3Bucket=MY-BUCKET,S3Key=my-model/layer.zip \\
    --compatible-runtimes {runtime} --compatible-architectures {arch} --query LayerVersionArn --output text)
aws lambda create-function --function-name my-model --runtime {runtime} --architectures {arch} \\
    --handler {HANDLER} --role "$ROLE_ARN" --memory-size {memory} --timeout {timeout_s} --layers "$LAYER_ARN" \\
    --environment "Variables={{{env}}}" --logging-config LogFormat=JSON{xray_flag} \\
    --code S3Bucket=MY-BUCKET,S3Key=my-model/function.zip
```

## Calling it

```sh
aws lambda invoke --function-name my-model --cli-binary-format raw-in-base64-out \\
    --payload '{example}' out.json && cat out.json
```
{"With SAM and SnapStart, invoke the alias (`--function-name <FunctionName>:live`) so restores apply." if snapstart else ""}

The function URL (`sam deploy` prints it as `FunctionUrl`) takes the same JSON body and, with `AuthType:
AWS_IAM`, only SigV4-signed requests, e.g. with curl (7.75 or later) and your credentials:

```sh
curl --aws-sigv4 "aws:amz:$AWS_REGION:lambda" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \\
    -H "x-amz-security-token: $AWS_SESSION_TOKEN" -H "content-type: application/json" \\
    -d '{example}' "$FUNCTION_URL"
```
{image_call}
This model's task is `{task.name}`: requests look like `{task.request}` and answers like `{task.response}`
(`slimserve optimize --list-tasks` shows every task). Over HTTP a bad request is a 400 (a request over a
limit a 413) with `{{"error": "..."}}`; invoked directly, the answer is `{{"error": "..."}}`.

{limits_md}
The layer holds only what inference imports (numpy's random/fft/polynomial/ma/testing are left out) and
ships bytecode compiled for {runtime} without .py sources: tracebacks show file and line numbers only.
"""
