"""Cold start per stage, MiniLM: today's int8-dynamic handler vs after the levers vs the floor vs a naive layout.

Every configuration runs in fresh `python3.12 -I -S` processes that see only the unzipped function (the
handler, its runtime and the model folder, laid out by `lambda_target.function_entries`) and a layer (the
runtime closure `build_closure` ships, or the naive one), like `check`'s `cold_start_for_bundle`. Pinned to
one CPU. The rounds are interleaved (A B C ... then B C ... A, rotating) so the other jobs on this shared
machine hit every configuration alike; medians and ratios come from the same run.

Configurations:
  today          int8-dynamic as main shipped it before issue 14: the quantizer's graph (re-fused by
                 onnxruntime at every load), loaded at ORT_ENABLE_ALL, no OPENBLAS_NUM_THREADS
  after-level    the same recipe now: re-optimized offline, loaded at the level the manifest records
                 (basic); environment as today (isolates this lever)
  after          the same model with the packaged function's environment (OPENBLAS_NUM_THREADS=1) and the
                 handler's bytecode shipped (packagers/handler_code.py; today and after-level compile it)
  default        the recipe `build` picks by default (`int8`), as optimize writes it now, packaged env
  naive          the `default` model and handler on a layer made by a plain
                 `pip install --target` of onnxruntime, numpy and tokenizers (same versions, from the
                 wheels the closure uses; pip pulls their dependencies), no environment
  floor          interpreter start + reading `today`'s model files (already in the page cache)

Then warm latency of today and after in this process (interleaved calls).

Stages, each as process CPU time (getrusage RUSAGE_SELF user+sys) and wall time: interpreter start (CPU the
process used before its first line; wall from spawn), import numpy / onnxruntime / tokenizers, session
creation and tokenizer load (timed around onnxruntime.InferenceSession and Tokenizer.from_file inside the
handler's init), the rest of the init (manifest, runtime modules), first inference. Total CPU is the
child's rusage at exit (os.wait4); total wall is spawn to exit. "To the first answer" is the process's CPU
(and wall time since spawn) when the first answer is ready: what a Lambda cold start costs, since the
sandbox never waits for the interpreter's exit, which costs every configuration some 40 ms of teardown
here (freeing the session and numpy, module finalization). Peak RSS is VmHWM.

    .venv/bin/python benchmarks/coldstart_levers.py [--rounds 9] [--out benchmarks/results/coldstart_levers.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slimserve.measure.coldstart import sample_event
from slimserve.packagers.interpreters import find_python

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "work" / "coldstart_levers"

# Runs in the fresh interpreter. argv: config json. Prints one JSON line of stage times.
_PROBE = r"""
import time, resource
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return (r.ru_utime + r.ru_stime) * 1000
start_cpu, start_wall, start_pc = cpu(), time.time(), time.perf_counter()
import json, os, sys
cfg = json.loads(sys.argv[1])
os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:1])
sys.path[:0] = cfg["path"]
out = {"interpreter_cpu": start_cpu, "spawn_to_first_line_wall": (start_wall - cfg["spawned"]) * 1000}
marks = [(cpu(), time.perf_counter())]
def mark(name):
    c, w = cpu(), time.perf_counter()
    out[name + "_cpu"] = c - marks[-1][0]
    out[name + "_wall"] = (w - marks[-1][1]) * 1000
    marks.append((c, w))
if cfg["mode"] == "floor":
    for name in cfg["weights"]:  # model.onnx and its external data, as the package ships them
        with open(name, "rb") as fh:
            data = fh.read()
    mark("read_weights")
else:
    import numpy
    mark("import_numpy")
    import onnxruntime
    mark("import_onnxruntime")
    import tokenizers
    mark("import_tokenizers")
    timed = {"session_cpu": 0.0, "session_wall": 0.0, "tokenizer_cpu": 0.0, "tokenizer_wall": 0.0}
    Session, Tok = onnxruntime.InferenceSession, tokenizers.Tokenizer
    class TimedSession(Session):
        def __init__(self, *a, **k):
            c, w = cpu(), time.perf_counter()
            super().__init__(*a, **k)
            timed["session_cpu"] += cpu() - c
            timed["session_wall"] += (time.perf_counter() - w) * 1000
    class TimedTok:
        @staticmethod
        def from_file(*a, **k):
            c, w = cpu(), time.perf_counter()
            t = Tok.from_file(*a, **k)
            timed["tokenizer_cpu"] += cpu() - c
            timed["tokenizer_wall"] += (time.perf_counter() - w) * 1000
            return t
    onnxruntime.InferenceSession, tokenizers.Tokenizer = TimedSession, TimedTok
    import lambda_handler
    mark("init")
    out.update(timed)
    out["init_other_cpu"] = out.pop("init_cpu") - timed["session_cpu"] - timed["tokenizer_cpu"]
    out["init_other_wall"] = out.pop("init_wall") - timed["session_wall"] - timed["tokenizer_wall"]
    answer = lambda_handler.handler(cfg["sample"], None)
    mark("first_inference")
    out["embedding"] = answer["embeddings"][0]
    level = lambda_handler.MODEL.session.get_session_options().graph_optimization_level
    out["load_level"] = str(level).rsplit(".", 1)[-1]
out["answer_cpu"] = marks[-1][0]  # the process's CPU from its start to the first answer (or the weights read)
out["answer_wall"] = (time.time() - cfg["spawned"]) * 1000
with open("/proc/self/status") as fh:
    out["peak_rss_mb"] = next(int(l.split()[1]) / 1024 for l in fh if l.startswith("VmHWM:"))
print(json.dumps(out))
"""

READING = "## Reading (written after the run above)"
STAGES = [  # (label, key) in table order
    ("interpreter start", "interpreter"),
    ("import numpy", "import_numpy"),
    ("import onnxruntime", "import_onnxruntime"),
    ("import tokenizers", "import_tokenizers"),
    ("InferenceSession creation", "session"),
    ("tokenizer load", "tokenizer"),
    ("rest of init (manifest, runtime)", "init_other"),
    ("first inference", "first_inference"),
    ("read weights (page cache)", "read_weights"),
]


def build_models(work: Path) -> dict[str, Path]:
    """today / after / default optimize outputs for MiniLM (built once, kept in `work`)."""
    from slimserve.atomic import atomic_dir
    from slimserve.optimizer import optimize
    from slimserve.optimizer.recipes import DEFAULT_RECIPE
    from slimserve.optimizer.sources import packaged_model_dir, resolve_source
    from slimserve.optimizer.steps import graph_opt

    out = {name: work / name for name in ("today", "after", "default")}
    if all((p / "slimserve.json").is_file() for p in out.values()):
        return out
    folder = packaged_model_dir("all-MiniLM-L6-v2")
    assert folder is not None
    prepared = optimize.prepare(resolve_source(str(folder)), work / "prepare")
    real = graph_opt.preoptimize
    try:  # today: the step's file as it was shipped (no offline re-optimization, no session key)
        graph_opt.preoptimize = lambda src, *args, **kwargs: (Path(src), None, ())
        with atomic_dir(out["today"]) as staging:
            optimize.make_candidate(prepared, "int8-dynamic", staging)
    finally:
        graph_opt.preoptimize = real
    for name, recipe in (("after", "int8-dynamic"), ("default", DEFAULT_RECIPE)):
        with atomic_dir(out[name]) as staging:
            optimize.make_candidate(prepared, recipe, staging)
    return out


def lay_out(model: Path, dest: Path, bytecode: bool = True) -> Path:
    """The unzipped function.zip: handler + runtime + model/ exactly as the Lambda packager lists them
    (with the handler's python3.12 bytecode, or, for today's layout, without it as before)."""
    from slimserve.bundle import load_bundle
    from slimserve.packagers.lambda_target import function_entries
    from slimserve.packagers.reproducible import write_tree
    from slimserve.packagers.target import Target

    if dest.exists():
        shutil.rmtree(dest)
    return write_tree(function_entries(load_bundle(model), Target("3.12") if bytecode else None), dest)


def naive_layer(python: Path, dest: Path) -> Path:
    """`pip install --target` of the closure's pinned versions, plainly (dependencies, bytecode as pip does)."""
    from slimserve.packagers.closure import wheel_cache
    from slimserve.packagers.target import Target
    from slimserve.packagers.wheels import read_pins

    if (dest / "onnxruntime").is_dir():
        return dest
    target = Target(python="3.12", arch="x86_64")
    pins = [f"{p.name}=={p.version}" for p in read_pins(target, "text")]
    links = wheel_cache() / f"py3.12-{target.arch}"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--target", str(dest), "--find-links", str(links),
                    *pins], check=True)
    return dest


def run_once(python: Path, cfg: dict[str, Any], env: dict[str, str], cwd: Path) -> dict[str, float]:
    cfg = {**cfg, "spawned": time.time()}
    started = time.perf_counter()
    proc = subprocess.Popen([str(python), "-I", "-S", "-B", "-c", _PROBE, json.dumps(cfg)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=cwd)
    stdout, stderr = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(proc.pid, 0)
    wall = (time.perf_counter() - started) * 1000
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(stderr.decode()[-2000:])
    result: dict[str, Any] = json.loads(stdout.decode().strip().splitlines()[-1])
    result["total_cpu"] = (usage.ru_utime + usage.ru_stime) * 1000
    result["total_wall"] = wall
    return result


def cpu_facts() -> tuple[str, bool]:
    text = Path("/proc/cpuinfo").read_text()
    name = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), "?")
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
    return name, "avx512_vnni" in flags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    python = find_python("3.12")
    assert python is not None, "python3.12 is needed (pyenv install 3.12)"
    from slimserve.packagers.closure import build_closure
    from slimserve.packagers.target import Target

    WORK.mkdir(parents=True, exist_ok=True)
    models = build_models(WORK / "models")
    closure = build_closure(Target(python="3.12", arch="x86_64"), "text")
    naive = naive_layer(python, WORK / "naive")
    funcs = {name: lay_out(path, WORK / "task" / name, bytecode=name != "today") for name, path in models.items()}
    funcs["after-level"] = lay_out(models["after"], WORK / "task" / "after-level", bytecode=False)
    sample = sample_event(json.loads((models["today"] / "slimserve.json").read_text()))
    base_env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8"}
    packaged_env = {**base_env, "OPENBLAS_NUM_THREADS": "1"}
    configs: dict[str, tuple[dict[str, Any], dict[str, str]]] = {
        "today": ({"mode": "handler", "path": [str(funcs["today"]), str(closure)]}, base_env),
        "after-level": ({"mode": "handler", "path": [str(funcs["after-level"]), str(closure)]}, base_env),
        "after": ({"mode": "handler", "path": [str(funcs["after"]), str(closure)]}, packaged_env),
        "default": ({"mode": "handler", "path": [str(funcs["default"]), str(closure)]}, packaged_env),
        "naive": ({"mode": "handler", "path": [str(funcs["default"]), str(naive)]}, base_env),
        "floor": ({"mode": "floor", "path": [], "weights": [str(p) for p in sorted((funcs["today"] / "model").glob("model.onnx*"))]},
                  base_env),
    }
    names = list(configs)
    samples: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    cwd = WORK / "cwd"
    cwd.mkdir(exist_ok=True)
    for name in names:  # one untimed run each: page cache warm for every configuration alike
        run_once(python, {**configs[name][0], "sample": sample}, configs[name][1], cwd)
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            cfg, env = configs[name]
            samples[name].append(run_once(python, {**cfg, "sample": sample}, env, cwd))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    warm = warm_latency(models)
    report = render(samples, models, funcs, args.rounds, naive) + "\n" + warm
    print(report)
    if args.out:
        # the analysis written by hand after a run stays (its numbers name the run they came from)
        previous = args.out.read_text(encoding="utf-8") if args.out.is_file() else ""
        reading = previous[previous.find(READING):] if READING in previous else ""
        args.out.write_text(report + ("\n" + reading if reading else ""), encoding="utf-8")


def warm_latency(models: dict[str, Path], runs: int = 200) -> str:
    """Warm latency of today's and after's model in this process (one thread, interleaved calls): the
    re-optimized file must run the same graph, so as fast."""
    from slimserve.runtime.model_runtime import LoadedModel

    loaded = {name: LoadedModel(models[name], threads=1) for name in ("today", "after")}
    lines = ["## warm latency (this process, 1 thread, interleaved, median ms)", "", "| request | today | after |",
             "|---|---:|---:|"]
    for label, texts in (("1 text", ["Serverless inference should start fast and stay small."]),
                         ("8 texts", [("Serverless inference should start fast and stay small, and this sentence "
                                      "is a little longer.")] * 8)):
        times: dict[str, list[float]] = {name: [] for name in loaded}
        for _ in range(runs):
            for name, model in loaded.items():
                started = time.perf_counter()
                model.predict(texts)
                times[name].append((time.perf_counter() - started) * 1000)
        lines.append(f"| {label} | {statistics.median(times['today']):.2f} | {statistics.median(times['after']):.2f} |")
    return "\n".join(lines) + "\n"


def med(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [float(r[key]) for r in rows if key in r]
    return statistics.median(values) if values else None


def render(samples: dict[str, list[dict[str, Any]]], models: dict[str, Path], funcs: dict[str, Path], rounds: int,
           naive: Path) -> str:
    name, vnni = cpu_facts()
    cols = list(samples)
    fmt: Callable[[float | None], str] = lambda v: "" if v is None else f"{v:.0f}"
    lines = [
        "# Cold start per stage: MiniLM int8-dynamic today vs after, the floor, and a naive layout",
        "",
        ("Command: `.venv/bin/python benchmarks/coldstart_levers.py --rounds "
        f"{rounds} --out benchmarks/results/coldstart_levers.md`"),
        "",
        (f"CPU: {name} ({os.cpu_count()} vCPUs, avx512_vnni {'present' if vnni else 'absent'}), "
        f"Python {platform.python_version()} host / python3.12 probes pinned to 1 CPU; {rounds} interleaved rounds "
        "(rotating order), medians. Machine shared with other jobs: compare ratios, not absolute times."),
        "",
    ]
    for unit, suffix in (("process CPU time, ms", "_cpu"), ("wall time, ms", "_wall")):
        lines += [f"## {unit}", "", "| stage | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
        for label, key in STAGES:
            k = "interpreter_cpu" if key == "interpreter" and suffix == "_cpu" else (
                "spawn_to_first_line_wall" if key == "interpreter" else key + suffix)
            row = [fmt(med(samples[c], k)) for c in cols]
            if any(row):
                lines.append(f"| {label} | " + " | ".join(row) + " |")
        answers = [med(samples[c], "answer" + suffix) for c in cols]
        lines.append("| **to the first answer** | " + " | ".join(f"**{fmt(t)}**" for t in answers) + " |")
        totals = [med(samples[c], "total" + suffix) for c in cols]
        lines.append("| **total** (to exit) | " + " | ".join(f"**{fmt(t)}**" for t in totals) + " |")
        spread = [f"{min(r['total' + suffix] for r in samples[c]):.0f}–{max(r['total' + suffix] for r in samples[c]):.0f}"
                  for c in cols]
        lines.append("| total min–max | " + " | ".join(spread) + " |")
        lines.append("")
    rss = [med(samples[c], "peak_rss_mb") for c in cols]
    lines += ["## memory and files", "", "| | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols),
              "| peak RSS, MB | " + " | ".join(f"{v:.1f}" if v is not None else "" for v in rss) + " |"]
    sizes = {"today": models["today"], "after-level": models["after"], "after": models["after"],
             "default": models["default"], "naive": models["default"], "floor": models["today"]}
    lines.append("| model.onnx, MB | " + " | ".join(f"{(sizes[c] / 'model.onnx').stat().st_size / 1e6:.1f}"
                                                   for c in cols) + " |")
    levels = [samples[c][0].get("load_level", "") for c in cols]
    lines.append("| load level | " + " | ".join(levels) + " |")
    naive_mb = sum(f.stat().st_size for f in naive.rglob("*") if f.is_file()) / 1e6
    lines.append("| layer, MB unzipped | " + " | ".join(
        f"{naive_mb:.0f} (pip)" if c == "naive" else ("" if c == "floor" else "closure") for c in cols) + " |")
    lines.append("")

    def ratio(a: str, b: str, key: str) -> str:
        x, y = med(samples[a], key), med(samples[b], key)
        return f"{x / y:.2f}×" if x is not None and y else "n/a"

    lines += ["## ratios (same run)", "",
              "| | CPU to the first answer | total CPU | total wall | session creation CPU | peak RSS |",
              "|---|---:|---:|---:|---:|---:|"]
    for a, b in (("after-level", "today"), ("after", "today"), ("default", "today"), ("default", "naive"),
                 ("today", "floor"), ("after", "floor")):
        lines.append(f"| {a} / {b} | {ratio(a, b, 'answer_cpu')} | {ratio(a, b, 'total_cpu')} | "
                     f"{ratio(a, b, 'total_wall')} | "
                     f"{ratio(a, b, 'session_cpu') if b != 'floor' else ''} | {ratio(a, b, 'peak_rss_mb')} |")
    ref = samples["today"][0]["embedding"]
    diff = max(abs(x - y) for c in ("after-level", "after") for x, y in zip(samples[c][0]["embedding"], ref, strict=True))
    lines += ["", (f"First-inference embedding, after vs today: max |difference| {diff:.1e} (384 values; "
              "the fused graph is the one the handler built at load, now built offline)."), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
