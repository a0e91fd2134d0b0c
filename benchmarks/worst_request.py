"""The worst request the packaged MiniLM handler accepts, run like Lambda, next to the template's settings.

1. `slimserve package MODEL --target lambda` (with its check): template.yaml gets MemorySize and Timeout.
2. Extract layer.zip to opt/ and function.zip to task/, and run in fresh `python3.X -I -S` processes that
   see only those: import the handler (init), then the largest request its limits accept (the same
   definition `check` uses, `measure.coldstart.worst_event`), reading VmHWM (peak RSS) afterwards.
   Pinned to one CPU (what the projection starts from) and unpinned (every CPU here).
3. For comparison, the same with the limits the handler had before issue 9 (64 texts × 20,000 characters,
   no token budget: SLIMSERVE_MAX_TOKENS=16384 lets 64 × 256 tokens through).

    python benchmarks/worst_request.py [--model OPTIMIZE_OUTPUT] [--runs 3] [--python 3.12]
Without --model it builds MiniLM int8 with `slimserve optimize` first. Prints Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from slimserve.measure.coldstart import worst_event
from slimserve.packagers.interpreters import find_python

_RUNNER = r"""
import json, os, sys, time
if sys.argv[3] == "1":
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:1])
sys.path[:0] = json.loads(sys.argv[1])
t0 = time.perf_counter()
import lambda_handler
t1 = time.perf_counter()
event = json.loads(open(sys.argv[2]).read())
s = time.perf_counter()
answer = lambda_handler.handler(event, None)
t2 = time.perf_counter()
with open("/proc/self/status") as fh:
    peak = next(int(line.split()[1]) / 1024 for line in fh if line.startswith("VmHWM:"))
print(json.dumps({"init_ms": (t1 - t0) * 1000, "request_ms": (t2 - s) * 1000, "peak_rss_mb": peak,
                  "error": answer.get("error") if isinstance(answer, dict) else None}))
"""


def slimserve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "slimserve", *args], capture_output=True, text=True, check=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})


def template_settings(text: str) -> tuple[int, int]:
    values = {line.split(":")[0].strip(): line.split(":")[1].strip() for line in text.splitlines() if ":" in line}
    return int(values["MemorySize"]), int(values["Timeout"])


def run(exe: Path, root: Path, event_file: Path, one_cpu: bool, env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run([str(exe), "-I", "-S", "-c", _RUNNER, json.dumps([str(root / "task"), str(root / "opt" / "python")]),
                           str(event_file), "1" if one_cpu else "0"], capture_output=True, text=True, timeout=900,
                          env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **env}, check=True)
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["error"]:
        raise SystemExit(f"the handler refused the request: {result['error']}")
    return result


def medians(results: list[dict[str, Any]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in results) for k in ("init_ms", "request_ms", "peak_rss_mb")}


def cpu_line() -> str:
    try:
        info = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or platform.machine()
    fields = {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in info.splitlines())}
    flags = set(fields.get("Flags", "").split())
    isa = ", ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags)
    return f"{fields.get('Model name', '?')}, {fields.get('CPU(s)', '?')} CPUs visible (shared), flags: {isa}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="an optimize output folder (default: MiniLM int8, built here)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--python", default="3.12")
    args = parser.parse_args()
    exe = find_python(args.python)
    if exe is None:
        raise SystemExit(f"python{args.python} is not installed (pyenv install {args.python})")
    with tempfile.TemporaryDirectory(prefix="slimserve-worst-") as tmp:
        work = Path(tmp)
        model = args.model
        if model is None:
            model = work / "minilm-int8"
            slimserve("optimize", "all-MiniLM-L6-v2", "-r", "int8", "-o", str(model))
        slimserve("package", str(model), "--target", "lambda", "-o", str(work / "pkg"), "--python", args.python)
        memory, timeout = template_settings((work / "pkg" / "template.yaml").read_text())
        manifest = json.loads((work / "pkg" / "slimserve.json").read_text())
        for name, dest in (("layer.zip", "opt"), ("function.zip", "task")):
            with zipfile.ZipFile(work / "pkg" / name) as zf:
                zf.extractall(work / dest)
        now = worst_event(manifest)
        before_manifest = {**manifest, "runtime": {**manifest["runtime"], "max_tokens": 16384, "max_chars": 20000}}
        before = worst_event(before_manifest)
        rows = []
        for label, worst, env in (("issue 9 limits", now, {}),
                                  ("before (no token budget)", before, {"SLIMSERVE_MAX_TOKENS": "16384",
                                                                        "SLIMSERVE_MAX_TEXT_CHARS": "20000"})):
            event_file = work / "event.json"
            event_file.write_text(json.dumps(worst.event))
            for one_cpu in (True, False):
                m = medians([run(exe, work, event_file, one_cpu, env) for _ in range(args.runs)])
                rows.append((label, worst.description, "1" if one_cpu else "all", m))
    vcpus = memory / 1769
    factor = max(1.0, 1 / vcpus)
    cold = ((manifest.get("package") or {}).get("checks") or {}).get("cold_start") or {}
    print(f"# Worst accepted request, packaged {Path(args.model or 'MiniLM int8').name} "
          f"(python{args.python}, {platform.machine()})\n")
    print(f"Command: `python benchmarks/worst_request.py{' --model ' + str(args.model) if args.model else ''} "
          f"--runs {args.runs} --python {args.python}`  ")
    print(f"CPU: {cpu_line()}  ")
    print(f"template.yaml: **MemorySize {memory} MB, Timeout {timeout} s** (from `check`: worst request "
          f"{cold.get('worst_ms', float('nan')):,.0f} ms, peak RSS {cold.get('worst_peak_rss_mb', float('nan')):,.0f} MB "
          f"on 1 CPU). At {memory} MB Lambda gives {vcpus:.2f} vCPU: one-CPU times × {factor:.2f}.\n")
    print("| limits | worst request | CPUs | init ms | request ms | peak RSS MB | projected init + request at "
          f"{memory} MB | fits MemorySize (peak + 64 MB)? | fits Timeout? |")
    print("|---|---|---|---:|---:|---:|---:|---|---|")
    for label, description, cpus, m in rows:
        projected = (m["init_ms"] + m["request_ms"]) * factor / 1000
        fits_memory = "yes" if m["peak_rss_mb"] + 64 <= memory else "**no**"
        fits_time = "yes" if projected <= timeout else "**no**"
        shown = f"{projected:.2f} s" if cpus == "1" else "—"
        print(f"| {label} | {description} | {cpus} | {m['init_ms']:,.0f} | {m['request_ms']:,.0f} | "
              f"{m['peak_rss_mb']:,.0f} | {shown} | {fits_memory} | {fits_time if cpus == '1' else '—'} |")
    print(f"\nMedians of {args.runs} fresh `-I -S` processes each; peak RSS is VmHWM after the request.")


if __name__ == "__main__":
    main()
