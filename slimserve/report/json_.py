"""`--format json`: the machine-readable report.

Shape (stable keys first, extras after):
{"fits": bool,
 "platforms": {NAME: {"fits", "checks": [{"id", "name", "status", "measured", "limit", "unit", "reason",
                                          "source", "estimate"}], "recommended_memory_mb", ...extras}},
 "package": {"unzipped_bytes", "zipped_bytes", ...extras},
 "cold_start": {"import_ms", "load_ms", "first_inference_ms", "total_ms", "runs", ...extras},
 "peak_rss_mb": N, ...extras}
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any, TextIO

from slimserve import __version__
from slimserve.report import PROJECTION_NOTE, Report


def report_dict(report: Report) -> dict[str, Any]:
    cs = report.cold_start
    platforms: dict[str, Any] = {}
    for v in report.platforms:
        platforms[v.name] = {
            "fits": v.fits,
            "checks": [asdict(f) for f in v.findings],
            "recommended_memory_mb": v.recommended_memory_mb,
            "title": v.title,
            "memory_mb": v.memory_mb,
            "memory_note": v.memory_note,
            "projection": None if v.projection is None else {**asdict(v.projection), "estimate": True},
            "sources": list(v.sources),
        }
        if v.timeout_s is not None:  # only when the worst accepted request was measured
            platforms[v.name].update(worst_request_ms=v.worst_request_ms, recommended_timeout_s=v.timeout_s)
    pkg = report.package
    return {
        "fits": report.fits,
        "platforms": platforms,
        "package": {"unzipped_bytes": pkg.unzipped_bytes, "zipped_bytes": pkg.zipped_bytes,
                    "layers": pkg.layers, "parts": dict(sorted(pkg.parts.items())),
                    "unzipped_parts": dict(sorted(pkg.unzipped_parts.items())), "image_bytes": pkg.image_bytes},
        "cold_start": {"import_ms": cs.import_ms, "load_ms": cs.load_ms,
                       "first_inference_ms": cs.first_inference_ms, "total_ms": cs.total_ms, "runs": cs.runs,
                       "warm_ms": cs.warm_ms, "python": cs.python, "fallback": cs.fallback,
                       "measured_here": True,
                       **({"worst_ms": cs.worst_ms, "worst_peak_rss_mb": cs.worst_peak_rss_mb,
                           "worst_request": cs.worst_request, "cpus": cs.cpus} if cs.worst_ms is not None else {})},
        "peak_rss_mb": cs.max_rss_mb,
        "target": {"python": report.python, "arch": report.arch},
        "path": report.path,
        "model": dict(report.model),
        "projection_method": {"host_vcpus": report.host_vcpus, "formula": PROJECTION_NOTE},
        "slimserve": __version__,
    }


def render(report: Report, out: TextIO) -> None:
    json.dump(report_dict(report), out, indent=2, ensure_ascii=False)
    out.write("\n")
