"""`compare --format json` and compare.json: the machine-readable comparison.

Shape: {"schema", "model", "source", "eval", "target", "platforms", "recommendation": {"recipe", "why"} | null,
"recommendation_note", "frontier", "size_tolerance": {"pct", "mib"}, "candidates": [{"recipe", "folder", "frontier", "error", "bytes", "deploy",
"fidelity", "latency", "cold_start", "peak_rss_mb", "platforms": {NAME: {"fits", "reason", ...}}, "seconds"}],
"method", "plot", "machine", "versions"}. Candidates in the order the recipes were given.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, TextIO

from slimserve.report.comparison import SCHEMA_VERSION, CandidateResult, Comparison, platform_reason


def candidate_dict(c: CandidateResult, frontier: Sequence[str]) -> dict[str, Any]:
    fid, cs = c.fidelity, c.cold_start
    return {
        "recipe": c.recipe, "folder": c.folder, "frontier": c.recipe in frontier, "error": c.error,
        "bytes": c.model_bytes if fid is not None else None,
        "deploy": None if c.package is None else {
            "unzipped_bytes": c.package.unzipped_bytes, "zipped_bytes": c.package.zipped_bytes,
            "parts": dict(sorted(c.package.parts.items()))},
        "fidelity": None if fid is None else {k: v for k, v in asdict(fid).items() if v is not None},
        "latency": None if c.latency is None else {
            "batch1_ms": c.latency.batch1_ms, "batch8_ms": c.latency.batch8_ms, "load_ms": c.latency.load_ms,
            "batch_sizes": list(c.latency.batch_sizes),
            "runs": c.latency.runs, "threads": c.latency.threads, "statistic": "median",
            **({"rounds_batch1_ms": list(c.latency.rounds_ms)} if c.latency.rounds_ms else {})},
        "cold_start": None if cs is None else {
            "import_ms": round(cs.import_ms, 1), "load_ms": round(cs.load_ms, 1),
            "first_inference_ms": round(cs.first_inference_ms, 1), "total_ms": round(cs.total_ms, 1),
            "runs": cs.runs, "python": cs.python, "fallback": cs.fallback, "measured_here": True,
            **({"spread_ms": [round(min(cs.samples["total_ms"]), 1), round(max(cs.samples["total_ms"]), 1)]}
               if len(cs.samples.get("total_ms", [])) > 1 else {})},
        "peak_rss_mb": None if cs is None else round(cs.peak_rss_mb, 1),
        "platforms": {v.name: {"fits": v.fits, "reason": platform_reason(v), "memory_mb": v.memory_mb,
                               "recommended_memory_mb": v.recommended_memory_mb,
                               "failed": [f.id for f in v.findings if f.status == "fail"]}
                      for v in c.verdicts},
        "seconds": {"build": round(c.build_seconds, 2), "measure": round(c.measure_seconds, 2)},
    }


def comparison_dict(comparison: Comparison) -> dict[str, Any]:
    o = comparison.options
    return {
        "schema": SCHEMA_VERSION,
        "model": comparison.model,
        "source": dict(comparison.source),
        "eval": comparison.eval_source,
        "target": {"python": o.python, "arch": o.arch, "numpy": o.numpy, "memory_mb": o.memory_mb},
        "platforms": [p.name for p in comparison.platforms],
        "recommendation": None if comparison.recommendation is None else {
            "recipe": comparison.recommendation, "why": comparison.recommendation_reason},
        "recommendation_note": comparison.recommendation_reason,
        "frontier": list(comparison.frontier),
        "size_tolerance": {"pct": o.size_tolerance.pct, "mib": o.size_tolerance.mib},
        "candidates": [candidate_dict(c, comparison.frontier) for c in comparison.candidates],
        "method": {
            "cold_start": f"median of {o.runs} fresh `-I -S` interpreters that see only the Lambda layout "
                          "(layer + function), measured on this machine in interleaved rounds (each round "
                          "runs every candidate once, in a rotated order); spread_ms = lowest and highest",
            "latency": f"median of {o.latency_runs} warm calls in this process, 1 thread, batch 1 and 8, in "
                       "interleaved rounds like the cold start (rounds_batch1_ms: each round's median)",
            "deploy": "bytes of layer.zip + function.zip as `package` builds them (unzipped and zipped)",
            "frontier": "no other candidate is at least as small (unzipped deployment bytes) and at least as "
                        "faithful (mean fidelity), and better in one",
            "recommendation": "fits every platform above the fidelity floor; among those within the size "
                              "tolerance of the smallest deployment, the most faithful (worst sample, then mean)",
            "measuring": "one process at a time, candidates interleaved round by round; --jobs parallelises "
                         "only building candidates",
        },
        "plot": dict(comparison.plot),
        "machine": comparison.machine.as_dict(),
        "versions": dict(comparison.versions),
    }


def render(comparison: Comparison, out: TextIO) -> None:
    json.dump(comparison_dict(comparison), out, indent=2, ensure_ascii=False)
    out.write("\n")
