"""Small graphs with the structure of real foreign ONNX files that broke synthetic evaluation (issue 12).

- `detector`: a YOLO/PP-OCR-det-like neck: stride-2 convolutions, an upsample, a Concat of two scales.
  Only spatial sizes the strides divide run (a 1x1 image fails in Concat, like YOLOv8n did).
- `recurrent_vad`: a Silero-VAD-like step: audio samples [batch, samples] reflect-padded (needs length >= 65),
  a recurrent state [2, batch, 128] and a scalar int64 sample rate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _weight(name: str, shape: tuple[int, ...], seed: int) -> onnx.TensorProto:
    rng = np.random.default_rng(seed)
    return numpy_helper.from_array((rng.standard_normal(shape) * 0.2).astype(np.float32), name)


def detector(path: Path, channels: int = 8) -> Path:
    """images[N,3,H,W] -> preds[N, 2*channels, H/2, W/2]: conv s2 (a), conv s2 (b), upsample b x2, concat."""
    nodes = [
        helper.make_node("Conv", ["images", "w1"], ["a0"], strides=[2, 2], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["a0"], ["a"]),
        helper.make_node("Conv", ["a", "w2"], ["b0"], strides=[2, 2], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["b0"], ["b"]),
        helper.make_node("Resize", ["b", "", "scales"], ["up"], mode="nearest"),
        helper.make_node("Concat", ["a", "up"], ["cat"], axis=1),
        helper.make_node("Conv", ["cat", "w3"], ["preds"], kernel_shape=[1, 1]),
    ]
    inits = [_weight("w1", (channels, 3, 3, 3), 1), _weight("w2", (channels, channels, 3, 3), 2),
             _weight("w3", (2 * channels, 2 * channels, 1, 1), 3),
             numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")]
    graph = helper.make_graph(
        nodes, "detector",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info("preds", TensorProto.FLOAT, ["batch", 2 * channels, "h2", "w2"])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def recurrent_vad(path: Path, hidden: int = 128, frame: int = 256) -> Path:
    """input[batch, samples], state[2, batch, hidden], sr[] -> output[batch, 1], stateN[2, batch, hidden].

    The input is reflect-padded by 64 (shorter than 65 samples fails, like Silero's Pad did), its first
    `frame` samples projected by a MatMul (what int8 quantizes), scaled by sr / 16000, mixed into the state."""
    nodes = [
        helper.make_node("Pad", ["input", "pads"], ["padded"], mode="reflect"),
        helper.make_node("Slice", ["padded", "starts", "ends", "axes"], ["framed"]),
        helper.make_node("MatMul", ["framed", "w"], ["h0"]),
        helper.make_node("Cast", ["sr"], ["srf"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["srf", "k16000"], ["srs"]),
        helper.make_node("Mul", ["h0", "srs"], ["h"]),
        helper.make_node("Unsqueeze", ["h", "zero"], ["h3"]),
        helper.make_node("Add", ["state", "h3"], ["mixed"]),
        helper.make_node("Tanh", ["mixed"], ["stateN"]),
        helper.make_node("ReduceMean", ["stateN", "mean_axes"], ["pooled"], keepdims=0),
        helper.make_node("MatMul", ["pooled", "v"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["output"]),
    ]
    inits = [numpy_helper.from_array(np.array([0, 64, 0, 64], np.int64), "pads"),
             numpy_helper.from_array(np.array([0], np.int64), "starts"),
             numpy_helper.from_array(np.array([frame], np.int64), "ends"),
             numpy_helper.from_array(np.array([1], np.int64), "axes"),
             numpy_helper.from_array(np.array([0], np.int64), "zero"),
             numpy_helper.from_array(np.array([0, 2], np.int64), "mean_axes"),
             numpy_helper.from_array(np.array(16000.0, np.float32), "k16000"),
             _weight("w", (frame, hidden), 4), _weight("v", (1, 1), 5)]
    # pooled is [batch]: make it [batch, 1] for the last MatMul
    nodes.insert(10, helper.make_node("Unsqueeze", ["pooled", "one"], ["pooled2"]))
    nodes[11] = helper.make_node("MatMul", ["pooled2", "v"], ["logit"])
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "one"))
    graph = helper.make_graph(
        nodes, "vad",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", "samples"]),
         helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "batch", hidden]),
         helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 1]),
         helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [2, "batch", hidden])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def over_2gb(path: Path, count: int = 8, width: int = 8192) -> Path:
    """x[batch, width] -> a chain of `count` MatMuls with [width, width] float32 weights: 8 x 256 MiB = 2 GiB,
    one byte past what one protobuf can hold, stored as external data in `<name>.data`. The weights repeat
    one seeded random block (rolled per layer), so building is fast."""
    block = (np.random.default_rng(0).standard_normal((width, 256)) / np.sqrt(width)).astype(np.float32)
    nodes, inits = [], []
    current = "x"
    for i in range(count):
        weight = np.tile(np.roll(block, i, axis=0), (1, width // 256))
        tensor = numpy_helper.from_array(weight, f"w{i}")
        inits.append(tensor)
        nodes.append(helper.make_node("MatMul", [current, f"w{i}"], [f"h{i}"]))
        current = f"h{i}"
    nodes.append(helper.make_node("Identity", [current], ["y"]))
    graph = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=path.name + ".data", size_threshold=1024)
    return path


def opset11_convnet(path: Path) -> Path:
    """Conv+bias / Relu / Conv+bias / GlobalAveragePool / Gemm at opset 11, like PP-OCR's exports, whose
    biases carry the names of ORT's fusions ("ConvAddFusion_Add_B_..."): per-channel QDQ needs opset 13."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "ConvAddFusion_Add_B_1"], ["a"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["a"], ["b"]),
        helper.make_node("Conv", ["b", "w2", "ConvAddFusion_Add_B_2"], ["c"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c"], ["d"]),
        helper.make_node("GlobalAveragePool", ["d"], ["e"]),
        helper.make_node("Flatten", ["e"], ["f"]),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], transB=1),
    ]
    inits = [_weight("w1", (32, 3, 3, 3), 6), _weight("ConvAddFusion_Add_B_1", (32,), 7),
             _weight("w2", (64, 32, 3, 3), 8), _weight("ConvAddFusion_Add_B_2", (64,), 9),
             _weight("w3", (4, 64), 10), _weight("b3", (4,), 11)]
    graph = helper.make_graph(nodes, "cls", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 48, 192])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 6
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def control_flow(path: Path) -> Path:
    """x[n, 64] -> MatMul(w) -> If(sum > 0): then MatMul(h, w) ** 2, else h * 2: a weight read both by a
    top-level node and from inside a branch, and a Pow (kept float32 by fp16) inside a branch."""
    then_graph = helper.make_graph(
        [helper.make_node("MatMul", ["h", "w"], ["t0"]), helper.make_node("Pow", ["t0", "two"], ["t_out"])],
        "then", [], [helper.make_tensor_value_info("t_out", TensorProto.FLOAT, ["n", 64])])
    else_graph = helper.make_graph([helper.make_node("Mul", ["h", "two"], ["e_out"])], "else", [],
                                   [helper.make_tensor_value_info("e_out", TensorProto.FLOAT, ["n", 64])])
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
        helper.make_node("Greater", ["s", "zero"], ["cond"]),
        helper.make_node("If", ["cond"], ["y"], then_branch=then_graph, else_branch=else_graph),
    ]
    inits = [_weight("w", (64, 64), 12), numpy_helper.from_array(np.array(2.0, np.float32), "two"),
             numpy_helper.from_array(np.array(0.0, np.float32), "zero")]
    graph = helper.make_graph(nodes, "cf", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 64])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
