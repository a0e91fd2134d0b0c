"""One MatMul, float32 vs MatMulNBits 8-bit and 4-bit at accuracy levels 0 and 4, at 1 row and 64 rows.

    .venv/bin/python benchmarks/matmulnbits_decode.py [K N ...]    (default: Qwen2.5-0.5B's MLP and LM head)

Why it exists: token-by-token decode runs every MatMul on one row. onnxruntime 1.32 has no float-activation
(accuracy level 0) kernel for 8-bit MatMulNBits and dequantizes the whole weight at every call, so
int8-resident at level 0 decoded a 0.5 B model at 1.5 tokens/s (benchmarks/results/generation_lm.md).
Weights are random (normal, 0.02), quantized by slimserve's own `nbits.replace_matmuls_nbits` (block 32;
8-bit symmetric as int8-resident writes it, 4-bit asymmetric as int4-weight does); 2 intra-op threads;
median of 10 calls after one warm-up. Nothing here is a test.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VARIANTS = (("float32", None, None), ("8-bit level 0", 8, 0), ("8-bit level 4", 8, 4),
            ("4-bit level 0", 4, 0), ("4-bit level 4", 4, 4))


def timings(k: int, n: int, rows: tuple[int, ...] = (1, 64)) -> dict[tuple[str, int], float]:
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from slimserve.optimizer import nbits

    rng = np.random.default_rng(0)
    weight = (rng.standard_normal((k, n)) * 0.02).astype(np.float32)
    out: dict[tuple[str, int], float] = {}
    for name, bits, level in VARIANTS:
        graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")], "g",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "m", k])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                                  [numpy_helper.from_array(weight, "W")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        if bits is not None and level is not None:
            nbits.replace_matmuls_nbits(model, bits, 32, bits == 8, level)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        for m in rows:
            x = rng.standard_normal((1, m, k)).astype(np.float32)
            session.run(None, {"x": x})
            calls = []
            for _ in range(10):
                started = time.perf_counter()
                session.run(None, {"x": x})
                calls.append(time.perf_counter() - started)
            out[(name, m)] = float(np.median(calls)) * 1000
    return out


def main() -> None:
    args = [int(a) for a in sys.argv[1:]] or [896, 4864, 896, 151936]
    print("| K x N | rows | " + " | ".join(name for name, _, _ in VARIANTS) + " |")
    print("|---|---:|" + "---:|" * len(VARIANTS))
    for k, n in zip(args[::2], args[1::2]):
        result = timings(k, n)
        for m in (1, 64):
            print(f"| {k} x {n} | {m} | " + " | ".join(f"{result[(name, m)]:.2f} ms" for name, _, _ in VARIANTS) + " |")


if __name__ == "__main__":
    main()
