"""int8 models built here must stay accurate on x86-64 CPUs without VNNI.

onnxruntime's u8s8 kernels saturate on AVX2-only CPUs (VPMADDUBSW adds pairs of uint8 x int8 products
into int16), so a model that is exact on a VNNI build machine can be wrong where it is deployed. QEMU
user mode runs the same interpreter and onnxruntime wheel on an emulated Haswell (AVX2, no VNNI, no
AVX-512), where MLAS takes its AVX2 kernels: these tests rerun the quantization steps' accuracy tests
there, whatever CPU runs the suite.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AVX2_CPU = "Haswell"


def _emulated(*args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    qemu = shutil.which("qemu-x86_64")
    assert qemu, "qemu-user is needed to test int8 on a CPU without VNNI (make test installs it)"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([qemu, "-cpu", AVX2_CPU, sys.executable, *args], cwd=ROOT, env=env, check=False,
                          capture_output=True, text=True, timeout=timeout)


_SATURATION_PROBE = textwrap.dedent("""
    import numpy as np, onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    def matmul_integer(weight_dtype):
        w = numpy_helper.from_array(np.full((64, 16), 127, weight_dtype), "w")
        graph = helper.make_graph([helper.make_node("MatMulInteger", ["a", "w"], ["y"])], "g",
                                  [helper.make_tensor_value_info("a", TensorProto.UINT8, [None, 64])],
                                  [helper.make_tensor_value_info("y", TensorProto.INT32, [None, 16])], [w])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return int(sess.run(None, {"a": np.full((8, 64), 255, np.uint8)})[0][0, 0])
    print(matmul_integer(np.int8), matmul_integer(np.uint8), 255 * 127 * 64)
""")


def test_the_emulated_cpu_really_takes_the_saturating_kernels() -> None:
    """The control: without it, the test below could pass on an emulation that hides the problem."""
    result = _emulated("-c", _SATURATION_PROBE, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    u8s8, u8u8, exact = map(int, result.stdout.split())
    assert u8s8 < exact, "u8s8 did not saturate: the emulated CPU is not taking onnxruntime's AVX2 kernels"
    assert u8u8 == exact


def test_quantization_steps_hold_their_accuracy_on_a_cpu_without_vnni() -> None:
    """The same assertions (and tolerances) as on this machine, rerun on the emulated AVX2 CPU."""
    result = _emulated("-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_quant_steps.py",
                       "-k", "int8 or convnet or control")
    assert result.returncode == 0, result.stdout[-4000:]
    assert " passed" in result.stdout and "failed" not in result.stdout
