"""Cold start and peak memory: the one implementation, run in fresh interpreters that see only the deployment.

Each run starts `pythonX.Y -I -S` (no user site, no site-packages, no PYTHON* variables, no cwd on the
path) whose `sys.path` is the deployable folders followed by the interpreter's own standard library.
A probe inside it times, with `time.perf_counter`:
  import_ms            import numpy + onnxruntime (+ tokenizers for text models, + Pillow for image
                       models): the layer's cost
  load_ms              import the handler module = Lambda's init phase (manifest, session, tokenizer)
  first_inference_ms   the first `handler(sample)` call
  warm_ms              median of `warm_runs` further calls
  worst_ms             one call with the largest request the handler's limits accept (`worst_event`)
  snapshot_hook_ms     SnapStart's before-snapshot hook (the manifest's warm-up request), after the first call
  restore_hook_ms      SnapStart's after-restore hook
  ttft_ms, tokens_per_s  text generation: the medians of the warm calls' time to first token and decode
                       tokens/s, as the handler's answers report them
and reads its peak RSS (before and after the worst request) (VmHWM from /proc/self/status; `ru_maxrss` only where that is missing, as Linux
carries ru_maxrss over from the parent across fork+exec). Figures are medians over `runs` processes. Interpreter
start-up itself is not included (Lambda's managed runtime has already started Python before the init phase).

The probe is pinned to `cpus` CPUs (1 by default), so onnxruntime sizes its thread pool as it would on a
one-vCPU function and the times are what `profiles.rules` projects onto the platform's CPU share.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from slimserve.errors import SlimserveError, ToolError
from slimserve.measure import ColdStart

# The probe runs `warm.py`'s own source first, so warm latency has one implementation in both processes.
_PROBE = (Path(__file__).with_name("warm.py").read_text(encoding="utf-8") + r"""
import json, os, resource, sys, time
sys.path[:0] = json.loads(sys.argv[1])
sample = json.loads(sys.argv[2])
warm_runs = int(sys.argv[3])
text = sys.argv[4] == "1"
image = sys.argv[4] == "image"
worst_file = sys.argv[5]
cpus = int(sys.argv[6])
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:cpus])
def peak_rss_mb():
    # VmHWM is this process's own peak. ru_maxrss is not: Linux carries it over from the parent across
    # fork+exec, so a child of a large process (e.g. `compare` after a PyTorch export) reports the parent's.
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t0 = time.perf_counter()
import numpy, onnxruntime
if text:
    import tokenizers
if image:
    import PIL.Image, PIL.ImageOps
t1 = time.perf_counter()
import lambda_handler
t2 = time.perf_counter()
first = lambda_handler.handler(sample, None)
t3 = time.perf_counter()
speed = []  # (time to first token, tokens/s) of each warm call of a generation model, from its answer
def call():
    answer = lambda_handler.handler(sample, None)
    details = answer[0].get("details") if isinstance(answer, list) and answer and isinstance(answer[0], dict) else None
    if isinstance(details, dict) and details.get("tokens_per_s"):
        speed.append((details["time_to_first_token_s"] * 1000, details["tokens_per_s"]))
warm_ms = warm_median_ms(call, warm_runs, warmup=0)
def median(values):
    values = sorted(values)
    return (values[(len(values) - 1) // 2] + values[len(values) // 2]) / 2 if values else None
error = first.get("error") if isinstance(first, dict) else None
s = time.perf_counter()  # SnapStart's before-snapshot hook (the manifest's warm-up) and after-restore hook
warm_up_ms = (time.perf_counter() - s) * 1000 if getattr(lambda_handler, "warm_up", lambda: False)() else None
s = time.perf_counter()
restored = getattr(lambda_handler, "after_restore", None)
if restored is not None:
    restored()
restore_ms = (time.perf_counter() - s) * 1000 if restored is not None else None
peak = peak_rss_mb()
worst_ms = worst_peak = worst_error = None
if worst_file and not error:
    with open(worst_file) as fh:
        worst = json.load(fh)
    s = time.perf_counter()
    answer = lambda_handler.handler(worst, None)
    worst_ms = (time.perf_counter() - s) * 1000
    worst_peak = peak_rss_mb()
    worst_error = answer.get("error") if isinstance(answer, dict) else None
print(json.dumps({"import_ms": (t1 - t0) * 1000, "load_ms": (t2 - t1) * 1000,
                  "first_inference_ms": (t3 - t2) * 1000,
                  "warm_ms": warm_ms,
                  "peak_rss_mb": peak, "worst_ms": worst_ms, "worst_peak_rss_mb": worst_peak,
                  "ttft_ms": median([s[0] for s in speed]), "tokens_per_s": median([s[1] for s in speed]),
                  "snapshot_hook_ms": warm_up_ms, "restore_hook_ms": restore_ms,
                  "error": error, "worst_error": worst_error}))
""")


def resolve_python(version: str) -> tuple[Path, str, str | None]:
    """(interpreter, its X.Y, why it is not the target or None): the target's python when installed."""
    from slimserve.packagers.interpreters import find_python

    found = find_python(version)
    if found is not None:
        return found, version, None
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    why = (f"python{version} is not installed here; measured with python{here} "
           f"(install it, e.g. `pyenv install {version}`, to measure the target)")
    return Path(sys.executable), here, why


def measure_cold_start(sys_path: list[Path], model_dir: Path, python: str, sample: dict[str, Any],
                       runs: int = 5, warm_runs: int = 20, *, text: bool | None = None,
                       executable: Path | None = None, fallback: str | None = None,
                       worst: WorstRequest | None = None, cpus: int = 1) -> ColdStart:
    """Medians over `runs` fresh `-I -S` interpreters whose path is exactly `sys_path` (+ stdlib).

    `sys_path` must hold `lambda_handler.py` and the runtime libraries; `model_dir` is the folder the
    handler loads (passed as SLIMSERVE_MODEL_DIR). `python` is the version ("3.12") to run; `executable`
    pins the interpreter (its version must be `python`); otherwise it is looked up, with a fallback.
    `worst` is run once per process after everything else; the handler must accept it.
    """
    if runs < 1:
        raise SlimserveError(f"cold start needs at least one run, got {runs}")
    if executable is not None:
        exe, version, why = Path(executable), python, fallback
    else:
        exe, version, why = resolve_python(python)
        why = why or fallback
    manifest_path = Path(model_dir) / "slimserve.json"
    kind = ""
    if text is None or manifest_path.is_file():
        kind = json.loads(manifest_path.read_text(encoding="utf-8"))["runtime"]["kind"]
    if text is None:
        text = kind == "text"
    libraries = "1" if text else ("image" if kind == "image" else "0")  # what the probe imports in import_ms
    paths = json.dumps([str(Path(p).absolute()) for p in sys_path])
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"),
           "LANG": "C.UTF-8", "SLIMSERVE_MODEL_DIR": str(Path(model_dir).absolute()),
           "OPENBLAS_NUM_THREADS": "1"}  # as the packaged function's environment sets it (sam_template)
    keys = ["import_ms", "load_ms", "first_inference_ms", "warm_ms", "peak_rss_mb"]
    keys += ["worst_ms", "worst_peak_rss_mb"] if worst is not None else []
    samples: dict[str, list[float]] = {k: [] for k in (*keys, "total_ms")}
    with tempfile.TemporaryDirectory(prefix="slimserve-cold-") as cwd:
        worst_file = ""
        if worst is not None:
            worst_file = str(Path(cwd) / "worst.json")
            Path(worst_file).write_text(json.dumps(worst.event), encoding="utf-8")
        for _ in range(runs):
            proc = subprocess.run(
                [str(exe), "-I", "-S", "-B", "-c", _PROBE, paths, json.dumps(sample), str(warm_runs),
                 libraries, worst_file, str(max(1, cpus))],
                capture_output=True, text=True, cwd=cwd, env=env, timeout=600, check=False)
            lines = proc.stdout.strip().splitlines()
            if proc.returncode != 0 or not lines:
                err = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
                raise ToolError(f"the deployed handler failed to start: {err[-1][:300] if err else 'no output'}",
                                hint="rerun with --debug; the runtime closure or the model files are incomplete")
            result = json.loads(lines[-1])
            if result.get("error"):
                raise ToolError(f"the deployed handler rejected the cold-start sample: {result['error']}")
            if result.get("worst_error") and worst is not None:
                raise ToolError(f"the deployed handler rejected the largest request its limits accept "
                                f"({worst.description}): {result['worst_error']}")
            for key in keys:
                samples[key].append(float(result[key]))
            for key in ("ttft_ms", "tokens_per_s", "snapshot_hook_ms", "restore_hook_ms"):
                if result.get(key) is not None:
                    samples.setdefault(key, []).append(float(result[key]))
            samples["total_ms"].append(result["import_ms"] + result["load_ms"] + result["first_inference_ms"])
    return from_samples(samples, python=version, fallback=why,
                        worst_request=worst.description if worst is not None else "", cpus=max(1, cpus))


def from_samples(samples: dict[str, list[float]], *, python: str, fallback: str | None, worst_request: str,
                 cpus: int) -> ColdStart:
    """The medians of per-process samples (key -> one value per fresh process)."""
    med = {k: statistics.median(v) for k, v in samples.items() if v}
    return ColdStart(import_ms=med["import_ms"], load_ms=med["load_ms"],
                     first_inference_ms=med["first_inference_ms"], total_ms=med["total_ms"],
                     warm_ms=med["warm_ms"], peak_rss_mb=med["peak_rss_mb"], runs=len(samples["total_ms"]),
                     python=python, fallback=fallback, samples=samples, worst_ms=med.get("worst_ms"),
                     worst_peak_rss_mb=med.get("worst_peak_rss_mb"), worst_request=worst_request, cpus=cpus,
                     ttft_ms=med.get("ttft_ms"), tokens_per_s=med.get("tokens_per_s"),
                     snapshot_hook_ms=med.get("snapshot_hook_ms"), restore_hook_ms=med.get("restore_hook_ms"))


def merge(parts: list[ColdStart]) -> ColdStart:
    """One measurement from several taken at different times (compare's interleaved rounds): the samples
    of every process together, and their medians."""
    if not parts:
        raise SlimserveError("nothing to merge: no cold-start measurement")
    samples: dict[str, list[float]] = {}
    for part in parts:
        for key, values in part.samples.items():
            samples.setdefault(key, []).extend(values)
    first = parts[0]
    return from_samples(samples, python=first.python, fallback=first.fallback, worst_request=first.worst_request,
                        cpus=first.cpus)


@dataclass(frozen=True)
class WorstRequest:
    """The largest request the handler's limits accept, as a direct-invocation event, and what it is."""

    event: dict[str, Any]
    description: str


# Varied words, digits and punctuation: every tokenizer makes well over one token per 8 characters of it.
_FILLER = ("Serverless inference bills per request, scales to zero and starts cold; "
           "a 2.9 GB spike at 03:14 UTC took /health down for 120 s. ")


def worst_event(manifest: dict[str, Any]) -> WorstRequest:
    """The most expensive request the shipped handler accepts under the manifest's limits.

    Text: as many texts as the token budget allows at the full sequence length (attention grows with
    length, so fewer long texts cost more than many short ones for the same tokens), each `max_chars`
    characters long (the most the tokenizer is asked to read). Tensors: as many rows as `max_batch` and
    `max_elements` allow, dynamic non-batch dimensions at 1, zeros.
    """
    from slimserve.optimizer.families.base import family_for, request_parameters
    from slimserve.runtime.model_runtime import RequestLimits

    runtime = manifest["runtime"]
    family = family_for(str(runtime.get("task", "")))
    if family is not None:
        family_inputs, description = family.worst_inputs(runtime, RequestLimits.from_spec(runtime, environ={}))
        parameters = request_parameters(family, runtime, "worst")
        return WorstRequest({"inputs": family_inputs, **({"parameters": parameters} if parameters else {})},
                            description)
    if runtime["kind"] == "text":
        limits = RequestLimits.from_spec(runtime, environ={})
        max_length = int(runtime.get("max_length") or 512)
        count = max(1, min(limits.max_batch, limits.max_tokens // max_length))
        text = (_FILLER * (limits.max_chars // len(_FILLER) + 1))[:limits.max_chars]
        return WorstRequest({"inputs": [text] * count},
                            f"{count} texts × {limits.max_chars:,} characters (≤ {max_length} tokens each, "
                            f"budget {limits.max_tokens:,} tokens)")
    specs = manifest["model"]["inputs"]
    shapes = [[d if isinstance(d, int) and d > 0 else 1 for d in (spec.get("shape") or [])] for spec in specs]
    fixed = [s[0] for s, spec in zip(shapes, specs) if spec.get("shape") and isinstance(spec["shape"][0], int)
             and spec["shape"][0] > 0]
    row = sum(math.prod(s[1:]) for s in shapes)
    all_fixed = all(isinstance(d, int) and d > 0 for spec in specs for d in (spec.get("shape") or [])[1:])
    limits = RequestLimits.from_spec(runtime, environ={}, row_elements=row if all_fixed else None)
    rows = fixed[0] if fixed else max(1, min(limits.max_batch, limits.max_elements // max(1, row)))
    inputs: dict[str, Any] = {}
    for spec, shape in zip(specs, shapes):
        value: Any = 0
        for dim in reversed([rows, *shape[1:]] if shape else []):
            value = [value] * dim
        inputs[spec["name"]] = value
    return WorstRequest({"inputs": inputs}, f"{rows} rows × {row:,} numbers")


def sample_event(manifest: dict[str, Any]) -> dict[str, Any]:
    """A representative direct-invocation event: one sentence, or one row of zeros per tensor input."""
    from slimserve.optimizer.families.base import family_for, request_parameters

    family = family_for(str(manifest["runtime"].get("task", "")))
    if family is not None:
        parameters = request_parameters(family, manifest["runtime"], "sample")
        return {"inputs": family.sample_inputs(manifest["runtime"]), **({"parameters": parameters} if parameters else {})}
    if manifest["runtime"]["kind"] == "text":
        return {"inputs": ["Serverless inference should start fast and stay small."]}
    inputs: dict[str, Any] = {}
    for spec in manifest["model"]["inputs"]:
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in spec.get("shape") or []]
        value: Any = 0
        for dim in reversed(shape):
            value = [value] * dim
        inputs[spec["name"]] = value
    return {"inputs": inputs}


def cold_start_for_bundle(bundle: Any, target: Any, runs: int = 5, warm_runs: int = 20, *,
                          worst: bool = True, cpus: int = 1) -> ColdStart:
    """Lay out the Lambda tree (opt/python = closure, task = function files) and measure it, including
    the worst accepted request unless `worst` is False.

    Without the target interpreter (or on another CPU architecture) it measures a closure built for
    the interpreter and architecture it can run, and says so in `fallback`.
    """
    from slimserve.packagers.closure import build_closure
    from slimserve.packagers.lambda_target import function_entries
    from slimserve.packagers.reproducible import write_tree

    exe, version, why = resolve_python(target.python)
    from slimserve.packagers.target import host_arch

    host = host_arch() if host_arch() == "arm64" else "x86_64"  # the builds a closure can have
    arch = target.arch
    if arch != host:
        why = (why + "; " if why else "") + f"{target.arch} cannot run here: measured the {host} build"
        arch = host
    measured = replace(target, python=version, arch=arch)  # the same numpy build
    closure = build_closure(measured, bundle.runtime_extra)
    with tempfile.TemporaryDirectory(prefix="slimserve-lambda-") as tmp:
        opt, task = Path(tmp) / "opt", Path(tmp) / "task"
        opt.mkdir()
        (opt / "python").symlink_to(closure, target_is_directory=True)
        write_tree(function_entries(bundle, measured), task)
        return measure_cold_start([task, opt / "python"], task / "model", version, sample_event(bundle.manifest.to_dict()),
                                  runs=runs, warm_runs=warm_runs, text=bundle.is_text, executable=exe,
                                  fallback=why, worst=worst_event(bundle.manifest.to_dict()) if worst else None, cpus=cpus)
