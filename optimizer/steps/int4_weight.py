"""Step `int4-weight`: 4-bit block-quantized weights (ORT MatMulNBits) and 4-bit embeddings.

What it writes (measured on all-MiniLM-L6-v2, benchmarks/results/quant_sweep.md):
- every MatMul with a constant 2-D weight becomes com.microsoft MatMulNBits, bits=4, block along K,
  with per-block scales (and zero points when asymmetric); blocks choose their clipping range by least
  squared error, which beats plain min/max rounding at 4 bits;
- the word-embedding table becomes com.microsoft GatherBlockQuantized (uint8 storage, bits=4, blocks
  along the row), so only looked-up rows are dequantized;
- the few MatMuls whose 4-bit error is largest on the calibration feeds (or, without calibration, by
  weight error) stay int8 in the folded int8-weight form, because they dominate the lost cosine.
Block size, symmetry, accuracy_level and the number kept at int8 are the measured choice in
`Int4Options`'s defaults; benchmarks/quant_sweep.py measures the alternatives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slimserve.errors import SlimserveError, ToolError, first_line
from slimserve.optimizer import graph_tools, int8_rewrites, matmul_analysis, nbits, onnx_io
from slimserve.optimizer.steps.base import Feed, StepContext, StepResult, StepSpec, option

STEP = "int4-weight"


@dataclass(frozen=True)
class Int4Options:
    """Knobs of the 4-bit recipe; defaults are the measured choice."""

    block: int = option(32, "MatMul weights per 4-bit block along K (a power of two >= 16)")
    symmetric: bool = option(False, "symmetric blocks (no zero points)")
    # 0: activations stay float inside MatMulNBits. 4 (int8 activations) was faster on short inputs but
    # ~35% slower than float32 at 256 tokens on this CPU, and slightly less faithful.
    accuracy_level: int = option(0, "MatMulNBits accuracy_level: 0 float activations, 4 int8 activations")
    search_clip: bool = option(True, "search each block's clipping range by least squared error")
    embeddings: bool = option(True, "4-bit embedding tables (GatherBlockQuantized); false: int8 rows")
    emb_block: int = option(32, "embedding values per 4-bit block")
    keep_int8: int = option(8, "the N most sensitive MatMuls stay int8 (at most a quarter of them)")
    activation_aware: bool = option(True, "weight the clip search by calibration input energy per feature")

    def __post_init__(self) -> None:
        if self.block < 16 or self.block & (self.block - 1):
            raise ValueError(f"block size {self.block} is not a power of two >= 16 (MatMulNBits needs that)")



def _dequantized_4bit(w: np.ndarray, opts: Int4Options, importance: np.ndarray | None) -> np.ndarray:
    """What MatMulNBits will compute with instead of `w` ([K, N])."""
    q, scale, zp = nbits.block_quantize(w, 4, opts.block, opts.symmetric, opts.search_clip, importance)
    zpf = np.full(scale.shape, 8.0) if zp is None else zp.astype(np.float32)
    deq = ((q.astype(np.float32) - zpf[..., None]) * scale[..., None]).reshape(w.shape[1], -1)
    return np.asarray(deq[:, : w.shape[0]].T)


def calibration_inputs(model_path: Path, feeds: Sequence[Feed]) -> dict[str, np.ndarray]:
    """Each constant-weight MatMul's input rows on (up to 8) calibration feeds, by node name."""
    weights = matmul_analysis.constant_matmul_weights(model_path)
    if not weights or not feeds:
        return {}
    xs = matmul_analysis.capture_inputs(model_path, list(weights), feeds[:8])
    return {name: xs[x] for name, (x, _) in weights.items() if x in xs}


def most_sensitive(
    model_path: Path, inputs: dict[str, np.ndarray], opts: Int4Options, count: int
) -> list[str]:
    """Names of the `count` MatMuls whose 4-bit output error ||XW - XWq|| / ||XW|| is largest.

    X comes from the calibration feeds; without them the weight error alone ranks the MatMuls.
    """
    if count <= 0:
        return []
    scores = {}
    for name, (_, w) in matmul_analysis.constant_matmul_weights(model_path).items():
        xs = inputs.get(name)
        imp = None if xs is None else (xs**2).mean(axis=0)
        deq = _dequantized_4bit(w, opts, imp)
        if xs is None:
            scores[name] = float(np.linalg.norm(deq - w)) / max(float(np.linalg.norm(w)), 1e-12)
            continue
        ref = xs @ w
        scores[name] = float(np.linalg.norm(xs @ deq - ref)) / max(float(np.linalg.norm(ref)), 1e-12)
    return sorted(scores, key=scores.get, reverse=True)[:count]  # type: ignore[arg-type]


def quantize(src: Path, dst: Path, ctx: StepContext, opts: Int4Options, step: str = STEP) -> StepResult:
    """4-bit weight-only quantization of `src` into `dst`."""
    prepared, notes = graph_tools.normalize_for_quant(Path(src), ctx.work_dir, step)
    inputs = calibration_inputs(prepared, ctx.calibration) if opts.activation_aware or opts.keep_int8 else {}
    keep = most_sensitive(prepared, inputs, opts, opts.keep_int8)
    # Never keep more than a quarter at int8, or small models would get no 4-bit MatMul at all.
    keep = keep[: len(matmul_analysis.constant_matmul_weights(prepared)) // 4]
    importance = {n: (x**2).mean(axis=0) for n, x in inputs.items()} if opts.activation_aware else None
    model = onnx_io.read_model(prepared, step)
    try:
        emb = nbits.replace_gathers_4bit(model, opts.emb_block, opts.symmetric, opts.search_clip) if opts.embeddings else []
        q4 = nbits.replace_matmuls_nbits(
            model,
            4,
            opts.block,
            opts.symmetric,
            opts.accuracy_level,
            search_clip=opts.search_clip,
            exclude=frozenset(keep),
            importance=importance,
        )
        # What 4 bits skipped (sensitive MatMuls, Gemm, Conv, small tables) gets the int8-weight treatment.
        n8 = int8_rewrites.quantize_linear_weights(model)
        n8 += int8_rewrites.quantize_embeddings(model, "gather-mul")
    except (ValueError, KeyError, IndexError) as exc:
        raise ToolError(f"{step}: cannot rewrite the weights of {Path(src).name}: {first_line(exc)}") from exc
    if not q4 and not emb:  # an "int4" model with no 4-bit weight would be a mislabelled int8-weight one
        raise SlimserveError(f"{step} does not apply to {Path(src).name}: it has no MatMul with a constant 2-D "
                             "weight and no embedding table, so nothing can become 4-bit (onnxruntime has no "
                             "4-bit convolution)",
                             hint="use int8-weight, int8-dynamic or int8-static for convolutional models")
    onnx_io.save_model(model, Path(dst), step)
    graph_tools.check_session(Path(dst), step)
    notes += (
        (
            f"4-bit MatMulNBits block {opts.block} ({'symmetric' if opts.symmetric else 'asymmetric'}, "
            f"accuracy_level {opts.accuracy_level}); {len(keep)} most sensitive MatMuls kept int8"
        ),
    )
    return StepResult(
        path=Path(dst),
        notes=notes,
        details={"matmul_4bit": len(q4), "embeddings_4bit": len(emb), "int8": n8, "kept_int8": keep},
    )


def run(src: Path, dst: Path, ctx: StepContext, options: Int4Options) -> StepResult:
    """4-bit weights (the measured defaults unless the recipe sets options)."""
    with ctx.progress.stage(f"{STEP}: 4-bit block-quantized weights"):
        return quantize(Path(src), Path(dst), ctx, options)


SPEC = StepSpec(
    name=STEP,
    help="4-bit block-quantized MatMul weights (MatMulNBits) and embeddings (GatherBlockQuantized); "
    "the most sensitive MatMuls stay int8.",
    run=run,
    options=Int4Options,
)
