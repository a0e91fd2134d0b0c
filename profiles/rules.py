"""Hold measured facts against one platform profile: each rule gives a finding a person can act on.

Rules only read numbers: package size, cold start and peak RSS come from `slimserve.measure` values,
fidelity from the manifest. Nothing here measures, prints or exits. A `--memory` the platform does not
offer is bad input (`SlimserveError`, exit 2); everything else is a finding with pass / warn / fail.

Projection of cold start onto the platform (an estimate, always labelled as one):

    projected = measured here × max(1, host vCPUs used / platform vCPUs at that memory)

Cold start is dominated by single-threaded work (imports, reading and deserialising the model, a first
inference on one small batch), so `host_vcpus` defaults to 1. A platform share below one vCPU (Lambda at
512 MB ≈ 0.29 vCPU) stretches the measured time in proportion; more vCPUs than were used here are not
assumed to make it faster. CPU models differ too, so treat the projection as a guide, not a promise.

Memory headroom: a setting holds the model when it is ≥ peak RSS × 1.5 + 64 MB. The peak is the process's
peak after the worst request the handler's limits accept (`ColdStart.worst_peak_rss_mb`; the small-sample
peak when no worst request was measured); the 1.5× covers allocator fragmentation, onnxruntime's arena
keeping its high-water mark across requests and run-to-run variation, and the platform's own runtime
client and log shipping add a fixed amount a bare measurement here does not include (the 64 MB). So a
setting below peak + 64 MB fails (it cannot hold the process), one below peak × 1.5 + 64 MB warns.

Request time: the worst accepted request is measured on one CPU here and projected like the cold start.
The function timeout `check` recommends is (projected init + projected worst request) × 3, at least 10 s,
at most the platform's longest timeout: init counts because a function whose init phase ran out is
initialised again inside its first invocation, under the function timeout.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from slimserve.errors import SlimserveError
from slimserve.measure import ColdStart, PackageSize
from slimserve.profiles.schema import SIZE_UNITS, Limit, Profile, _num

Status = Literal["pass", "warn", "fail"]
STATUSES: tuple[Status, ...] = ("pass", "warn", "fail")

HEADROOM_FACTOR = 1.5
HEADROOM_MB = 64
INIT_WARN_FRACTION = 0.5  # projections are estimates: within 2× of the init limit is worth a warning
TIMEOUT_SAFETY = 3.0  # other CPUs (no VNNI, older generations), noisy neighbours, a colder cache
MIN_TIMEOUT_S = 10

# Findings are reported in this order on every platform (then by id), so reports diff cleanly.
RULE_ORDER = ("python", "arch", "zipped-size", "unzipped-size", "layers", "image-size", "memory",
              "init-time", "snapstart-restore", "cold-start", "request-time", "generation-speed", "fidelity")


@dataclass(frozen=True)
class Finding:
    """One rule's verdict: `measured` against `limit`, both in `unit` (strings for versions/archs)."""

    id: str
    name: str
    status: Status
    measured: float | str | None
    limit: float | str | None
    unit: str
    reason: str
    source: str = ""
    estimate: bool = False

    @property
    def order(self) -> tuple[int, str]:
        return (RULE_ORDER.index(self.id) if self.id in RULE_ORDER else len(RULE_ORDER), self.id)


@dataclass(frozen=True)
class DeploymentFacts:
    """What was measured once and is held against every platform.

    `package` and `cold_start` come from the one measurement function of each; `fidelity_mean` is the
    manifest's mean per-sample cosine (None for a bare .onnx); `python`/`arch` is the target measured for.
    """

    package: PackageSize
    cold_start: ColdStart
    python: str
    arch: str
    fidelity_mean: float | None = None
    fidelity_metric: str = "cosine"  # what fidelity_mean measures (the task's metric, slimserve.tasks)
    fidelity_min: float | None = None
    host_vcpus: float = 1.0

    @property
    def peak_rss_mb(self) -> float:
        """The peak the memory setting must hold: after the worst accepted request when it was measured."""
        return self.cold_start.max_rss_mb


@dataclass(frozen=True)
class RuleOptions:
    memory_mb: int | None = None
    max_cold_start_ms: float | None = None
    min_fidelity: float | None = None
    min_tokens_per_s: float | None = None  # text generation: decode speed the setting must reach


@dataclass(frozen=True)
class Projection:
    """Cold start measured here, projected onto `memory_mb` on the platform (an estimate)."""

    memory_mb: int
    vcpus: float
    factor: float
    init_ms: float
    total_ms: float
    formula: str


@dataclass(frozen=True)
class PlatformVerdict:
    name: str
    title: str
    memory_mb: int | None  # the setting the findings were evaluated at
    recommended_memory_mb: int | None
    findings: tuple[Finding, ...]
    projection: Projection | None = None
    memory_note: str = ""
    sources: tuple[str, ...] = field(default_factory=tuple)
    worst_request_ms: float | None = None  # projected onto `memory_mb` (an estimate)
    timeout_s: int | None = None  # the function timeout to set at `memory_mb`, from the worst request

    @property
    def fits(self) -> bool:
        return all(f.status != "fail" for f in self.findings)

    def finding(self, rule_id: str) -> Finding | None:
        """The finding of one rule (`memory`, `unzipped-size`, ...), or None when it did not apply."""
        return next((f for f in self.findings if f.id == rule_id), None)


def memory_needed_mb(peak_rss_mb: float) -> float:
    return peak_rss_mb * HEADROOM_FACTOR + HEADROOM_MB


def validate_memory(profile: Profile, memory_mb: int | None) -> None:
    """`--memory` must be a setting the platform offers: otherwise bad input (exit 2)."""
    if memory_mb is not None and not profile.memory.allows(memory_mb):
        raise SlimserveError(
            f"--memory {memory_mb} MB is not a memory setting of {profile.name} "
            f"(allowed: {profile.memory.describe()})",
            hint="pick an allowed value, or leave --memory out to get a recommended setting")


def project(profile: Profile, facts: DeploymentFacts, memory_mb: int) -> Projection:
    cs = facts.cold_start
    vcpus = profile.cpu.vcpus_at(memory_mb)
    factor = max(1.0, facts.host_vcpus / vcpus)
    init_here = cs.import_ms + cs.load_ms
    formula = (f"max(1, {_num(facts.host_vcpus)} vCPU used here / {vcpus:.3g} vCPU at "
               f"{memory_mb:,} {profile.memory.unit}) = ×{factor:.2f}")
    return Projection(memory_mb=memory_mb, vcpus=vcpus, factor=factor, init_ms=init_here * factor,
                      total_ms=cs.total_ms * factor, formula=formula)


def request_ms(proj: Projection, facts: DeploymentFacts) -> float | None:
    """The worst accepted request measured here, projected like the cold start (None: not measured)."""
    worst = facts.cold_start.worst_ms
    return None if worst is None else worst * proj.factor


def tokens_per_s(proj: Projection, facts: DeploymentFacts) -> float | None:
    """Decode tokens/s measured here, projected onto the platform's CPU share (a token is a pass over
    every weight, so it slows with a smaller share like the cold start does, and is not assumed to gain
    from more vCPUs than were used here). None: not a generation model."""
    measured = facts.cold_start.tokens_per_s
    return None if measured is None else measured / proj.factor


def timeout_s(profile: Profile, facts: DeploymentFacts, proj: Projection) -> int | None:
    """The function timeout for the worst accepted request at `proj.memory_mb` (see the module docstring)."""
    worst = request_ms(proj, facts)
    if worst is None:
        return None
    wanted = max(MIN_TIMEOUT_S, math.ceil(TIMEOUT_SAFETY * (proj.init_ms + worst) / 1000))
    limit = profile.limits.request_timeout
    return wanted if limit is None else min(wanted, max(1, int(limit.base() // 1000)))


def recommend_memory(profile: Profile, facts: DeploymentFacts, options: RuleOptions) -> int | None:
    """Smallest allowed setting that holds peak RSS with headroom, starts within the platform's init
    limit, meets --max-cold-start and runs the worst accepted request within the platform's longest
    timeout with the safety factor (all through the projection). None when no setting does."""
    init_limit = profile.limits.init_timeout
    request_limit = profile.limits.request_timeout
    for memory in profile.memory.candidates(memory_needed_mb(facts.peak_rss_mb)):
        proj = project(profile, facts, memory)
        if init_limit is not None and proj.init_ms > init_limit.base():
            continue
        if options.max_cold_start_ms is not None and proj.total_ms > options.max_cold_start_ms:
            continue
        worst = request_ms(proj, facts)
        if worst is not None and request_limit is not None and \
                TIMEOUT_SAFETY * (proj.init_ms + worst) > request_limit.base():
            continue
        speed = tokens_per_s(proj, facts)
        if options.min_tokens_per_s is not None and (speed is None or speed < options.min_tokens_per_s):
            continue
        return int(memory)
    return None


def evaluate(profile: Profile, facts: DeploymentFacts, options: RuleOptions) -> PlatformVerdict:
    validate_memory(profile, options.memory_mb)
    recommended = recommend_memory(profile, facts, options)
    if options.memory_mb is not None:
        memory, note = options.memory_mb, "as requested with --memory"
    elif recommended is not None:
        memory, note = recommended, "the recommended setting"
    else:  # nothing fits every constraint: judge at the largest setting, the best case the platform has
        memory, note = profile.memory.highest, "the largest setting (no setting meets every constraint)"
    projection = project(profile, facts, memory)
    findings: list[Finding] = []
    for rule in RULES:
        finding = rule(profile, facts, options, memory, projection)
        if finding is not None:
            findings.append(finding)
    findings.sort(key=lambda f: f.order)
    return PlatformVerdict(name=profile.name, title=profile.title, memory_mb=memory,
                           recommended_memory_mb=recommended, findings=tuple(findings),
                           projection=projection, memory_note=note, sources=tuple(profile.sources()),
                           worst_request_ms=request_ms(projection, facts),
                           timeout_s=timeout_s(profile, facts, projection))


# --- the rules ---------------------------------------------------------------------------------------

Rule = Callable[[Profile, DeploymentFacts, RuleOptions, int, Projection], "Finding | None"]


def _python(profile: Profile, facts: DeploymentFacts, options: RuleOptions, memory: int,
            proj: Projection) -> Finding:
    offered = profile.runtime.python
    span = f"{offered[0]}–{offered[-1]}" if len(offered) > 1 else offered[0]
    if facts.python not in offered:
        return Finding("python", "Python version", "fail", facts.python, span, "",
                       f"Python {facts.python} is not offered by {profile.name} ({span}): pass --python {offered[-1]}",
                       profile.runtime.source)
    status, reason = _lifecycle(profile, facts.python, datetime.date.today())
    return Finding("python", "Python version", status, facts.python, span, "", reason, profile.runtime.source)


def _lifecycle(profile: Profile, python: str, today: datetime.date) -> tuple[Status, str]:
    """Offered, but deprecated (no security patches: warn) or past the date new functions are refused (fail)."""
    dates = profile.runtime.lifecycle.get(python)
    newest = max(profile.runtime.python, key=lambda v: tuple(int(p) for p in v.split(".")))
    if dates is None or today < dates.deprecated:
        return "pass", f"Python {python} is offered"
    blocked = dates.create_block is not None and today >= dates.create_block
    then = (f"; new functions are refused from {dates.create_block}" if dates.create_block and not blocked else "") + \
           (f", updates from {dates.update_block}" if dates.update_block else "")
    if blocked:
        return "fail", (f"Python {python} has been deprecated on {profile.name} since {dates.deprecated} and new "
                        f"functions with it are refused since {dates.create_block}{then}: pass --python {newest}")
    return "warn", (f"Python {python} has been deprecated on {profile.name} since {dates.deprecated} (no security "
                    f"patches){then}: pass --python {newest}")


def _arch(profile: Profile, facts: DeploymentFacts, options: RuleOptions, memory: int,
          proj: Projection) -> Finding:
    archs = profile.runtime.archs
    ok = facts.arch in archs
    reason = (f"{facts.arch} is offered" if ok else
              f"{facts.arch} is not offered by {profile.name} ({', '.join(archs)}): pass --arch {archs[0]}")
    return Finding("arch", "CPU architecture", "pass" if ok else "fail", facts.arch, ", ".join(archs), "",
                   reason, profile.runtime.source)


def _size_finding(rule_id: str, name: str, label: str, limit: Limit, measured_bytes: float,
                  *, estimate: bool = False, detail: str = "") -> Finding:
    factor = SIZE_UNITS[limit.unit]
    measured = measured_bytes / factor
    over = measured_bytes > limit.base()
    scope = f" for {limit.scope}" if limit.scope else ""
    est = "estimated " if estimate else ""
    shown = f"{est}{label} {_size(measured, limit.unit)}{detail}"
    if over:
        reason = f"{shown} > {limit.display()} limit{scope}"
        reason += f": {limit.advice}" if limit.advice else ""
    else:
        reason = f"{shown} ≤ {limit.display()} limit{scope}"
    return Finding(rule_id, name, limit.severity if over else "pass", round(measured, 3), limit.value,
                   limit.unit, reason, limit.source, estimate)


def _zipped(profile: Profile, facts: DeploymentFacts, options: RuleOptions, memory: int,
            proj: Projection) -> Finding | None:
    limit = profile.limits.zipped_size
    if limit is None:
        return None
    pkg = facts.package
    if limit.per_archive and pkg.parts:
        part, size = max(sorted(pkg.parts.items()), key=lambda kv: kv[1])
        return _size_finding("zipped-size", "Zipped upload size", "zipped", limit, size,
                             detail=f" (largest archive, {part})")
    return _size_finding("zipped-size", "Zipped upload size", "zipped", limit, pkg.zipped_bytes)


def _unzipped(profile: Profile, facts: DeploymentFacts, options: RuleOptions, memory: int,
              proj: Projection) -> Finding | None:
    limit = profile.limits.unzipped_size
    if limit is None:
        return None
    return _size_finding("unzipped-size", "Unzipped size", "unzipped", limit, facts.package.unzipped_bytes)


def _layers(profile: Profile, facts: DeploymentFacts, options: RuleOptions, memory: int,
            proj: Projection) -> Finding | None:
    limit = profile.limits.layers
    if limit is None:
        return None
    n = facts.package.layers
    over = n > limit.value
    reason = f"{n} layer{'s' if n != 1 else ''} {'>' if over else '≤'} {_num(limit.value)} allowed"
    if over and limit.advice:
        reason += f": {limit.advice}"
    return Finding("layers", "Layers", limit.severity if over else "pass", n, limit.value, "count", reason,
                   limit.source)


def _image(profile: Profile, facts: DeploymentFacts, options: RuleOptions, memory: int,
           proj: Projection) -> Finding | None:
    limit = profile.limits.image_size
    if limit is None:
        return None
    if facts.package.image_bytes is not None:
        return _size_finding("image-size", "Image size", "image", limit, facts.package.image_bytes)
    # Without a measured image (slimserve.pipeline.check measures one when CheckOptions.image_bases names a base
    # for this platform, through packagers.container.container_image_size): the profile's base image
    # size + everything the package unpacks to, labelled as an estimate.
    assert profile.image is not None  # the schema requires [image] with limits.image_size
    base = profile.image.base_size.base()
    detail = (f" ({profile.image.base} ≈ {_size(base / SIZE_UNITS[limit.unit], limit.unit)} "
              f"+ unzipped package)")
    return _size_finding("image-size", "Image size", "image", limit, base + facts.package.unzipped_bytes,
                         estimate=True, detail=detail)


def _memory(profile: Profile, facts: DeploymentFacts, options: RuleOptions, memory: int,
            proj: Projection) -> Finding:
    peak = facts.peak_rss_mb
    need = memory_needed_mb(peak)
    unit = profile.memory.unit
    source = profile.memory.source
    which = " (worst accepted request)" if facts.cold_start.worst_peak_rss_mb is not None else ""
    headroom = f"peak RSS{which} {peak:,.0f} MB × {HEADROOM_FACTOR} + {HEADROOM_MB} MB = {need:,.0f} MB"
    if options.memory_mb is None and not profile.memory.candidates(need):
        return Finding("memory", "Memory", "fail", round(peak, 1), profile.memory.highest, unit,
                       f"{headroom} needed, above the largest setting {profile.memory.highest:,} {unit}: "
                       "choose a smaller recipe", source)
    if memory < peak + HEADROOM_MB:
        # The fixed part of the headroom is not a margin: the platform's own runtime client, log shipping and
        # allocator overhead live in the same memory and are not in a measurement taken here.
        return Finding("memory", "Memory", "fail", round(peak, 1), memory, unit,
                       f"peak RSS {peak:,.0f} MB + {HEADROOM_MB} MB for the platform's runtime > {memory:,} {unit} "
                       f"memory: the function would run out of memory; use ≥ {math.ceil(need):,} {unit} "
                       "or a smaller recipe", source)
    if memory < need:
        return Finding("memory", "Memory", "warn", round(peak, 1), memory, unit,
                       f"peak RSS {peak:,.0f} MB fits {memory:,} {unit} but without headroom ({headroom}): "
                       "larger requests may run out of memory", source)
    return Finding("memory", "Memory", "pass", round(peak, 1), memory, unit,
                   f"{memory:,} {unit} holds {headroom}",
                   source)


def _init_time(profile: Profile, facts: DeploymentFacts, options: RuleOptions, memory: int,
               proj: Projection) -> Finding | None:
    limit = profile.limits.init_timeout
    if limit is None:
        return None
    cs = facts.cold_start
    limit_ms = limit.base()
    shown = (f"projected init {_ms(proj.init_ms)} at {memory:,} {profile.memory.unit} = (import "
             f"{_ms(cs.import_ms)} + load {_ms(cs.load_ms)} measured here) × {proj.formula}")
    if proj.init_ms > limit_ms:
        status: Status = "fail"
        reason = f"{shown} > {limit.display()} init limit"
        reason += f": {limit.advice}" if limit.advice else ""
    elif proj.init_ms > INIT_WARN_FRACTION * limit_ms:
        status = "warn"
        reason = f"{shown} is within 2× of the {limit.display()} init limit (an estimate)"
    else:
        status = "pass"
        reason = f"{shown} ≤ {limit.display()} init limit"
    return Finding("init-time", "Init time (estimate)", status, round(proj.init_ms, 1),
                   round(limit_ms, 1), "ms", reason, limit.source, estimate=True)


def _restore(profile: Profile, facts: DeploymentFacts, options: RuleOptions, memory: int,
             proj: Projection) -> Finding | None:
    """SnapStart: what init costs once per published version (the before-snapshot warm-up included) and
    what each restore must fit (the after-restore hook), on runtimes that snapshot (python3.12+)."""
    limit = profile.limits.restore_timeout
    cs = facts.cold_start
    if limit is None or cs.restore_hook_ms is None or tuple(int(p) for p in facts.python.split(".")) < (3, 12):
        return None
    restore = cs.restore_hook_ms * proj.factor
    snapshot = (cs.snapshot_hook_ms or 0.0) * proj.factor
    ok = restore <= limit.base()
    shown = (f"after-restore hook projected {_ms(restore)} per restore at {memory:,} {profile.memory.unit} "
             f"{'≤' if ok else '>'} {limit.display()} restore limit; once per published version, init "
             f"{_ms(proj.init_ms)} + the before-snapshot warm-up {_ms(snapshot)} run before the snapshot "
             f"(× {proj.formula})")
    return Finding("snapstart-restore", "SnapStart restore (estimate)", "pass" if ok else "fail",
                   round(restore, 3), round(limit.base(), 1), "ms",
                   shown + ("" if ok or not limit.advice else f": {limit.advice}"), limit.source, estimate=True)


def _cold_start(profile: Profile, facts: DeploymentFacts, options: RuleOptions, memory: int,
                proj: Projection) -> Finding | None:
    budget = options.max_cold_start_ms
    if budget is None:
        return None
    cs = facts.cold_start
    ok = proj.total_ms <= budget
    shown = (f"projected cold start {_ms(proj.total_ms)} at {memory:,} {profile.memory.unit} = "
             f"{_ms(cs.total_ms)} measured here × {proj.formula}")
    reason = (f"{shown} ≤ --max-cold-start {_ms(budget)}" if ok else
              f"{shown} > --max-cold-start {_ms(budget)}: raise --memory or choose a faster-loading recipe")
    return Finding("cold-start", "Cold start (estimate)", "pass" if ok else "fail", round(proj.total_ms, 1),
                   budget, "ms", reason, profile.cpu.source, estimate=True)


def _request_time(profile: Profile, facts: DeploymentFacts, options: RuleOptions, memory: int,
                  proj: Projection) -> Finding | None:
    limit = profile.limits.request_timeout
    worst = request_ms(proj, facts)
    if limit is None or worst is None:
        return None
    cs = facts.cold_start
    total = proj.init_ms + worst
    shown = (f"worst accepted request ({cs.worst_request}) projected {_ms(worst)} + init {_ms(proj.init_ms)} "
             f"at {memory:,} {profile.memory.unit} = {_ms(cs.worst_ms or 0)} measured here on {cs.cpus} CPU "
             f"× {proj.formula}")
    if total > limit.base():
        reason = f"{shown} > {limit.display()} longest timeout" + (f": {limit.advice}" if limit.advice else "")
        status: Status = "fail"
    elif TIMEOUT_SAFETY * total > limit.base():
        reason = f"{shown}, within {TIMEOUT_SAFETY:g}× of the {limit.display()} longest timeout (an estimate)"
        status = "warn"
    else:
        reason = f"{shown} ≤ {limit.display()} longest timeout; timeout to set: {timeout_s(profile, facts, proj)} s"
        status = "pass"
    return Finding("request-time", "Worst request time (estimate)", status, round(total, 1),
                   round(limit.base(), 1), "ms", reason, limit.source, estimate=True)


def _generation_speed(profile: Profile, facts: DeploymentFacts, options: RuleOptions, memory: int,
                      proj: Projection) -> Finding | None:
    cs = facts.cold_start
    speed = tokens_per_s(proj, facts)
    floor = options.min_tokens_per_s
    if speed is None or cs.tokens_per_s is None:
        if floor is None:
            return None
        return Finding("generation-speed", "Generation speed (estimate)", "fail", None, floor, "tokens/s",
                       "--min-tokens-per-s applies to text-generation models; this one generates no tokens")
    ttft = (cs.ttft_ms or 0.0) * proj.factor
    shown = (f"projected {speed:,.1f} tokens/s and time to first token {_ms(ttft)} at {memory:,} "
             f"{profile.memory.unit} from {cs.tokens_per_s:,.1f} tokens/s and {_ms(cs.ttft_ms or 0.0)} measured "
             f"here on {cs.cpus} CPU (a short prompt, greedy): tokens/s ÷, time × {proj.formula}")
    if floor is None:
        return Finding("generation-speed", "Generation speed (estimate)", "pass", round(speed, 2), None,
                       "tokens/s", shown, profile.cpu.source, estimate=True)
    ok = speed >= floor
    reason = (f"{shown} ≥ --min-tokens-per-s {floor:g}" if ok else
              f"{shown} < --min-tokens-per-s {floor:g}: raise --memory (up to a full vCPU) or choose a smaller "
              "recipe (int4-weight decodes from a quarter of the bytes)")
    return Finding("generation-speed", "Generation speed (estimate)", "pass" if ok else "fail", round(speed, 2),
                   floor, "tokens/s", reason, profile.cpu.source, estimate=True)


def _fidelity(profile: Profile, facts: DeploymentFacts, options: RuleOptions, memory: int,
              proj: Projection) -> Finding | None:
    floor = options.min_fidelity
    if floor is None:
        return None
    if facts.fidelity_mean is None:
        return Finding("fidelity", "Fidelity", "fail", None, floor, facts.fidelity_metric,
                       "no fidelity measurement in the manifest: run `slimserve optimize` to measure it")
    ok = facts.fidelity_mean >= floor
    worst = f", min {facts.fidelity_min:.4f}" if facts.fidelity_min is not None else ""
    reason = (f"mean {facts.fidelity_metric} {facts.fidelity_mean:.4f}{worst} {'≥' if ok else '<'} "
              f"--min-fidelity {floor}" + ("" if ok else ": choose a more faithful recipe"))
    return Finding("fidelity", "Fidelity", "pass" if ok else "fail", facts.fidelity_mean, floor,
                   facts.fidelity_metric, reason)


RULES: tuple[Rule, ...] = (_python, _arch, _zipped, _unzipped, _layers, _image, _memory, _init_time,
                           _restore, _cold_start, _request_time, _generation_speed, _fidelity)


def _size(value: float, unit: str) -> str:
    if value < 10:
        return f"{value:,.2f} {unit}"
    return f"{value:,.1f} {unit}" if value < 100 else f"{value:,.0f} {unit}"


def _ms(ms: float) -> str:
    return f"{ms / 1000:.2f} s" if ms >= 1000 else f"{ms:,.0f} ms"
