"""Each rule passing and failing on hand-built facts, the projection and the recommended memory."""

from __future__ import annotations

import dataclasses

import pytest

from slimserve.errors import SlimserveError
from slimserve.measure import ColdStart, PackageSize
from slimserve.profiles.loader import load_profile
from slimserve.profiles.rules import (
    RULE_ORDER,
    DeploymentFacts,
    Finding,
    PlatformVerdict,
    RuleOptions,
    evaluate,
    memory_needed_mb,
    project,
)

MiB = 1024**2


def facts(*, unzipped: int = 120 * MiB, zipped: int = 40 * MiB, parts: dict[str, int] | None = None,
          layers: int = 1, image: int | None = None, import_ms: float = 300, load_ms: float = 100,
          first_ms: float = 20, peak: float = 200, python: str = "3.12", arch: str = "x86_64",
          fidelity: float | None = 0.999) -> DeploymentFacts:
    pkg = PackageSize(unzipped_bytes=unzipped, zipped_bytes=zipped, parts=parts or {}, layers=layers,
                      image_bytes=image)
    cs = ColdStart(import_ms=import_ms, load_ms=load_ms, first_inference_ms=first_ms,
                   total_ms=import_ms + load_ms + first_ms, warm_ms=3, peak_rss_mb=peak, runs=3, python=python)
    return DeploymentFacts(package=pkg, cold_start=cs, python=python, arch=arch, fidelity_mean=fidelity,
                           fidelity_min=None if fidelity is None else fidelity - 0.002)


def check(platform: str, f: DeploymentFacts, **options: object) -> PlatformVerdict:
    return evaluate(load_profile(platform), f, RuleOptions(**options))  # type: ignore[arg-type]


def finding(v: PlatformVerdict, rule: str) -> Finding:
    found = [f for f in v.findings if f.id == rule]
    assert len(found) == 1, [f.id for f in v.findings]
    return found[0]


def test_python_version() -> None:
    assert finding(check("aws-lambda-zip", facts(python="3.12")), "python").status == "pass"
    v = check("vercel-python", facts(python="3.10"))
    f = finding(v, "python")
    assert f.status == "fail" and "3.10 is not offered by vercel-python (3.12–3.14)" in f.reason
    assert not v.fits


def test_architecture() -> None:
    assert finding(check("aws-lambda-zip", facts(arch="arm64")), "arch").status == "pass"
    f = finding(check("gcp-cloud-run", facts(arch="arm64")), "arch")
    assert f.status == "fail" and "--arch x86_64" in f.reason


def test_zipped_upload_over_50_mib_is_a_warning_per_archive() -> None:
    ok = finding(check("aws-lambda-zip", facts(parts={"layer.zip": 45 * MiB, "function.zip": 8 * MiB})),
                 "zipped-size")
    assert ok.status == "pass" and "layer.zip" in ok.reason
    v = check("aws-lambda-zip", facts(zipped=70 * MiB, parts={"layer.zip": 60 * MiB, "function.zip": 10 * MiB}))
    f = finding(v, "zipped-size")
    assert f.status == "warn" and "S3" in f.reason and f.measured == 60.0
    assert v.fits  # a warning does not stop the deploy


def test_zipped_sources_over_the_limit_fail_on_cloud_functions() -> None:
    assert finding(check("gcp-cloud-functions-gen1", facts(zipped=90_000_000)), "zipped-size").status == "pass"
    f = finding(check("gcp-cloud-functions-gen1", facts(zipped=120_000_000)), "zipped-size")
    assert f.status == "fail" and f.unit == "MB" and f.measured == 120.0 and f.limit == 100


def test_unzipped_limit_is_262_144_000_bytes_for_function_and_layers() -> None:
    at_limit = finding(check("aws-lambda-zip", facts(unzipped=262_144_000)), "unzipped-size")
    assert at_limit.status == "pass"
    v = check("aws-lambda-zip", facts(unzipped=301 * MiB))
    f = finding(v, "unzipped-size")
    assert f.status == "fail" and not v.fits
    assert f.reason.startswith("unzipped 301 MiB > 250 MiB limit for function + all layers: use the container")
    assert f.source.startswith("https://docs.aws.amazon.com/lambda/")
    assert finding(check("aws-lambda-zip", facts(unzipped=262_144_001)), "unzipped-size").status == "fail"


def test_oversized_zip_deployment_fits_the_container_platform() -> None:
    big = facts(unzipped=301 * MiB, zipped=110 * MiB)
    assert not check("aws-lambda-zip", big).fits
    v = check("aws-lambda-container", big)
    assert v.fits
    image = finding(v, "image-size")
    assert image.status == "pass" and image.estimate and "public.ecr.aws/lambda/python" in image.reason
    assert "unzipped-size" not in {f.id for f in v.findings}


def test_image_size_uses_the_measured_image_when_there_is_one() -> None:
    f = finding(check("aws-lambda-container", facts(image=11 * 1000**3)), "image-size")
    assert f.status == "fail" and not f.estimate and f.measured == 11.0


def test_layers() -> None:
    assert finding(check("aws-lambda-zip", facts(layers=5)), "layers").status == "pass"
    f = finding(check("aws-lambda-zip", facts(layers=6)), "layers")
    assert f.status == "fail" and "6 layers > 5 allowed" in f.reason


def test_memory_requested_too_small_fails_with_a_memory_reason() -> None:
    v = check("aws-lambda-zip", facts(peak=300), memory_mb=128)
    f = finding(v, "memory")
    assert f.status == "fail" and not v.fits and "run out of memory" in f.reason
    assert "use ≥ 514 MB" in f.reason  # 300 × 1.5 + 64
    assert v.memory_mb == 128


def test_memory_without_headroom_warns_and_with_headroom_passes() -> None:
    assert memory_needed_mb(300) == 514
    assert finding(check("aws-lambda-zip", facts(peak=300), memory_mb=400), "memory").status == "warn"
    # peak + the platform runtime's 64 MB does not fit: a failure, not a warning
    assert finding(check("aws-lambda-zip", facts(peak=300), memory_mb=320), "memory").status == "fail"
    assert finding(check("aws-lambda-zip", facts(peak=300), memory_mb=514), "memory").status == "pass"


def test_memory_outside_the_platform_range_is_bad_input() -> None:
    with pytest.raises(SlimserveError, match="not a memory setting of aws-lambda-zip"):
        check("aws-lambda-zip", facts(), memory_mb=64)
    with pytest.raises(SlimserveError, match="512 / 2,048 / 4,096"):
        check("azure-functions-flex", facts(), memory_mb=1024)


def test_recommended_memory_is_the_smallest_allowed_setting_with_headroom() -> None:
    v = check("aws-lambda-zip", facts(peak=200))  # needs 200 × 1.5 + 64 = 364 MB -> next multiple of 64
    assert v.recommended_memory_mb == 384 and v.memory_mb == 384 and v.fits
    assert check("azure-functions-flex", facts(peak=200)).recommended_memory_mb == 512
    assert check("azure-functions-flex", facts(peak=400)).recommended_memory_mb == 2048
    assert check("gcp-cloud-functions-gen1", facts(peak=700)).recommended_memory_mb == 2048


def test_no_setting_holds_a_huge_model() -> None:
    v = check("aws-lambda-zip", facts(peak=9_000))
    assert v.recommended_memory_mb is None and not v.fits
    f = finding(v, "memory")
    assert f.status == "fail" and "largest setting 10,240 MB" in f.reason


def test_projection_scales_by_cpu_share_and_never_speeds_up() -> None:
    lam = load_profile("aws-lambda-zip")
    f = facts(import_ms=300, load_ms=100, first_ms=20)
    p512 = project(lam, f, 512)
    assert p512.vcpus == pytest.approx(512 / 1769)
    assert p512.factor == pytest.approx(1769 / 512)
    assert p512.init_ms == pytest.approx(400 * 1769 / 512)
    assert p512.total_ms == pytest.approx(420 * 1769 / 512)
    assert "1 vCPU used here / 0.289 vCPU at 512 MB" in p512.formula
    assert project(lam, f, 3538).factor == 1.0  # 2 vCPUs there: not assumed faster than here


def test_init_time_against_the_10_s_lambda_init_phase() -> None:
    slow = facts(import_ms=1500, load_ms=500)  # 2 s here
    v = check("aws-lambda-zip", slow, memory_mb=128)  # × 1769/128 ≈ 13.8 -> ~27.6 s
    f = finding(v, "init-time")
    assert f.status == "fail" and f.estimate and "× max(1, 1 vCPU used here / " in f.reason and not v.fits
    assert finding(check("aws-lambda-zip", slow, memory_mb=1769), "init-time").status == "pass"
    assert finding(check("aws-lambda-zip", slow, memory_mb=512), "init-time").status == "warn"  # ~6.9 s
    # Without --memory the recommendation already respects the init limit (2 s × 1769/m ≤ 10 s).
    assert check("aws-lambda-zip", slow).recommended_memory_mb == 384


def test_max_cold_start_and_the_recommendation_that_meets_it() -> None:
    f = facts(import_ms=600, load_ms=300, first_ms=100, peak=150)  # 1 s total here
    v = check("aws-lambda-zip", f, max_cold_start_ms=2000)
    # needs ≥ 0.5 vCPU: memory ≥ 884.5 MB -> 896 (multiple of 64)
    assert v.recommended_memory_mb == 896
    assert finding(v, "cold-start").status == "pass"
    tight = check("aws-lambda-zip", f, memory_mb=512, max_cold_start_ms=2000)
    cs = finding(tight, "cold-start")
    assert cs.status == "fail" and "--max-cold-start 2.00 s" in cs.reason and cs.estimate
    impossible = check("aws-lambda-zip", f, max_cold_start_ms=500)
    assert impossible.recommended_memory_mb is None and impossible.memory_mb == 10_240
    assert finding(impossible, "cold-start").status == "fail"


def test_min_fidelity() -> None:
    assert finding(check("aws-lambda-zip", facts(fidelity=0.9991), min_fidelity=0.999), "fidelity").status == "pass"
    low = finding(check("aws-lambda-zip", facts(fidelity=0.96), min_fidelity=0.99), "fidelity")
    assert low.status == "fail" and "0.9600" in low.reason
    missing = finding(check("aws-lambda-zip", facts(fidelity=None), min_fidelity=0.99), "fidelity")
    assert missing.status == "fail" and "no fidelity" in missing.reason
    assert "fidelity" not in {x.id for x in check("aws-lambda-zip", facts()).findings}


def test_findings_come_in_rule_order_and_fits_means_no_failure() -> None:
    v = check("aws-lambda-zip", facts(), max_cold_start_ms=10_000, min_fidelity=0.9)
    ids = [f.id for f in v.findings]
    assert ids == sorted(ids, key=RULE_ORDER.index)
    assert ids == ["python", "arch", "zipped-size", "unzipped-size", "layers", "memory", "init-time", "cold-start", "fidelity"]
    assert v.fits and all(f.status == "pass" for f in v.findings)
    failing = dataclasses.replace(v, findings=v.findings + (dataclasses.replace(v.findings[0], status="fail"),))
    assert not failing.fits


def with_worst(f: DeploymentFacts, worst_ms: float, worst_peak: float) -> DeploymentFacts:
    cs = dataclasses.replace(f.cold_start, worst_ms=worst_ms, worst_peak_rss_mb=worst_peak,
                             worst_request="16 texts × 8,192 characters")
    return dataclasses.replace(f, cold_start=cs)


def test_memory_holds_the_worst_accepted_request_not_the_small_sample() -> None:
    small = check("aws-lambda-zip", facts(peak=200))
    worst = check("aws-lambda-zip", with_worst(facts(peak=200), worst_ms=800, worst_peak=800))
    assert small.recommended_memory_mb is not None and worst.recommended_memory_mb is not None
    assert worst.recommended_memory_mb >= memory_needed_mb(800) > small.recommended_memory_mb
    assert "worst accepted request" in finding(worst, "memory").reason
    assert finding(check("aws-lambda-zip", with_worst(facts(peak=200), 800, 800), memory_mb=512),
                   "memory").status == "fail"


def test_timeout_comes_from_the_projected_worst_request() -> None:
    f = with_worst(facts(import_ms=300, load_ms=100, peak=100), worst_ms=2000, worst_peak=300)
    v = check("aws-lambda-zip", f, memory_mb=1024)
    factor = 1769 / 1024  # 1 vCPU used here / 0.58 vCPU at 1,024 MB
    assert v.worst_request_ms == pytest.approx(2000 * factor)
    assert v.timeout_s == max(10, -(-3 * (400 + 2000) * factor // 1000))  # (init + worst) × 3, ceil, ≥ 10 s
    rule = finding(v, "request-time")
    assert rule.status == "pass" and rule.estimate and f"timeout to set: {v.timeout_s} s" in rule.reason
    assert check("aws-lambda-zip", facts(), memory_mb=1024).timeout_s is None  # nothing measured: no timeout
    fast = check("aws-lambda-zip", with_worst(facts(), worst_ms=100, worst_peak=250), memory_mb=1024)
    assert fast.timeout_s == 10


def test_a_worst_request_too_slow_for_any_timeout_fails_and_raises_the_recommendation() -> None:
    slow = with_worst(facts(peak=100), worst_ms=200_000, worst_peak=300)  # 200 s on one CPU here
    v = check("aws-lambda-zip", slow)
    # 3 × 200 s × 1,769 / memory must stay within Lambda's 900 s: at least 1,180 MB, the next 64 MB step
    assert v.recommended_memory_mb == 1216
    assert v.timeout_s is not None and 800 < v.timeout_s <= 900
    at_128 = check("aws-lambda-zip", slow, memory_mb=256)
    assert finding(at_128, "request-time").status == "fail" and "900 s" in finding(at_128, "request-time").reason


def test_python_lifecycle_warns_when_deprecated_and_fails_once_new_functions_are_refused() -> None:
    """Lambda's deprecation table (aws-lambda-zip's [runtime.lifecycle]): patched -> pass, deprecated ->
    warn with the dates and the way out, past the create-block date -> fail."""
    import datetime

    from slimserve.profiles.loader import load_profile
    from slimserve.profiles.rules import _lifecycle

    profile = load_profile("aws-lambda-zip")
    dates = profile.runtime.lifecycle["3.10"]
    assert (dates.deprecated, dates.create_block) == (datetime.date(2026, 10, 31), datetime.date(2027, 2, 1))
    assert _lifecycle(profile, "3.10", datetime.date(2026, 10, 30))[0] == "pass"
    status, reason = _lifecycle(profile, "3.10", datetime.date(2026, 11, 30))
    assert status == "warn" and "since 2026-10-31" in reason and "refused from 2027-02-01" in reason
    assert reason.endswith("pass --python 3.14")
    assert _lifecycle(profile, "3.10", datetime.date(2027, 2, 1))[0] == "fail"
    assert _lifecycle(profile, "3.12", datetime.date(2026, 11, 30)) == ("pass", "Python 3.12 is offered")


def test_snapstart_restore_budget_is_reported_for_python_3_12_and_later() -> None:
    """The after-restore hook measured in the probe, projected, against Lambda's 10 s restore limit; the
    once-per-version cost (init + the before-snapshot warm-up) said beside it; not on python3.11."""
    from dataclasses import replace

    from slimserve.profiles.loader import load_profile
    from slimserve.profiles.rules import RuleOptions, evaluate

    profile = load_profile("aws-lambda-zip")
    base = facts(python="3.12")
    timed = replace(base, cold_start=replace(base.cold_start, restore_hook_ms=0.5, snapshot_hook_ms=40.0))
    found = evaluate(profile, timed, RuleOptions()).finding("snapstart-restore")
    assert found is not None and found.status == "pass" and found.limit == 10_000
    assert "before-snapshot warm-up" in found.reason and found.estimate
    slow = replace(timed, cold_start=replace(timed.cold_start, restore_hook_ms=20_000.0))
    assert evaluate(profile, slow, RuleOptions()).finding("snapstart-restore").status == "fail"  # type: ignore[union-attr]
    assert evaluate(profile, replace(timed, python="3.11"), RuleOptions()).finding("snapstart-restore") is None
    assert evaluate(profile, base, RuleOptions()).finding("snapstart-restore") is None  # not measured
