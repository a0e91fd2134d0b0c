"""Editing the weights of an ONNX graph: an index of initializers and their consumers, fresh names,
symmetric int8, and the small graph edits every weight rewrite shares (used by the int8 and n-bit
rewrites and the quantization steps)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from slimserve.optimizer import graph_tools

if TYPE_CHECKING:
    import onnx

MIN_ELEMENTS = 4096  # weights below this (biases, LayerNorm, tiny tables) stay float: few bytes, most risk


def symmetric_int8(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 with one scale per slice along `axis` (range [-127, 127], zero point 0).

    Returns (q, scale) with `scale` shaped like w.shape[axis]. An all-zero slice gets scale 1 so that
    dequantization never divides by zero.
    """
    w = np.asarray(w, dtype=np.float32)
    reduce = tuple(i for i in range(w.ndim) if i != axis)
    amax = np.abs(w).max(axis=reduce) if reduce else np.abs(w)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.rint(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, scale


class WeightGraph:
    """Index of one ONNX graph: initializers by name and the nodes consuming each value."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.inits = {t.name: t for t in graph.initializer}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            # Subgraph reads count: a weight an If/Loop body also uses must not be rewritten away.
            for name in dict.fromkeys(graph_tools.node_inputs(node)):
                self.consumers.setdefault(name, []).append(node)
        self.graph_outputs = {o.name for o in graph.output}
        self._used: set[str] = {n for n in self.inits} | {o for n in graph.node for o in n.output}

    def fresh(self, base: str) -> str:
        """A value name not used anywhere in the graph yet."""
        name, i = base, 0
        while name in self._used:
            i += 1
            name = f"{base}_{i}"
        self._used.add(name)
        return name

    def embedding_tables(self, min_elements: int) -> list[tuple[onnx.NodeProto, np.ndarray]]:
        """Gather nodes on axis 0 reading a 2-D float table that nothing else reads, with the table:
        the embeddings the int8 and 4-bit rewrites replace."""
        found = []
        for node in list(self.graph.node):
            if node.op_type != "Gather" or any(a.name == "axis" and a.i != 0 for a in node.attribute):
                continue
            name = node.input[0]
            if len(self.consumers.get(name, [])) != 1 or name not in self.inits or len(self.inits[name].dims) != 2:
                continue
            table = self.float_weight(name, min_elements)
            if table is not None:
                found.append((node, table))
        return found

    def replace_node(self, node: onnx.NodeProto, new_nodes: list[onnx.NodeProto]) -> None:
        """`new_nodes` in `node`'s place (the graph stays topologically ordered)."""
        position = list(self.graph.node).index(node)
        self.graph.node.remove(node)
        for offset, new in enumerate(new_nodes):
            self.graph.node.insert(position + offset, new)

    def float_weight(self, name: str, min_elements: int) -> np.ndarray | None:
        """The initializer `name` as float32 if it is a float tensor worth quantizing, else None."""
        from onnx import TensorProto, numpy_helper

        init = self.inits.get(name)
        if init is None or init.data_type not in (TensorProto.FLOAT, TensorProto.FLOAT16):
            return None
        if int(np.prod(init.dims)) < min_elements or name in self.graph_outputs:
            return None
        return numpy_helper.to_array(init).astype(np.float32)


def opset_of(model: onnx.ModelProto) -> int:
    """The model's default-domain opset."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def ensure_ms_domain(model: onnx.ModelProto) -> None:
    from onnx import helper

    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))


def drop_initializers(graph: onnx.GraphProto, names: list[str]) -> None:
    gone = set(names)
    keep = [t for t in graph.initializer if t.name not in gone]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def prepend_nodes(graph: onnx.GraphProto, nodes: list[onnx.NodeProto]) -> None:
    """Dequantization nodes depend only on initializers, so putting them first keeps topological order."""
    for k, n in enumerate(nodes):
        graph.node.insert(k, n)
