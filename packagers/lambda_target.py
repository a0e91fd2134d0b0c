"""AWS Lambda zip artifacts: a runtime layer, a function zip, a SAM template, the manifest and DEPLOY.md.

function.zip layout (extracted to /var/task):   lambda_handler.py, model_runtime.py,
                                                model/slimserve.json, model/model.onnx, model/tokenizer.json ...
layer.zip layout (extracted to /opt):           python/numpy, python/onnxruntime, python/tokenizers, *.dist-info

`lambda_package_size` is THE package-size measurement `check` uses: it builds the same two zips with the
same functions as `package_lambda`, in a temporary folder, and weighs them.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimserve.packagers.closure import build_closure, closure_info
from slimserve.packagers.model_files import model_entries
from slimserve.packagers.repro_zip import tree_entries, write_zip
from slimserve.packagers.target import Target

from slimserve.atomic import atomic_dir
from slimserve.bundle import ModelBundle
from slimserve.errors import SlimserveError
from slimserve.manifest import MANIFEST_NAME, sha256_file
from slimserve.measure import PackageSize
from slimserve.progress import NULL_PROGRESS, Progress
from slimserve.runtime import RUNTIME_DIR

HANDLER = "lambda_handler.handler"
MODEL_SUBDIR = "model"
PLATFORM = "aws-lambda-zip"
DEFAULT_MEMORY_MB = 1024
TIMEOUT_S = 30


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


@dataclass(frozen=True)
class LambdaArtifacts:
    out: Path
    layer: ZipArtifact
    function: ZipArtifact
    template: Path
    manifest: Path
    deploy: Path
    memory_mb: int


def function_entries(bundle: ModelBundle) -> dict[str, Path | bytes]:
    """arcname -> source for function.zip: the shipped handler and runtime, then the model folder."""
    entries: dict[str, Path | bytes] = {
        "lambda_handler.py": RUNTIME_DIR / "lambda_handler.py",
        "model_runtime.py": RUNTIME_DIR / "model_runtime.py",
    }
    for rel, source in model_entries(bundle).items():
        entries[f"{MODEL_SUBDIR}/{rel}"] = source
    return entries


def _zip(path: Path, entries: dict[str, Path | bytes]) -> ZipArtifact:
    unzipped = write_zip(path, entries)
    return ZipArtifact(path=path, bytes=path.stat().st_size, unzipped_bytes=unzipped, sha256=sha256_file(path))


def build_zips(bundle: ModelBundle, target: Target, folder: Path,
               progress: Progress = NULL_PROGRESS) -> tuple[ZipArtifact, ZipArtifact, Path]:
    """layer.zip and function.zip in `folder`; returns them and the closure they were made from."""
    closure = build_closure(target, bundle.is_text, progress=progress)
    with progress.stage("zip layer and function", total=2) as stage:
        layer = _zip(folder / "layer.zip", dict(tree_entries(closure, "python")))
        stage.advance()
        function = _zip(folder / "function.zip", function_entries(bundle))
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


def choose_memory(memory_mb: int | None, check_results: dict[str, Any] | None) -> int:
    if memory_mb is None and check_results:
        platform = (check_results.get("platforms") or {}).get(PLATFORM) or {}
        memory_mb = platform.get("recommended_memory_mb")
    memory = int(memory_mb) if memory_mb is not None else DEFAULT_MEMORY_MB
    allowed = _lambda_profile().memory
    if not allowed.allows(memory):
        raise SlimserveError(f"--memory {memory} MB is outside Lambda's {allowed.lowest}-{allowed.highest} MB")
    return memory


def package_lambda(bundle: ModelBundle, out: Path, target: Target, memory_mb: int | None = None,
                   check_results: dict[str, Any] | None = None,
                   progress: Progress = NULL_PROGRESS) -> LambdaArtifacts:
    """Write layer.zip, function.zip, template.yaml, slimserve.json and DEPLOY.md to `out`, atomically."""
    out = Path(out).absolute()
    memory = choose_memory(memory_mb, check_results)
    with atomic_dir(out, inputs=[bundle.model_path]) as staging:
        layer, function, closure = build_zips(bundle, target, staging, progress)
        (staging / "template.yaml").write_text(sam_template(target, memory, bundle.is_text), encoding="utf-8")
        manifest = artifact_manifest(bundle, target, memory, layer, function, closure, check_results)
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        (staging / "DEPLOY.md").write_text(deploy_notes(target, layer, function), encoding="utf-8")
    moved = {name: ZipArtifact(out / name, z.bytes, z.unzipped_bytes, z.sha256)
             for name, z in (("layer.zip", layer), ("function.zip", function))}
    return LambdaArtifacts(out=out, layer=moved["layer.zip"], function=moved["function.zip"],
                           template=out / "template.yaml", manifest=out / MANIFEST_NAME,
                           deploy=out / "DEPLOY.md", memory_mb=memory)


def artifact_manifest(bundle: ModelBundle, target: Target, memory: int, layer: ZipArtifact,
                      function: ZipArtifact, closure: Path, check_results: dict[str, Any] | None) -> dict[str, Any]:
    """The model's manifest plus what packaging added: artifacts, handler, target, runtime closure, checks."""
    info = closure_info(closure)
    manifest = dict(bundle.manifest)
    manifest["handler"] = HANDLER
    manifest["target"] = {"platform": PLATFORM, "runtime": target.lambda_runtime, "python": target.python,
                          "arch": target.arch, "memory_mb": memory, "timeout_s": TIMEOUT_S,
                          "model_dir": MODEL_SUBDIR}
    manifest["artifacts"] = {"layer.zip": layer.as_manifest(), "function.zip": function.as_manifest()}
    manifest["closure"] = {"pins": info["pins"], "wheels": info["wheels"], "bytecode": info["bytecode"],
                           "sources": info["sources"]}
    if check_results is not None:
        manifest["checks"] = _platform_checks(check_results)
    return manifest


def _platform_checks(check_results: dict[str, Any]) -> dict[str, Any]:
    """The `aws-lambda-zip` part of a check report (plus the shared measurements), or the report as given."""
    platforms = check_results.get("platforms")
    if not isinstance(platforms, dict) or PLATFORM not in platforms:
        return check_results
    keep = {k: check_results[k] for k in ("package", "cold_start", "peak_rss_mb") if k in check_results}
    return {"platform": PLATFORM, **platforms[PLATFORM], **keep}


def sam_template(target: Target, memory: int, text: bool = True) -> str:
    """An AWS SAM template (cfn-lint clean): the layer, the function, and an IAM-authenticated function URL."""
    libraries = "onnxruntime, numpy, tokenizers" if text else "onnxruntime, numpy"
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
      Timeout: {TIMEOUT_S}
      Layers:
        - !Ref RuntimeLayer
      FunctionUrlConfig:
        AuthType: AWS_IAM

Outputs:
  FunctionName:
    Description: Invoke directly with a JSON event holding an inputs list
    Value: !Ref ModelFunction
  FunctionUrl:
    Description: "HTTPS endpoint: requests must be SigV4-signed, see DEPLOY.md"
    Value: !GetAtt ModelFunctionUrl.FunctionUrl
"""


def deploy_notes(target: Target, layer: ZipArtifact, function: ZipArtifact) -> str:
    limits = _lambda_profile().limits
    direct, unzipped = limits.zipped_size, limits.unzipped_size
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

## With the AWS CLI

```sh
ROLE_ARN=arn:aws:iam::<account>:role/<a role with AWSLambdaBasicExecutionRole>
LAYER_ARN=$(aws lambda publish-layer-version --layer-name my-model-runtime \\
    --zip-file fileb://layer.zip --compatible-runtimes {runtime} --compatible-architectures {arch} \\
    --query LayerVersionArn --output text)
aws lambda create-function --function-name my-model --runtime {runtime} --architectures {arch} \\
    --handler {HANDLER} --role "$ROLE_ARN" --memory-size <MemorySize from template.yaml> --timeout {TIMEOUT_S} \\
    --layers "$LAYER_ARN" --zip-file fileb://function.zip
```

### Through S3 (required for a zip over {direct.display()})

```sh
aws s3 cp layer.zip s3://MY-BUCKET/my-model/layer.zip
aws s3 cp function.zip s3://MY-BUCKET/my-model/function.zip
LAYER_ARN=$(aws lambda publish-layer-version --layer-name my-model-runtime \\
    --content S3Bucket=MY-BUCKET,S3Key=my-model/layer.zip \\
    --compatible-runtimes {runtime} --compatible-architectures {arch} --query LayerVersionArn --output text)
aws lambda create-function --function-name my-model --runtime {runtime} --architectures {arch} \\
    --handler {HANDLER} --role "$ROLE_ARN" --timeout {TIMEOUT_S} --layers "$LAYER_ARN" \\
    --code S3Bucket=MY-BUCKET,S3Key=my-model/function.zip
```

## Calling it

```sh
aws lambda invoke --function-name my-model --cli-binary-format raw-in-base64-out \\
    --payload '{{"inputs": ["hello world"]}}' out.json && cat out.json
```

Text models answer `{{"embeddings": [...]}}` (feature extraction) or `{{"labels": [...], "scores": [...]}}`
(classification); tensor models take `{{"inputs": {{"name": [[...]]}}}}` and answer `{{"outputs": {{...}}}}`.
Over HTTP (function URL / API Gateway) bad input gets a 400 with `{{"error": "..."}}`.

The layer holds only what inference imports (numpy's random/fft/polynomial/ma/testing are left out) and
ships bytecode compiled for {runtime} without .py sources: tracebacks show file and line numbers only.
"""
