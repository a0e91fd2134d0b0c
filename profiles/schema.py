"""The shape of a platform profile: every limit with its value, unit and the public page it comes from.

Profiles are data (one TOML file per platform); these frozen models are the only way they enter the
program. Unknown keys are errors (a typo must not silently drop a limit), units are checked against the
kind of limit they belong to, and sources must be public https pages.
"""

from __future__ import annotations

import datetime
import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Unit -> factor to the family's base unit (bytes, milliseconds, count). AWS writes "MB" where it means
# MiB (250 MB = 262,144,000 bytes); profiles therefore say MiB where the platform's bytes are binary.
SIZE_UNITS: dict[str, float] = {"B": 1, "kB": 1000, "KB": 1000, "MB": 1000**2, "GB": 1000**3,
              "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
TIME_UNITS: dict[str, float] = {"ms": 1.0, "s": 1000.0, "min": 60_000.0}
COUNT_UNITS: dict[str, float] = {"count": 1}
ALL_UNITS: dict[str, float] = {**SIZE_UNITS, **TIME_UNITS, **COUNT_UNITS}

# The limits rules know how to check, and the unit family each needs. Adding a platform needs no code;
# adding a new *kind* of limit does (a rule in rules.py). Anything else informative goes under [info].
LIMIT_FAMILIES: dict[str, dict[str, float]] = {
    "zipped_size": SIZE_UNITS,      # compressed upload(s); `per_archive` when each archive counts alone
    "unzipped_size": SIZE_UNITS,    # everything extracted: function + layers / sources + modules / bundle
    "layers": COUNT_UNITS,          # extra archives attached to the function
    "image_size": SIZE_UNITS,       # uncompressed container image
    "init_timeout": TIME_UNITS,     # time the platform allows from start until the handler is ready
    "request_timeout": TIME_UNITS,  # the longest a request (function timeout) may be set to run
    "restore_timeout": TIME_UNITS,  # SnapStart: what a restore (the after-restore hooks) may take
}


def unit_family(unit: str) -> dict[str, float]:
    for family in (SIZE_UNITS, TIME_UNITS, COUNT_UNITS):
        if unit in family:
            return family
    raise ValueError(f"unknown unit {unit!r} (use one of {', '.join(ALL_UNITS)})")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_source(url: str) -> str:
    if not url.startswith("https://"):
        raise ValueError(f"source must be a public https:// page, got {url!r}")
    return url


class Limit(_Strict):
    """One documented number: `value` `unit`, from `source`; `severity` says what exceeding it means."""

    value: float = Field(ge=0)
    unit: str
    source: str
    note: str = ""
    severity: Literal["fail", "warn"] = "fail"
    per_archive: bool = False  # the limit applies to each uploaded archive on its own (Lambda direct upload)
    scope: str = ""  # a few words on what is counted, for reasons: "function + all layers"
    advice: str = ""  # what to do when the limit is exceeded, appended to the reason

    _source = field_validator("source")(_check_source)

    @field_validator("unit")
    @classmethod
    def _known_unit(cls, unit: str) -> str:
        unit_family(unit)
        return unit

    @field_validator("value")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("value must be a finite number")
        return value

    def base(self) -> float:
        """The value in its family's base unit: bytes, milliseconds or a count."""
        return self.value * unit_family(self.unit)[self.unit]

    def display(self) -> str:
        return _num(self.value) if self.unit == "count" else f"{_num(self.value)} {self.unit}"


class Limits(_Strict):
    zipped_size: Limit | None = None
    unzipped_size: Limit | None = None
    layers: Limit | None = None
    image_size: Limit | None = None
    init_timeout: Limit | None = None
    request_timeout: Limit | None = None
    restore_timeout: Limit | None = None

    @model_validator(mode="after")
    def _units_match_kind(self) -> Limits:
        for name, family in LIMIT_FAMILIES.items():
            limit = getattr(self, name)
            if limit is not None and limit.unit not in family:
                raise ValueError(f"limits.{name} needs a unit among {', '.join(family)}, got {limit.unit!r}")
        return self


class Lifecycle(_Strict):
    """When the platform stops patching a Python version (`deprecated`), then refuses new functions with it
    (`create_block`) and updates of existing ones (`update_block`): TOML dates."""

    deprecated: datetime.date
    create_block: datetime.date | None = None
    update_block: datetime.date | None = None


class Runtime(_Strict):
    """Python versions and CPU architectures the platform runs (for containers: what its base images offer)."""

    python: tuple[str, ...] = Field(min_length=1)
    archs: tuple[Literal["x86_64", "arm64"], ...] = Field(min_length=1)
    source: str
    note: str = ""
    lifecycle: dict[str, Lifecycle] = Field(default_factory=dict)  # python version -> its deprecation dates

    _source = field_validator("source")(_check_source)

    @field_validator("python")
    @classmethod
    def _versions(cls, versions: tuple[str, ...]) -> tuple[str, ...]:
        for v in versions:
            parts = v.split(".")
            if len(parts) != 2 or not all(p.isdigit() for p in parts) or parts[0] != "3":
                raise ValueError(f"python versions are written like \"3.12\", got {v!r}")
        return versions


class Memory(_Strict):
    """The memory settings a function may have: a range (`min`..`max` in `step`s) or a list of `values`.

    Settings are in the platform's own "MB" (Lambda, Azure) or MiB (Google): both are 2**20 bytes in
    practice, and peak RSS is measured in MiB, so they are compared directly.
    """

    unit: Literal["MB", "MiB"]
    min: int | None = Field(default=None, gt=0)
    max: int | None = Field(default=None, gt=0)
    step: int = Field(default=1, gt=0)
    values: tuple[int, ...] = ()
    default: int | None = None
    source: str
    note: str = ""

    _source = field_validator("source")(_check_source)

    @model_validator(mode="after")
    def _range_or_values(self) -> Memory:
        if self.values:
            if self.min is not None or self.max is not None:
                raise ValueError("memory takes either values = [...] or min/max, not both")
            if list(self.values) != sorted(set(self.values)) or self.values[0] <= 0:
                raise ValueError("memory.values must be positive and strictly increasing")
        else:
            if self.min is None or self.max is None:
                raise ValueError("memory needs min and max (or a list of values)")
            if self.min > self.max:
                raise ValueError(f"memory.min {self.min} is above memory.max {self.max}")
        if self.default is not None and not self.allows(self.default):
            raise ValueError(f"memory.default {self.default} is not an allowed setting")
        return self

    @property
    def lowest(self) -> int:
        return self.values[0] if self.values else int(self.min)  # type: ignore[arg-type]  # validated above

    @property
    def highest(self) -> int:
        return self.values[-1] if self.values else int(self.max)  # type: ignore[arg-type]  # validated above

    def allows(self, mb: int) -> bool:
        if self.values:
            return mb in self.values
        assert self.min is not None and self.max is not None  # guaranteed by the validator
        return self.min <= mb <= self.max and (mb - self.min) % self.step == 0

    def describe(self) -> str:
        if self.values:
            return " / ".join(f"{v:,}" for v in self.values) + f" {self.unit}"
        step = f" in steps of {self.step}" if self.step > 1 else ""
        return f"{self.min:,}–{self.max:,} {self.unit}{step}"

    def candidates(self, at_least: float, granularity: int = 64) -> list[int]:
        """Allowed settings ≥ `at_least`, smallest first. Ranges are walked in multiples of `granularity`
        (rounded to the platform's step) so recommendations read like settings people choose."""
        if self.values:
            return [v for v in self.values if v >= at_least]
        assert self.min is not None and self.max is not None  # guaranteed by the validator
        grain = granularity if granularity % self.step == 0 else self.step
        start = max(self.min, math.ceil(at_least / grain) * grain)
        start = self.min + math.ceil((start - self.min) / self.step) * self.step  # back onto the step grid
        out = list(range(start, self.max + 1, grain))
        if self.max >= at_least and (not out or out[-1] != self.max):
            out.append(self.max)
        return out


class CpuTier(_Strict):
    memory: int = Field(gt=0)  # this many vCPUs up to and including this memory setting
    vcpus: float = Field(gt=0)


class Cpu(_Strict):
    """How much CPU a memory setting buys, for projecting cold starts measured here onto the platform.

    `proportional`: vcpus = memory / mb_per_vcpu, capped at max_vcpus (Lambda: 1,769 MB ≈ 1 vCPU).
    `tiers`: vcpus of the first tier whose `memory` is ≥ the setting (Cloud Functions, Azure, Cloud Run).
    """

    model: Literal["proportional", "tiers"]
    mb_per_vcpu: float | None = Field(default=None, gt=0)
    max_vcpus: float | None = Field(default=None, gt=0)
    tiers: tuple[CpuTier, ...] = ()
    source: str
    note: str = ""

    _source = field_validator("source")(_check_source)

    @model_validator(mode="after")
    def _complete(self) -> Cpu:
        if self.model == "proportional" and (self.mb_per_vcpu is None or self.max_vcpus is None or self.tiers):
            raise ValueError("cpu.model = \"proportional\" needs mb_per_vcpu and max_vcpus (and no tiers)")
        if self.model == "tiers":
            if not self.tiers or self.mb_per_vcpu is not None:
                raise ValueError("cpu.model = \"tiers\" needs tiers = [{memory = MB, vcpus = N}, ...]")
            mems = [t.memory for t in self.tiers]
            if mems != sorted(set(mems)):
                raise ValueError("cpu.tiers must be sorted by memory, without repeats")
        return self

    def vcpus_at(self, memory_mb: int) -> float:
        if self.model == "proportional":
            assert self.mb_per_vcpu is not None and self.max_vcpus is not None  # validated
            return min(self.max_vcpus, memory_mb / self.mb_per_vcpu)
        for tier in self.tiers:
            if memory_mb <= tier.memory:
                return tier.vcpus
        return self.tiers[-1].vcpus

    def describe(self) -> str:
        if self.model == "proportional":
            return f"{_num(self.mb_per_vcpu or 0)} MB ≈ 1 vCPU, up to {_num(self.max_vcpus or 0)} vCPUs"
        return ", ".join(f"≤{t.memory:,} MB: {_num(t.vcpus)} vCPU" for t in self.tiers)


class Image(_Strict):
    """For container platforms: the base image slimserve builds on, and its (estimated) size.

    Until the container packager measures real images, image size = base_size + the unzipped package,
    reported as an estimate.
    """

    base: str
    base_size: Limit

    @field_validator("base_size")
    @classmethod
    def _size_unit(cls, limit: Limit) -> Limit:
        if limit.unit not in SIZE_UNITS:
            raise ValueError(f"image.base_size needs a size unit, got {limit.unit!r}")
        return limit


class Packager(_Strict):
    """What a slimserve packager needs to build for the platform; a profile without it is checked only.

    `artifact`: the shape built, "zip" (Lambda layer + function zips) or "container" (an OCI image).
    `interface`: how the platform drives the shipped runtime: "lambda-runtime-api" (Lambda's runtime API:
    the managed runtime or the base image's runtime interface client calls `lambda_handler.handler`) or
    "http" (the image runs the handler's WSGI app, serving on $PORT, `port` when unset).
    `base`: a container's default base image, `{python}` standing for the target's X.Y.
    `app_dir`: where the handler and model/ go; `packages_dir`: where the runtime closure goes (a folder
    the platform puts on sys.path, or one the image's PYTHONPATH names).
    Supported Pythons and architectures are the profile's [runtime] table.
    """

    artifact: Literal["zip", "container"]
    interface: Literal["lambda-runtime-api", "http"]
    base: str = ""
    app_dir: str = Field(pattern=r"^/")
    packages_dir: str = Field(pattern=r"^/")
    port: int | None = Field(default=None, gt=0, lt=65536)
    source: str
    note: str = ""

    _source = field_validator("source")(_check_source)

    @model_validator(mode="after")
    def _complete(self) -> Packager:
        if self.artifact == "container" and not self.base:
            raise ValueError("a container packager needs base = \"registry/image:{python}...\"")
        if self.artifact == "zip" and self.base:
            raise ValueError("base applies only to artifact = \"container\"")
        if self.interface == "http" and self.port is None:
            raise ValueError("interface = \"http\" needs the port served when $PORT is unset")
        return self

    def base_for(self, python: str) -> str:
        return self.base.format(python=python)


class Profile(_Strict):
    schema_version: Literal[1] = 1
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    title: str
    provider: str
    package: Literal["zip", "container", "source"]
    docs: str
    runtime: Runtime
    memory: Memory
    cpu: Cpu
    limits: Limits = Limits()
    image: Image | None = None
    packager: Packager | None = None
    info: dict[str, Limit] = {}

    _docs = field_validator("docs")(_check_source)

    @model_validator(mode="after")
    def _container_has_image(self) -> Profile:
        if self.package == "container" and self.image is None and self.limits.image_size is not None:
            raise ValueError("a container profile with limits.image_size needs an [image] table (base, base_size)")
        if self.packager is not None and (self.packager.artifact == "container") != (self.package == "container"):
            raise ValueError(f"packager.artifact = {self.packager.artifact!r} does not build a {self.package!r} package")
        return self

    def sources(self) -> list[str]:
        """Every distinct page this profile's numbers come from, in order of appearance."""
        urls = [self.docs, self.runtime.source, self.memory.source, self.cpu.source]
        for name in LIMIT_FAMILIES:
            limit = getattr(self.limits, name)
            if limit is not None:
                urls.append(limit.source)
        if self.image is not None:
            urls.append(self.image.base_size.source)
        urls += [limit.source for limit in self.info.values()]
        return list(dict.fromkeys(urls))


def _num(x: float) -> str:
    """1769.0 -> '1,769', 0.583 -> '0.583', 262144000 -> '262,144,000'."""
    if float(x).is_integer():
        return f"{int(x):,}"
    return f"{x:,.3f}".rstrip("0").rstrip(".")
