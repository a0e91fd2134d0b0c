"""int8 models built here must stay accurate on x86-64 CPUs without VNNI, and float-compute ones identical.

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


_OUTPUTS = textwrap.dedent("""
    import json, sys
    import numpy as np, onnxruntime as ort
    x = np.load(sys.argv[1])
    out = {}
    for path in sys.argv[2:]:
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        out[path] = sess.run(None, {"x": x})[0].tolist()
    print(json.dumps(out))
""")


def test_float_compute_recipes_are_the_same_on_every_cpu_and_integer_ones_stay_faithful(tmp_path: Path) -> None:
    """What the manifest's `fidelity.isa.depends_on_isa` claims: int8-resident at accuracy level 0 (float
    activations) and int8-weight give the same outputs on the emulated AVX2 CPU as here; int8-resident at
    level 4 and int8-dynamic (integer matmuls) may differ there, but stay close to the float32 graph."""
    import json

    import numpy as np
    import onnx

    from slimserve.optimizer import isa, step_options
    from slimserve.optimizer.steps import int8_dynamic, int8_weight
    from slimserve.optimizer.steps.base import StepContext
    from tests.conftest import build_tiny_onnx

    src = build_tiny_onnx(tmp_path / "tiny.onnx", hidden=256, out=8)
    builds = {
        "level0": (int8_weight.RESIDENT_SPEC, int8_weight.Int8ResidentOptions(cpu="x86-64-avx2")),
        "level4": (int8_weight.RESIDENT_SPEC, int8_weight.Int8ResidentOptions(cpu="x86-64-avx512-vnni")),
        "weight": (int8_weight.SPEC, int8_weight.Int8WeightOptions()),
        "dynamic": (int8_dynamic.SPEC, int8_dynamic.SPEC.options()),
    }
    paths, records = {}, {}
    for name, (spec, options) in builds.items():
        (tmp_path / name).mkdir()
        result = spec.run(src, tmp_path / f"{name}.onnx", StepContext(work_dir=tmp_path / name), options)
        paths[name] = result.path
        records[name] = {"step": spec.name, "options": step_options.as_dict(options), "details": result.details}
    x = np.random.default_rng(3).standard_normal((32, 256)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    args = ("-c", _OUTPUTS, str(tmp_path / "x.npy"), *map(str, paths.values()))
    native = subprocess.run([sys.executable, *args], capture_output=True, text=True, check=True).stdout
    emulated = _emulated(*args, timeout=600)
    assert emulated.returncode == 0, emulated.stderr[-2000:]
    here, there = json.loads(native), json.loads(emulated.stdout)

    inits = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(src)).graph.initializer}
    reference = np.maximum(x @ inits["w1"] + inits["b1"], 0) @ inits["w2"] + inits["b2"]
    for name, path in paths.items():
        a, b = np.asarray(here[str(path)]), np.asarray(there[str(path)])
        if name in ("level0", "weight"):  # float compute: only the float kernels' summation order differs
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * np.abs(a).max())
        assert np.abs(b - reference).max() / np.abs(reference).max() < 0.03, name
    # ...and the manifest's record says which of them depend on the CPU.
    assert [n for n in paths if isa.dependent_steps([records[n]])] == ["level4", "dynamic"]
