"""The `check` pipeline: load a model bundle, measure it once, hold the facts against each platform.

No printing and no exit codes here: `run_check` returns a `Report` (or raises `SlimserveError` for bad
input before anything slow starts). Package size and cold start each come from their one measurement
function (packagers.lambda_target, measure.coldstart), imported lazily and called once per check,
whatever the number of platforms.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimserve.bundle import ModelBundle, load_bundle
from slimserve.errors import SlimserveError
from slimserve.manifest import MANIFEST_NAME, read_manifest
from slimserve.measure import ColdStart, PackageSize
from slimserve.packagers.target import ARCHES, DEFAULT_PYTHON
from slimserve.profiles.loader import ALL, list_profiles, load_profile
from slimserve.profiles.rules import DeploymentFacts, RuleOptions, evaluate, validate_memory
from slimserve.profiles.schema import Profile
from slimserve.progress import NULL_PROGRESS, Progress
from slimserve.report import Report, make_report
from slimserve.tasks import ranked_metric


@dataclass(frozen=True)
class CheckOptions:
    memory_mb: int | None = None
    python: str = DEFAULT_PYTHON
    arch: str = ARCHES[0]
    numpy: str = "pypi"  # the runtime closure's numpy build (packagers.target.NUMPY_BUILDS)
    max_cold_start_ms: float | None = None
    min_fidelity: float | None = None
    min_tokens_per_s: float | None = None
    runs: int = 3
    host_vcpus: float = 1.0  # vCPUs the measured cold start used here; see profiles.rules on projections
    # Container platform -> base image (registry ref, `oci:PATH` or an OCI layout folder). For each platform
    # listed, the real image is assembled (packagers.container) and measured instead of estimated.
    image_bases: tuple[tuple[str, str], ...] = ()

    def rule_options(self) -> RuleOptions:
        return RuleOptions(memory_mb=self.memory_mb, max_cold_start_ms=self.max_cold_start_ms,
                           min_fidelity=self.min_fidelity, min_tokens_per_s=self.min_tokens_per_s)


def resolve_profiles(platforms: Sequence[str | Profile], profile_files: Sequence[Path] = ()) -> list[Profile]:
    """Platform names (or `all`) and profile files -> distinct profiles; unknown or broken ones raise."""
    found: list[Profile] = []
    for item in platforms:
        if isinstance(item, Profile):
            found.append(item)
        elif item == ALL:
            found.extend(load_profile(name) for name in list_profiles())
        else:
            found.append(load_profile(item))
    found.extend(load_profile(Path(f)) for f in profile_files)
    if not found:
        raise SlimserveError("no platform to check against",
                             hint=f"pass --platform NAME (one of: {', '.join(list_profiles())}, or all) "
                                  "or --profile FILE")
    unique: dict[str, Profile] = {}
    for profile in found:
        if profile.name in unique and unique[profile.name] != profile:
            raise SlimserveError(f"two different profiles are named {profile.name!r}",
                                 hint="rename the `name` in your profile file")
        unique.setdefault(profile.name, profile)
    return [unique[name] for name in sorted(unique)]


def validate_options(options: CheckOptions, profiles: Sequence[Profile]) -> None:
    if options.runs < 1:
        raise SlimserveError(f"--runs must be at least 1, got {options.runs}")
    if options.max_cold_start_ms is not None and not (options.max_cold_start_ms > 0
                                                      and math.isfinite(options.max_cold_start_ms)):
        raise SlimserveError(f"--max-cold-start must be a positive number of ms, got {options.max_cold_start_ms}")
    if options.min_fidelity is not None and not 0 < options.min_fidelity <= 1:
        raise SlimserveError(f"--min-fidelity is a fidelity in (0, 1] (the task's metric), got {options.min_fidelity}")
    if options.min_tokens_per_s is not None and not (options.min_tokens_per_s > 0
                                                     and math.isfinite(options.min_tokens_per_s)):
        raise SlimserveError(f"--min-tokens-per-s must be a positive number, got {options.min_tokens_per_s}")
    for profile in profiles:
        validate_memory(profile, options.memory_mb)


def _target(options: CheckOptions) -> Any:
    from slimserve.packagers.target import Target  # validates python/arch with a one-line error

    return Target.parse(options.python, options.arch, options.numpy)


def _readable_model(bundle: ModelBundle) -> None:
    """Fail fast, before minutes of measuring, when the model file is not a readable ONNX model."""
    from slimserve.optimizer.onnx_io import load_onnx

    load_onnx(bundle.model_path)


def measure_package(bundle: ModelBundle, target: Any) -> PackageSize:
    from slimserve.packagers.lambda_target import lambda_package_size

    size: PackageSize = lambda_package_size(bundle, target)
    return size


def measure_cold_start(bundle: ModelBundle, target: Any, runs: int, cpus: int = 1) -> ColdStart:
    """Cold start, peak RSS and the worst accepted request, on `cpus` CPUs (the projection's "used here")."""
    from slimserve.measure.coldstart import cold_start_for_bundle

    cold: ColdStart = cold_start_for_bundle(bundle, target, runs, cpus=cpus)
    return cold


def measure_image(bundle: ModelBundle, target: Any, profile: Profile, base: str) -> int | None:
    """Uncompressed bytes of the image `profile`'s container target would ship (None: not measurable)."""
    from slimserve.packagers.container import container_image_size

    size: PackageSize = container_image_size(bundle, target, base, platform=profile.name)
    return size.image_bytes


def model_summary(bundle: ModelBundle) -> dict[str, Any]:
    manifest = bundle.manifest
    return {"path": str(bundle.model_path), "bytes": manifest.model.bytes, "recipe": manifest.recipe,
            "fidelity": None if manifest.fidelity is None else manifest.fidelity.to_dict()}


def facts_for(bundle: ModelBundle, options: CheckOptions, package: PackageSize, cold_start: ColdStart) -> DeploymentFacts:
    fidelity = bundle.manifest.fidelity
    mean = None if fidelity is None else fidelity.mean
    worst = None if fidelity is None else fidelity.min
    return DeploymentFacts(package=package, cold_start=cold_start, python=options.python, arch=options.arch,
                           fidelity_mean=None if mean is None else float(mean),
                           fidelity_min=None if worst is None else float(worst),
                           fidelity_metric=ranked_metric(None if fidelity is None else fidelity.metric),
                           host_vcpus=options.host_vcpus)


def check_facts(path: str, profiles: Sequence[Profile], facts: DeploymentFacts, options: CheckOptions,
                model: dict[str, Any] | None = None, image_bytes: dict[str, int] | None = None) -> Report:
    """Evaluate already-measured facts against each profile (pure: no measuring, no I/O).

    `image_bytes` holds measured image sizes by platform; container platforms without one get the
    estimate (base image + unzipped package) from the rules, labelled as such.
    """
    rule_options = options.rule_options()
    verdicts = []
    for profile in profiles:
        measured = (image_bytes or {}).get(profile.name)
        platform_facts = facts if measured is None else dataclasses.replace(
            facts, package=dataclasses.replace(facts.package, image_bytes=measured))
        verdicts.append(evaluate(profile, platform_facts, rule_options))
    return make_report(path=path, python=facts.python, arch=facts.arch, package=facts.package,
                       cold_start=facts.cold_start, verdicts=verdicts, model=model,
                       host_vcpus=facts.host_vcpus)


def container_package(path: Path) -> tuple[Path, tuple[str, int] | None]:
    """For a `package --target container` folder: (its model folder, (platform, uncompressed image bytes)).

    Any other path comes back unchanged with no image, so optimize outputs and bare .onnx files check as usual.
    """
    if not path.is_dir() or not (path / MANIFEST_NAME).is_file():
        return path, None
    package = read_manifest(path).package
    if package is None or package.target != "container":
        return path, None
    size = None if package.image is None else package.image.uncompressed_bytes
    return path / "context" / "model", (package.platform, size) if size is not None else None


def run_check(path: Path | str, platforms: Sequence[str | Profile], options: CheckOptions | None = None,
              progress: Progress = NULL_PROGRESS, *, profile_files: Sequence[Path] = ()) -> Report:
    """Check the optimize output folder (or bare .onnx) at `path` against every chosen platform."""
    options = options or CheckOptions()
    profiles = resolve_profiles(platforms, profile_files)
    validate_options(options, profiles)
    target = _target(options)
    model_path, built_image = container_package(Path(path))
    bundle = load_bundle(model_path)
    _readable_model(bundle)
    with progress.stage(f"measure package size ({options.python}, {options.arch})"):
        package = measure_package(bundle, target)
    with progress.stage(f"measure cold start and the worst accepted request ({options.runs} fresh processes)",
                        total=None):
        cold_start = measure_cold_start(bundle, target, options.runs, max(1, math.ceil(options.host_vcpus)))
    images: dict[str, int] = {}
    if built_image is not None:  # a `package --target container` output: its image was measured when built
        images[built_image[0]] = built_image[1]
    bases = dict(options.image_bases)
    for profile in profiles:
        if profile.package == "container" and profile.name in bases:
            with progress.stage(f"measure {profile.name} image"):
                measured = measure_image(bundle, target, profile, bases[profile.name])
            if measured is not None:
                images[profile.name] = measured
    facts = facts_for(bundle, options, package, cold_start)
    return check_facts(str(path), profiles, facts, options, model_summary(bundle), images)
