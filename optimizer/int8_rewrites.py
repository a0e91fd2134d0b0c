"""int8 weight rewrites: MatMul/Gemm/Conv weights and embedding tables stored as int8 with scales, rebuilt
by plain ONNX (or com.microsoft) ops. The measured reasons for each form are in steps/int8_weight.py;
int8-dynamic, int8-static and int4-weight use these rewrites for the weights they leave float."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np

from slimserve.optimizer.weight_graph import (
    MIN_ELEMENTS,
    WeightGraph,
    drop_initializers,
    ensure_ms_domain,
    opset_of,
    prepend_nodes,
    symmetric_int8,
)

if TYPE_CHECKING:
    import onnx

MatMulMode = Literal["fold", "dq", "nbits", "castmul", "none"]
EmbeddingMode = Literal["gather-mul", "gbq", "dq", "none"]


def _weight_axis(node: onnx.NodeProto, rank: int) -> int | None:
    """The output-channel axis of the weight input of `node`, or None if it is not a weight input."""
    if node.op_type == "MatMul":
        return 1 if rank == 2 else None
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    if node.op_type == "Conv":
        return 0
    return None


def _dequantized(
    g: WeightGraph,
    name: str,
    w: np.ndarray,
    axis: int,
    matmul: MatMulMode,
    block: int,
    opset: int,
    reduce_axis: int | None,
) -> list[onnx.NodeProto]:
    """Nodes + initializers that rebuild float `name` from int8; returns the new nodes."""
    from onnx import helper, numpy_helper

    if matmul == "dq" and opset >= 13:
        q, scale = symmetric_int8(w, axis)
        q_name, s_name = g.fresh(name + "_i8"), g.fresh(name + "_scale")
        g.graph.initializer.extend(
            [numpy_helper.from_array(q, q_name), numpy_helper.from_array(scale, s_name)]
        )
        return [
            helper.make_node(
                "DequantizeLinear", [q_name, s_name], [name], name=g.fresh(name + "_dq"), axis=axis
            )
        ]
    return _fold_nodes(g, name, w, axis, reduce_axis if matmul == "fold" else None, block)


def _fold_nodes(
    g: WeightGraph, name: str, w: np.ndarray, axis: int, reduce_axis: int | None, block: int
) -> list[onnx.NodeProto]:
    """int8 weight * float16 scales via Cast/Mul/Reshape: plain ONNX that ORT constant-folds at load.

    With `reduce_axis` (2-D weights whose reduction length divides by `block`) each output channel gets
    one scale per `block` inputs; otherwise one scale per output channel. Folding means the session
    computes in float32 exactly like the original model: the only error is the weight rounding.
    """
    from onnx import helper, numpy_helper

    shape = list(w.shape)
    if (
        reduce_axis is not None
        and w.ndim == 2
        and shape[reduce_axis] % block == 0
        and shape[reduce_axis] > block
    ):
        split = shape[:reduce_axis] + [shape[reduce_axis] // block, block] + shape[reduce_axis + 1 :]
        blocks = w.reshape(split)
        amax = np.abs(blocks).max(axis=reduce_axis + 1, keepdims=True)
    else:
        split = shape
        blocks = w
        amax = np.abs(w).max(axis=tuple(i for i in range(w.ndim) if i != axis), keepdims=True)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float16)
    scale = np.where(scale.astype(np.float32) > 0, scale, np.float16(1.0))
    q = np.clip(np.rint(blocks / scale.astype(np.float32)), -127, 127).astype(np.int8)
    q_name, s_name = g.fresh(name + "_i8"), g.fresh(name + "_scale16")
    g.graph.initializer.extend([numpy_helper.from_array(q, q_name), numpy_helper.from_array(scale, s_name)])
    qf, sf = g.fresh(name + "_qf"), g.fresh(name + "_sf")
    nodes = [
        helper.make_node("Cast", [q_name], [qf], name=g.fresh(name + "_castq"), to=1),
        helper.make_node("Cast", [s_name], [sf], name=g.fresh(name + "_casts"), to=1),
    ]
    if split == shape:
        nodes.append(helper.make_node("Mul", [qf, sf], [name], name=g.fresh(name + "_mul")))
        return nodes
    prod, shape_name = g.fresh(name + "_blocks"), g.fresh(name + "_shape")
    g.graph.initializer.append(numpy_helper.from_array(np.asarray(shape, dtype=np.int64), shape_name))
    nodes += [
        helper.make_node("Mul", [qf, sf], [prod], name=g.fresh(name + "_mul")),
        helper.make_node("Reshape", [prod, shape_name], [name], name=g.fresh(name + "_reshape")),
    ]
    return nodes


def quantize_linear_weights(
    model: onnx.ModelProto,
    matmul: MatMulMode = "fold",
    *,
    conv: bool = True,
    block: int = 32,
    min_elements: int = MIN_ELEMENTS,
) -> int:
    """Replace float MatMul/Gemm/Conv weights with int8 + scales (`matmul` form); returns how many."""
    g = WeightGraph(model.graph)
    opset = opset_of(model)
    new_nodes: list[onnx.NodeProto] = []
    done = []
    for name in list(g.inits):
        users = g.consumers.get(name, [])
        if not users or any(n.op_type == "Gather" for n in users):
            continue
        if not conv and any(n.op_type == "Conv" for n in users):
            continue
        # Only a weight every consumer reads directly as its input 1 is rewritten; a read from inside an
        # If/Loop body (the consumer is the control-flow node) or in another position leaves it float.
        axes = {
            _weight_axis(n, len(g.inits[name].dims)) if list(n.input)[1:2] == [name] and
            list(n.input).count(name) == 1 else None
            for n in users
        }
        if len(axes) != 1 or None in axes:
            continue
        w = g.float_weight(name, min_elements)
        if w is None:
            continue
        axis = axes.pop()
        if axis is None:
            continue
        reduce_axis = 1 - axis if w.ndim == 2 else None
        new_nodes += _dequantized(g, name, w, axis, matmul, block, opset, reduce_axis)
        done.append(name)
    drop_initializers(model.graph, done)
    prepend_nodes(model.graph, new_nodes)
    return len(done)


def quantize_embeddings(model: onnx.ModelProto, mode: EmbeddingMode, min_elements: int = MIN_ELEMENTS) -> int:
    """Replace Gather(float table, ids) (axis 0) with an int8 table and per-row scales; returns how many."""
    g = WeightGraph(model.graph)
    done = []
    build = {"gather-mul": _gather_mul, "gbq": _gather_block_quantized, "dq": _dq_gather}[mode]
    for node, w in g.embedding_tables(min_elements):
        if mode == "gbq" and w.shape[1] % 16:
            continue
        g.replace_node(node, build(g, node, w))
        done.append(node.input[0])
    drop_initializers(model.graph, done)
    if mode == "gbq" and done:
        ensure_ms_domain(model)
    return len(done)


def _gather_mul(g: WeightGraph, node: onnx.NodeProto, w: np.ndarray) -> list[onnx.NodeProto]:
    """Gather the int8 rows and their scales, widen only those rows: memory stays int8."""
    from onnx import helper, numpy_helper

    name, ids, out = node.input[0], node.input[1], node.output[0]
    q, scale = symmetric_int8(w, 0)
    q_name, s_name = g.fresh(name + "_i8"), g.fresh(name + "_row_scale")
    g.graph.initializer.extend(
        [numpy_helper.from_array(q, q_name), numpy_helper.from_array(scale.reshape(-1, 1), s_name)]
    )
    rows, rows_f, row_s = g.fresh(out + "_i8"), g.fresh(out + "_f"), g.fresh(out + "_s")
    return [
        helper.make_node("Gather", [q_name, ids], [rows], name=g.fresh(node.name + "_q"), axis=0),
        helper.make_node("Cast", [rows], [rows_f], name=g.fresh(node.name + "_cast"), to=1),
        helper.make_node("Gather", [s_name, ids], [row_s], name=g.fresh(node.name + "_scale"), axis=0),
        helper.make_node("Mul", [rows_f, row_s], [out], name=g.fresh(node.name + "_mul")),
    ]


def _gather_block_quantized(g: WeightGraph, node: onnx.NodeProto, w: np.ndarray) -> list[onnx.NodeProto]:
    """com.microsoft GatherBlockQuantized on a uint8 table (bits=8), blocks along the row."""
    from onnx import helper, numpy_helper

    name = node.input[0]
    dim = w.shape[1]
    block = max(b for b in (16, 32, 64, 128, 256) if dim % b == 0)
    blocks = w.reshape(w.shape[0], dim // block, block)
    amax = np.abs(blocks).max(axis=2)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(blocks / scale[..., None]), -127, 127).astype(np.int16) + 128
    q_name, s_name = g.fresh(name + "_u8"), g.fresh(name + "_scales")
    g.graph.initializer.extend(
        [
            numpy_helper.from_array(q.reshape(w.shape).astype(np.uint8), q_name),
            numpy_helper.from_array(scale, s_name),
        ]
    )
    return [
        helper.make_node(
            "GatherBlockQuantized",
            [q_name, node.input[1], s_name],
            [node.output[0]],
            name=g.fresh(node.name + "_gbq"),
            domain="com.microsoft",
            bits=8,
            block_size=block,
            gather_axis=0,
            quantize_axis=1,
        )
    ]


def _dq_gather(g: WeightGraph, node: onnx.NodeProto, w: np.ndarray) -> list[onnx.NodeProto]:
    """DequantizeLinear(table, per-row scale) -> Gather: simplest, but ORT may fold it to float at load."""
    from onnx import helper, numpy_helper

    name = node.input[0]
    q, scale = symmetric_int8(w, 0)
    q_name, s_name, deq = g.fresh(name + "_i8"), g.fresh(name + "_row_scale"), g.fresh(name + "_deq")
    g.graph.initializer.extend([numpy_helper.from_array(q, q_name), numpy_helper.from_array(scale, s_name)])
    return [
        helper.make_node("DequantizeLinear", [q_name, s_name], [deq], name=g.fresh(name + "_dq"), axis=0),
        helper.make_node("Gather", [deq, node.input[1]], [node.output[0]], name=node.name, axis=0),
    ]
