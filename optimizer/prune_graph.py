"""A constant-aware view of an ONNX graph for structured pruning: producers, consumers, constant values,
copy-on-write edits of constants, sweeping dead nodes, and the constant 2-D weights of MatMuls."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from slimserve.errors import ToolError
from slimserve.optimizer import onnx_io

if TYPE_CHECKING:
    from onnx import ModelProto, NodeProto


class PruneGraph:
    """Lookups over one ModelProto plus copy-on-write edits of constant inputs.

    A constant is never changed where it lives: the edited value becomes a new initializer and only
    the one consumer slot is re-pointed, so weights shared between nodes (the exporter dedups equal
    tensors through Identity) stay correct. Unused nodes and initializers are swept at the end.
    """

    def __init__(self, model: ModelProto) -> None:
        self.model = model
        self.graph = model.graph
        self.inits = {i.name: i for i in self.graph.initializer}
        self.input_names = {i.name for i in self.graph.input}
        self.output_names = {o.name for o in self.graph.output}
        self.producer: dict[str, NodeProto] = {}
        self.consumers: dict[str, list[NodeProto]] = defaultdict(list)
        for node in self.graph.node:
            for out in node.output:
                self.producer[out] = node
            for name in node.input:
                if name:
                    self.consumers[name].append(node)
        self._cache: dict[str, np.ndarray | None] = {}
        self._counter = 0
        self.lengths: dict[str, int] = {}

    def const(self, name: str) -> np.ndarray | None:
        """The value of `name` if it is a constant (initializer, Constant node, Identity of one)."""
        if name in self._cache:
            return self._cache[name]
        from onnx import numpy_helper

        value: np.ndarray | None = None
        if not name or name in self.input_names:
            value = None
        elif name in self.inits:
            value = numpy_helper.to_array(self.inits[name])
        elif name in self.producer:
            node = self.producer[name]
            if node.op_type == "Identity":
                value = self.const(node.input[0])
            elif node.op_type == "Constant":
                value = _constant_node_value(node)
        self._cache[name] = value
        return value

    def is_const(self, name: str) -> bool:
        return self.const(name) is not None

    def replace_input(self, node: NodeProto, index: int, value: np.ndarray, tag: str) -> None:
        """Point input `index` of `node` at a new initializer holding `value` (copy on write)."""
        from onnx import numpy_helper

        self._counter += 1
        name = f"{node.input[index]}_{tag}{self._counter}"
        while name in self.inits or name in self.producer:
            self._counter += 1
            name = f"{node.input[index]}_{tag}{self._counter}"
        old = node.input[index]
        dtype = self.const(old)
        arr = np.ascontiguousarray(value, dtype=dtype.dtype if dtype is not None else value.dtype)
        tensor = numpy_helper.from_array(arr, name)
        self.graph.initializer.append(tensor)
        self.inits[name] = self.graph.initializer[-1]
        self._cache[name] = arr
        node.input[index] = name
        self.consumers[old] = [c for c in self.consumers[old] if c is not node]
        self.consumers[name].append(node)

    def sweep(self) -> None:
        """Drop nodes whose outputs nobody reads, then initializers nobody reads; clear stale value_info."""
        graph = self.graph
        while True:
            used = set(self.output_names)
            for node in graph.node:
                used.update(i for i in node.input if i)
                used.update(_subgraph_inputs(node))
            dead = [n for n in graph.node if not any(o in used for o in n.output)]
            if not dead:
                break
            dead_ids = {id(n) for n in dead}
            keep = [n for n in graph.node if id(n) not in dead_ids]
            del graph.node[:]
            graph.node.extend(keep)
        used = set(self.output_names)
        for node in graph.node:
            used.update(i for i in node.input if i)
            used.update(_subgraph_inputs(node))
        inits = [i for i in graph.initializer if i.name in used]
        del graph.initializer[:]
        graph.initializer.extend(inits)
        # Shapes recorded for intermediate tensors may now be wrong; ORT and onnx re-infer them.
        del graph.value_info[:]

    def piece_length(self, name: str) -> int | None:
        """Length of a 1-D shape piece (a Concat input), from its value or from shape inference."""
        value = self.const(name)
        if value is not None:
            return int(value.size)
        if name in self.lengths:
            return self.lengths[name]
        node = self.producer.get(name)
        if node is not None and node.op_type == "Unsqueeze":
            # Exporters build shape pieces as Unsqueeze(Gather(Shape(x), scalar index)): one entry.
            gather = self.producer.get(node.input[0])
            index = self.const(gather.input[1]) if gather is not None and gather.op_type == "Gather" else None
            if index is not None and index.ndim == 0:
                return 1
        return None


def _constant_node_value(node: NodeProto) -> np.ndarray | None:
    from onnx import numpy_helper

    for a in node.attribute:
        if a.name == "value":
            return numpy_helper.to_array(a.t)
        if a.name == "value_float":
            return np.asarray(a.f, dtype=np.float32)
        if a.name == "value_floats":
            return np.asarray(list(a.floats), dtype=np.float32)
        if a.name == "value_int":
            return np.asarray(a.i, dtype=np.int64)
        if a.name == "value_ints":
            return np.asarray(list(a.ints), dtype=np.int64)
    return None


def _subgraph_inputs(node: NodeProto) -> Iterator[str]:
    """Names a node's subgraphs (If/Loop/Scan bodies) read from the outer scope."""
    from onnx import AttributeProto

    for a in node.attribute:
        graphs = [a.g] if a.type == AttributeProto.GRAPH else list(a.graphs)
        for g in graphs:
            for n in g.node:
                yield from (i for i in n.input if i)
                yield from _subgraph_inputs(n)


def weight(g: PruneGraph, node: NodeProto) -> np.ndarray | None:
    """W of a `MatMul(x, W)` whose W is a 2-D float constant and x is not a constant."""
    if node.op_type != "MatMul" or len(node.input) != 2 or g.is_const(node.input[0]):
        return None
    w = g.const(node.input[1])
    if w is None or w.ndim != 2 or w.dtype != np.float32:
        return None
    return w


def weight_of(g: PruneGraph, node: NodeProto) -> np.ndarray:
    w = weight(g, node)
    if w is None:  # pragma: no cover - callers check first
        raise ToolError(f"prune: {node.name or node.op_type} lost its constant weight")
    return w


def infer_lengths(model: ModelProto) -> dict[str, int]:
    """Static lengths of 1-D tensors (shape pieces) from onnx shape inference, where it knows them."""
    import onnx

    if onnx_io.needs_external_data(model):
        return {}
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - inference only helps locate shape pieces; failing it is not fatal
        return {}
    lengths = {}
    for v in inferred.graph.value_info:
        dims = v.type.tensor_type.shape.dim
        if len(dims) == 1 and dims[0].HasField("dim_value"):
            lengths[v.name] = int(dims[0].dim_value)
    return lengths
