"""The public Python API: the same pipeline the CLI runs, as typed functions for notebooks, Airflow or
Prefect tasks and CI scripts.

    import slimserve
    candidate = slimserve.optimize("all-MiniLM-L6-v2", "out", recipe="int8")
    candidate.fidelity.mean, candidate.model_bytes

Every function raises the exceptions the CLI turns into `error:` lines (`SlimserveError` for bad input,
`ToolError` for a library that failed, `LimitExceeded` for a result over a budget), never prints and never
exits. Progress is silent unless a `Progress` is passed. Outputs are written atomically, like the CLI's.
Heavy libraries (onnx, onnxruntime, torch) are imported only when a function runs.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from slimserve.progress import NULL_PROGRESS, Progress

if TYPE_CHECKING:  # the values the functions return; their modules import onnx/onnxruntime when used
    from slimserve.manifest import Manifest
    from slimserve.packagers.container import ContainerArtifacts
    from slimserve.packagers.lambda_target import LambdaArtifacts
    from slimserve.report import Report
    from slimserve.report.build_report import BuildResult
    from slimserve.report.comparison import Comparison

PathLike = str | os.PathLike[str]
DEFAULT_PYTHON = "3.12"  # packagers.target.DEFAULT_PYTHON, repeated so `import slimserve` stays light


@dataclass(frozen=True)
class Fidelity:
    """How close the candidate's outputs are to the original model's, in the family's metric."""

    metric: str
    mean: float
    min: float
    samples: int
    reference: str
    top1_agreement: float | None = None


@dataclass(frozen=True)
class Candidate:
    """An optimized model folder (`slimserve optimize`'s OUT) and what was measured of it."""

    path: Path
    recipe: str
    model_bytes: int
    fidelity: Fidelity
    notes: tuple[str, ...]
    manifest: Manifest  # slimserve.json, typed: the full record, for anything not lifted above

    @property
    def model_path(self) -> Path:
        return self.path / self.manifest.model.path


def optimize(model: PathLike, out: PathLike, *, recipe: str | None = None, task: str | None = None,
             eval_path: PathLike | None = None, input_shapes: Sequence[str] = (), input_dtype: str = "float32",
             trust_remote_code: bool = False, allow_pickle: bool = False,
             image_size: int | None = None, resize: int | None = None, mean: Sequence[float] | None = None,
             std: Sequence[float] | None = None, labels: PathLike | None = None, resample: str | None = None,
             progress: Progress = NULL_PROGRESS, cpu: str | None = None) -> Candidate:
    """Export `model` (an .onnx file, a Hugging Face folder, `package.module:factory` or a packaged model
    name), apply `recipe` (default: the recommended int8) and measure fidelity; write the folder `out`.

    `image_size` (with `resize`, `mean`, `std`, `labels`, `resample`) declares a PyTorch factory an image
    classifier preprocessed like torchvision's Resize(resize) + CenterCrop(image_size) + ToTensor +
    Normalize(mean, std) (ImageNet's mean/std by default): it is then served by the image handler.
    `cpu` names the target CPU (optimizer/isa.py TARGETS) for recipes that choose by it (int8) and for the
    manifest's record of where fidelity was measured."""
    import dataclasses

    from slimserve.atomic import atomic_dir
    from slimserve.errors import SlimserveError
    from slimserve.optimizer.families.image import factory_image
    from slimserve.optimizer.optimize import optimize as run_optimize
    from slimserve.optimizer.recipes import DEFAULT_RECIPE, parse_recipe
    from slimserve.optimizer.sources import TorchSource, resolve_source

    recipe = recipe or DEFAULT_RECIPE
    parse_recipe(recipe)  # a misspelt recipe fails before the (slow) export
    if cpu is not None:
        from slimserve.optimizer.isa import resolve

        resolve(cpu)  # so does an unknown target CPU
    image = factory_image(image_size, resize, mean, std, Path(labels) if labels is not None else None, resample)
    if image is not None and not input_shapes and not Path(model).exists():
        input_shapes = (f"1x3x{image_size}x{image_size}",)
    source = resolve_source(str(model), task=task, input_shapes=tuple(input_shapes), input_dtype=input_dtype,
                            trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    if image is not None:
        if not isinstance(source, TorchSource):
            raise SlimserveError("--image-size and the image options apply only to a PyTorch factory "
                                 "(package.module:factory)",
                                 hint="a Hugging Face image model declares its preprocessing in "
                                      "preprocessor_config.json")
        source = dataclasses.replace(source, image=image)
    inputs = [Path(model)] if Path(model).exists() else []
    with tempfile.TemporaryDirectory(prefix="slimserve-") as work, \
            atomic_dir(Path(out), inputs=inputs) as staging:
        written = run_optimize(source, recipe, staging, Path(work), Path(eval_path) if eval_path else None,
                               progress, cpu=cpu)
    return candidate_from_manifest(Path(out), written)


def candidate_from_manifest(folder: Path, written: dict[str, Any]) -> Candidate:
    """The typed value of what optimize wrote (validated by the manifest model, like every reader's)."""
    from slimserve.manifest import parse_manifest

    manifest = parse_manifest(written)
    fidelity: dict[str, Any] = written["fidelity"]
    return Candidate(
        path=Path(folder).absolute(), recipe=str(written["recipe"]), model_bytes=int(written["model"]["bytes"]),
        fidelity=Fidelity(metric=str(fidelity["metric"]), mean=float(fidelity["mean"]), min=float(fidelity["min"]),
                          samples=int(fidelity["samples"]), reference=str(fidelity["reference"]),
                          top1_agreement=fidelity.get("top1_agreement")),
        notes=tuple(manifest.notes), manifest=manifest)


def check(path: PathLike, platforms: Sequence[str] = ("aws-lambda-zip",), *, memory_mb: int | None = None,
          python: str = DEFAULT_PYTHON, arch: str = "x86_64", max_cold_start_ms: float | None = None,
          min_fidelity: float | None = None, runs: int = 3, profile_files: Sequence[PathLike] = (),
          progress: Progress = NULL_PROGRESS, min_tokens_per_s: float | None = None,
          numpy: str = "pypi") -> Report:
    """Hold an optimize output folder (or a bare .onnx, or a container package) against platforms: the
    package built and weighed, cold start and the worst accepted request measured in fresh processes,
    every limit with its verdict. `report.fits` is what the CLI's exit code says."""
    from slimserve.pipeline.check import CheckOptions, run_check

    options = CheckOptions(memory_mb=memory_mb, python=python, arch=arch, numpy=numpy,
                           max_cold_start_ms=max_cold_start_ms,
                           min_fidelity=min_fidelity, min_tokens_per_s=min_tokens_per_s, runs=runs)
    return run_check(Path(path), list(platforms), options, progress,
                     profile_files=[Path(p) for p in profile_files])


@dataclass(frozen=True)
class Package:
    """What `package` wrote: the Lambda zips and template, or the OCI image, and the check it was sized by."""

    target: Literal["lambda", "container"]
    out: Path
    report: Report | None  # the aws-lambda-zip check the memory and timeout came from (None: not checked)
    lambda_artifacts: LambdaArtifacts | None = None
    image: ContainerArtifacts | None = None

    @property
    def fits(self) -> bool | None:
        """The check's verdict for the platform packaged for; None when no check ran."""
        if self.report is None:
            return None
        from slimserve.packagers.lambda_target import PLATFORM

        return self.report.verdict(PLATFORM).fits


def package(path: PathLike, out: PathLike, *, target: Literal["lambda", "container"] = "lambda",
            python: str = DEFAULT_PYTHON, arch: str = "x86_64", memory_mb: int | None = None, check: bool = True,
            platform: str = "aws-lambda-container", base: str | None = None, push: str | None = None,
            insecure_registries: Sequence[str] = (), engine: str = "auto", snapstart: bool | None = None,
            tracing: bool = False, progress: Progress = NULL_PROGRESS, numpy: str = "pypi") -> Package:
    """Package an optimize output folder (or a bare .onnx) as Lambda zips + SAM template (`target="lambda"`,
    sized by a check against aws-lambda-zip unless `check=False`) or as an OCI image for a container
    `platform`. Every shipped file is proven to lie inside the folder and the model to load in
    onnxruntime before anything is written."""
    from slimserve.bundle import load_bundle
    from slimserve.packagers.model_check import check_model
    from slimserve.packagers.oci.registry import Reference
    from slimserve.packagers.target import Target
    from slimserve.pipeline.check import CheckOptions, run_check

    for reference in (push, base):
        if reference and not reference.startswith("oci:"):
            Reference.parse(reference)  # credentials inside a reference are refused here, never echoed
    parsed = Target.parse(python, arch, numpy)
    bundle = load_bundle(Path(path))
    check_model(bundle)
    if target == "container":
        from slimserve.packagers.container import package_container

        image = package_container(bundle, Path(out), parsed, base_ref=base, platform=platform, push_ref=push,
                                  insecure_registries=tuple(insecure_registries), engine=engine,
                                  progress=progress)
        return Package(target="container", out=Path(out).absolute(), report=None, image=image)
    from slimserve.packagers.lambda_target import PLATFORM, choose_memory, choose_timeout, package_lambda

    report = run_check(Path(path), [PLATFORM], CheckOptions(memory_mb=memory_mb, python=python, arch=arch,
                                                             numpy=numpy),
                       progress) if check else None
    verdict = None if report is None else report.verdict(PLATFORM)
    artifacts = package_lambda(bundle, Path(out), parsed, choose_memory(memory_mb, verdict),
                               choose_timeout(verdict), report, progress, snapstart=snapstart, tracing=tracing)
    return Package(target="lambda", out=artifacts.out, report=report, lambda_artifacts=artifacts)


def compare(model: PathLike, out: PathLike, *, recipes: Sequence[str] | None = None,
            platforms: Sequence[str] = ("aws-lambda-zip", "aws-lambda-container"),
            eval_path: PathLike | None = None, task: str | None = None, min_fidelity: float | None = None,
            python: str = DEFAULT_PYTHON, arch: str = "x86_64", memory_mb: int | None = None, runs: int = 3,
            jobs: int = 1, profile_files: Sequence[PathLike] = (),
            progress: Progress = NULL_PROGRESS, size_tolerance_pct: float = 10.0,
            size_tolerance_mib: float = 2.0, numpy: str = "pypi") -> Comparison:
    """Export `model` once, build one candidate per recipe (default: fp32, fp16, int8, int8-dynamic,
    int4-weight), measure each the same way and mark the Pareto frontier; write OUT (compare.json/.md/.png
    and candidates/)."""
    from slimserve.optimizer.sources import resolve_source
    from slimserve.pipeline.compare import DEFAULT_RECIPES, CompareOptions, run_compare, validate

    names = list(recipes) if recipes is not None else list(DEFAULT_RECIPES)
    from slimserve.selection import SizeTolerance

    options = CompareOptions(python=python, arch=arch, numpy=numpy, memory_mb=memory_mb, runs=runs, jobs=jobs,
                             min_fidelity=min_fidelity,
                             size_tolerance=SizeTolerance(size_tolerance_pct, size_tolerance_mib))
    files = [Path(p) for p in profile_files]
    validate(names, list(platforms), options, files)  # bad input fails before the slow export
    source = resolve_source(str(model), task=task)
    return run_compare(str(model), names, Path(out), Path(eval_path) if eval_path else None, list(platforms),
                       jobs, options, progress, profile_files=files, source=source)


def build(model: PathLike, out: PathLike, *, platform: str = "aws-lambda-zip", target: str | None = None,
          recipes: Sequence[str] | None = None, min_fidelity: float | None = None,
          max_cold_start_ms: float | None = None, base: str | None = None, eval_path: PathLike | None = None,
          task: str | None = None, python: str = DEFAULT_PYTHON, arch: str = "x86_64",
          memory_mb: int | None = None, runs: int = 3, jobs: int = 1,
          progress: Progress = NULL_PROGRESS, size_tolerance_pct: float = 10.0,
          size_tolerance_mib: float = 2.0, numpy: str = "pypi") -> BuildResult:
    """Compare recipes, choose the best candidate under the budgets, package it for `platform` and check
    the package. Raises `BuildFailed` (a `LimitExceeded`, carrying `.result`) after writing OUT when no
    candidate meets the budgets or the package fails its check."""
    from slimserve.optimizer.sources import resolve_source
    from slimserve.pipeline.build import BuildOptions, resolve_target, run_build
    from slimserve.pipeline.compare import DEFAULT_RECIPES, CompareOptions, validate
    from slimserve.selection import SizeTolerance

    names = list(recipes) if recipes is not None else list(DEFAULT_RECIPES)
    tolerance = SizeTolerance(size_tolerance_pct, size_tolerance_mib)
    options = BuildOptions(platform=platform, target=target, min_fidelity=min_fidelity,
                           max_cold_start_ms=max_cold_start_ms, base=base, size_tolerance=tolerance,
                           compare=CompareOptions(python=python, arch=arch, numpy=numpy, memory_mb=memory_mb, runs=runs,
                                                  jobs=jobs, min_fidelity=min_fidelity, size_tolerance=tolerance))
    (profile,) = validate(names, [platform], options.compare)  # bad input fails before the slow export
    resolve_target(profile, target)
    source = resolve_source(str(model), task=task)
    return run_build(str(model), Path(out), options, names, Path(eval_path) if eval_path else None, progress,
                     source=source)
