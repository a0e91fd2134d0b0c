"""Structured pruning that really shrinks shapes: FFN units and whole attention heads.

`prune-ffn-N` removes N% of the intermediate units of every transformer FFN block (columns of W1 and
its bias, rows of W2). `prune-heads-N` removes N% of the heads of every attention block (the head's
columns from Q, K, V and their biases, its rows from the output projection) and rewrites the shape
constants that spell the head count or the all-heads width. Both pick what to drop by an importance
score. With calibration feeds in the context the score is activation-aware (the spread of each unit's
or head's output on real tokens), the dropped units' mean output is folded into the next bias, and the
kept rows of W2 / Wo are refitted by ridge least squares to stand in for the dropped ones (one-shot,
layer-local; measured on MiniLM it roughly halves the fidelity loss). Without calibration the score is
weight magnitude and the kept weights are copied unchanged.
`sparsity-N` is the unstructured kind: it zeroes weights and changes no shape (see its notes).

Blocks are found by graph pattern, not by node names, on the graphs the optimum exporter writes for
BERT-like encoders (MatMul + Add projections, Reshape/Transpose head split, Softmax, Erf-GELU). Fused
graphs (com.microsoft Attention, SkipLayerNorm...) are not supported: prune before graph optimization.
The result is a plain fp32 graph with the same opset, inputs and outputs, ready for quantization.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from slimserve.errors import SlimserveError, ToolError, first_line
from slimserve.optimizer import activations, onnx_io

from .base import Feed, StepContext, StepResult, StepSpec, option, required

if TYPE_CHECKING:
    from onnx import ModelProto, NodeProto

Score = Literal["auto", "magnitude", "activation"]

# Elementwise ops that may sit between the two FFN MatMuls (bias add, GELU/Erf pattern, ReLU, ...).
_FFN_ELEMENTWISE = frozenset(
    {
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Pow",
        "Sqrt",
        "Erf",
        "Tanh",
        "Sigmoid",
        "Relu",
        "LeakyRelu",
        "Elu",
        "Selu",
        "Gelu",
        "FastGelu",
        "BiasGelu",
        "HardSigmoid",
        "HardSwish",
        "Softplus",
        "Mish",
        "Exp",
        "Neg",
        "Abs",
        "Clip",
        "Cast",
        "Identity",
    }
)
# Ops allowed between a projection MatMul and the head-split Reshape (bias add, a scalar scale).
_PROJ_ELEMENTWISE = frozenset({"Add", "Sub", "Mul", "Div", "Cast", "Identity"})
# Ops allowed between the head-split Reshape and the score / context MatMuls.
_HEAD_PASS = frozenset({"Transpose", "Mul", "Div", "Cast", "Identity"})
# Ops allowed between the raw attention scores and the Softmax (scale, mask, casts).
_SCORE_PASS = frozenset({"Add", "Sub", "Mul", "Div", "Where", "Cast", "Identity"})

# --------------------------------------------------------------------------------------------- graph


class _Graph:
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


def _attr(node: NodeProto, name: str) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
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


# ----------------------------------------------------------------------------------------- FFN blocks


@dataclass
class _FfnBlock:
    up: NodeProto  # MatMul X @ W1 [H, I]
    down: NodeProto  # MatMul act @ W2 [I, O]
    width: int  # I
    vectors: list[tuple[NodeProto, int]] = field(default_factory=list)  # constants with last dim I

    @property
    def activation(self) -> str:
        return str(self.down.input[0])


def _weight(g: _Graph, node: NodeProto) -> np.ndarray | None:
    """W of a `MatMul(x, W)` whose W is a 2-D float constant and x is not a constant."""
    if node.op_type != "MatMul" or len(node.input) != 2 or g.is_const(node.input[0]):
        return None
    w = g.const(node.input[1])
    if w is None or w.ndim != 2 or w.dtype != np.float32:
        return None
    return w


def _find_ffn_blocks(g: _Graph) -> list[_FfnBlock]:
    blocks = []
    for node in g.graph.node:
        w1 = _weight(g, node)
        if w1 is None or w1.shape[1] < 2:
            continue
        block = _trace_ffn(g, node, int(w1.shape[1]))
        if block is not None:
            blocks.append(block)
    return blocks


def _trace_ffn(g: _Graph, up: NodeProto, width: int) -> _FfnBlock | None:
    """Follow `up`'s output through elementwise ops to exactly one MatMul that takes it back down.

    Grows the region to a fixed point: an elementwise node joins once all its live inputs are in the
    region (GELU reads x twice). Any consumer that never joins (a residual Add, a Reshape) rejects it.
    """
    region = {up.output[0]}
    done: set[int] = set()
    down: NodeProto | None = None
    vectors: list[tuple[NodeProto, int]] = []
    interior = 0
    changed = True
    while changed:
        changed = False
        for tensor in sorted(region):  # a copy: the loop grows the region
            if tensor in g.output_names:
                return None
            for c in g.consumers.get(tensor, []):
                if id(c) in done:
                    continue
                w2 = _weight(g, c)
                if w2 is not None and c.input[0] in region:
                    if w2.shape[0] != width or down is not None:
                        return None
                    down = c
                    done.add(id(c))
                    continue
                if c.op_type not in _FFN_ELEMENTWISE:
                    return None
                live = [i for i in c.input if i and not g.is_const(i)]
                if any(i not in region for i in live):
                    continue  # may join once its other live input does
                for i, name in enumerate(c.input):
                    value = g.const(name) if name else None
                    if value is None or value.size == 1:
                        continue
                    if value.shape[-1] == width and value.size == width:
                        vectors.append((c, i))
                        continue
                    return None
                done.add(id(c))
                interior += 1
                region.update(o for o in c.output if o)
                changed = True
                if interior > 64:
                    return None
    for tensor in region:
        if any(id(c) not in done for c in g.consumers.get(tensor, [])):
            return None  # read by something outside the block (e.g. a residual Add)
    if down is None or interior == 0:
        return None
    return _FfnBlock(up=up, down=down, width=width, vectors=vectors)


# ----------------------------------------------------------------------------------- attention blocks


@dataclass
class _Projection:
    matmul: NodeProto
    vectors: list[tuple[NodeProto, int]]  # per-channel constants between MatMul and Reshape (bias)
    split: NodeProto  # the Reshape [.., heads, head_dim]


@dataclass
class _AttentionBlock:
    q: _Projection
    k: _Projection
    v: _Projection
    merge: NodeProto  # Reshape [.., heads * head_dim]
    out: NodeProto  # MatMul ctx @ Wo [A, H]
    heads: int
    head_dim: int

    @property
    def context(self) -> str:
        return str(self.out.input[0])


def _walk_up(g: _Graph, start: str, through: frozenset[str], target: str, limit: int = 8) -> list[NodeProto]:
    """Nodes of type `target` reached from `start` going up through ops in `through` (non-constant inputs)."""
    found: list[NodeProto] = []
    seen: set[str] = set()
    stack = [(start, 0)]
    while stack:
        name, depth = stack.pop()
        if name in seen or depth > limit:
            continue
        seen.add(name)
        node = g.producer.get(name)
        if node is None:
            continue
        if node.op_type == target:
            if all(id(node) != id(f) for f in found):
                found.append(node)
            continue
        if node.op_type in through:
            stack.extend((i, depth + 1) for i in node.input if i and not g.is_const(i))
    return found


def _walk_down(
    g: _Graph, start: str, through: frozenset[str], target: str, limit: int = 8
) -> NodeProto | None:
    """The single node of type `target` reached from `start` through single-consumer ops in `through`."""
    name = start
    for _ in range(limit):
        consumers = g.consumers.get(name, [])
        if len(consumers) != 1 or name in g.output_names:
            return None
        node = consumers[0]
        if node.op_type == target:
            return node
        if node.op_type not in through:
            return None
        name = node.output[0]
    return None


def _projection(g: _Graph, split: NodeProto) -> _Projection | None:
    """The constant-weight MatMul (and bias) feeding a head-split Reshape."""
    name = split.input[0]
    vectors: list[tuple[NodeProto, int]] = []
    for _ in range(6):
        node = g.producer.get(name)
        if node is None:
            return None
        if _weight(g, node) is not None:
            return _Projection(matmul=node, vectors=vectors, split=split)
        if node.op_type not in _PROJ_ELEMENTWISE:
            return None
        live = [i for i in node.input if i and not g.is_const(i)]
        if len(live) != 1:
            return None
        for i, inp in enumerate(node.input):
            value = g.const(inp) if inp else None
            if value is not None and value.size > 1:
                vectors.append((node, i))
        name = live[0]
    return None


def _find_attention_blocks(g: _Graph) -> list[_AttentionBlock]:
    blocks = []
    for softmax in [n for n in g.graph.node if n.op_type == "Softmax"]:
        block = _trace_attention(g, softmax)
        if block is not None:
            blocks.append(block)
    return blocks


def _trace_attention(g: _Graph, softmax: NodeProto) -> _AttentionBlock | None:
    pv = _walk_down(g, softmax.output[0], frozenset({"Cast", "Identity", "Dropout"}), "MatMul")
    if pv is None or g.is_const(pv.input[1]):
        return None
    qks = [
        n
        for n in _walk_up(g, softmax.input[0], _SCORE_PASS, "MatMul")
        if not g.is_const(n.input[0]) and not g.is_const(n.input[1])
    ]
    if len(qks) != 1:
        return None
    splits = []
    for name in (qks[0].input[0], qks[0].input[1], pv.input[1]):
        found = _walk_up(g, name, _HEAD_PASS, "Reshape")
        if len(found) != 1:
            return None
        splits.append(found[0])
    projections = [_projection(g, s) for s in splits]
    if any(p is None for p in projections):
        return None
    q, k, v = (p for p in projections if p is not None)
    merge = _walk_down(g, pv.output[0], frozenset({"Transpose", "Cast", "Identity"}), "Reshape")
    if merge is None:
        return None
    out = _walk_down(g, merge.output[0], frozenset({"Cast", "Identity"}), "MatMul")
    if out is None or _weight(g, out) is None or out.input[0] == out.input[1]:
        return None
    width = {int(_weight_of(g, p.matmul).shape[1]) for p in (q, k, v)}
    wo = _weight_of(g, out)
    if len(width) != 1 or wo.shape[0] not in width:
        return None
    heads, head_dim = _head_geometry(g, q.split, width.pop())
    return _AttentionBlock(q=q, k=k, v=v, merge=merge, out=out, heads=heads, head_dim=head_dim)


def _weight_of(g: _Graph, node: NodeProto) -> np.ndarray:
    w = _weight(g, node)
    if w is None:  # pragma: no cover - callers check first
        raise ToolError(f"prune: {node.name or node.op_type} lost its constant weight")
    return w


def _shape_entry(g: _Graph, name: str, pos: int) -> int | None:
    """Entry `pos` (negative: from the end) of a shape tensor built from constants and Concat pieces."""
    value = g.const(name)
    if value is not None:
        return int(value.reshape(-1)[pos]) if value.size >= -pos else None
    node = g.producer.get(name)
    if node is None or node.op_type != "Concat":
        return None
    located = _locate_piece(g, node, pos)
    if located is None:
        return None
    index, inner = located
    return _shape_entry(g, node.input[index], inner)


def _locate_piece(g: _Graph, concat: NodeProto, pos: int) -> tuple[int, int] | None:
    """Which Concat input holds entry `pos` (negative), and at which negative position inside it."""
    remaining = -pos
    for index in range(len(concat.input) - 1, -1, -1):
        length = g.piece_length(concat.input[index])
        if length is None:
            return None
        if remaining <= length:
            return index, -remaining
        remaining -= length
    return None


def _head_geometry(g: _Graph, split: NodeProto, width: int) -> tuple[int, int]:
    heads = _shape_entry(g, split.input[1], -2)
    head_dim = _shape_entry(g, split.input[1], -1)
    if heads is not None and heads > 0 and width % heads == 0 and head_dim in (None, -1, width // heads):
        return heads, width // heads
    if head_dim is not None and head_dim > 0 and width % head_dim == 0 and heads in (None, -1):
        return width // head_dim, head_dim
    raise SlimserveError(
        f"prune-heads: cannot read the head count from the shape feeding {split.name or 'a Reshape'}",
        hint="prune-heads supports the optimum export pattern (Reshape to [batch, -1, heads, head_dim])",
    )


def _rewrite_shape_entry(g: _Graph, node: NodeProto, index: int, pos: int, old: int, new: int) -> None:
    """Set entry `pos` of `node.input[index]` (a shape) from `old` to `new`; -1 entries stay as they are."""
    name = node.input[index]
    value = g.const(name)
    if value is not None:
        flat = value.reshape(-1)
        entry = int(flat[pos])
        if entry in (-1, new):
            return
        if entry != old:
            raise SlimserveError(
                f"prune-heads: shape entry {entry} feeding {node.name or node.op_type} "
                f"is not {old} as expected",
                hint="this graph builds attention shapes in a way prune-heads does not support",
            )
        edited = flat.copy()
        edited[pos] = new
        g.replace_input(node, index, edited.reshape(value.shape), "pruned")
        return
    producer = g.producer.get(name)
    located = (
        _locate_piece(g, producer, pos) if producer is not None and producer.op_type == "Concat" else None
    )
    if producer is None or located is None:
        raise SlimserveError(
            f"prune-heads: cannot rewrite the shape feeding {node.name or node.op_type} "
            "(not built from constants)",
            hint="prune-heads supports the optimum export pattern; export without graph optimizations",
        )
    piece, inner = located
    _rewrite_shape_entry(g, producer, piece, inner, old, new)


# ------------------------------------------------------------------------------------------- scoring


_MAX_TOKENS = 4096  # calibration tokens kept per block (memory: tokens x width float32)
_RIDGE = 0.1  # ridge strength relative to the mean Gram diagonal (0.001..3 tried on MiniLM; 0.1 was best)


def _collect(g: _Graph, names: Sequence[str], feeds: Sequence[Feed]) -> list[np.ndarray]:
    """Activations [tokens, channels] of each named tensor over the calibration feeds, padding dropped."""
    chunks: list[list[np.ndarray]] = [[] for _ in names]
    for feed, values in activations.capture(g.model, names, feeds, "prune"):
        for i, value in enumerate(values):
            rows = value.reshape(-1, value.shape[-1]).astype(np.float32)
            mask = feed.get("attention_mask")
            if mask is not None and tuple(np.shape(mask)) == tuple(value.shape[:-1]):
                rows = rows[np.asarray(mask).reshape(-1) != 0]
            chunks[i].append(rows)
    out = []
    for parts in chunks:
        out.append(activations.subsample(np.concatenate(parts), _MAX_TOKENS))
    return out


def _output_bias(g: _Graph, matmul: NodeProto) -> tuple[NodeProto, int] | None:
    """The constant bias added right after `matmul` (its only consumer being that Add), if any."""
    consumers = g.consumers.get(matmul.output[0], [])
    if len(consumers) != 1 or consumers[0].op_type != "Add" or matmul.output[0] in g.output_names:
        return None
    add = consumers[0]
    width = _weight_of(g, matmul).shape[1]
    for i, name in enumerate(add.input):
        value = g.const(name)
        if (
            value is not None
            and value.size == width
            and value.shape[-1] == width
            and value.dtype == np.float32
        ):
            return add, i
    return None


def _reconstruct(
    acts: np.ndarray, weight: np.ndarray, keep: np.ndarray, centered: bool
) -> tuple[np.ndarray, np.ndarray]:
    """New rows for the kept inputs of `acts @ weight`, plus a bias shift, standing in for the dropped ones.

    Ridge least squares on the calibration activations: min ||A_k D - A_p W_p||^2 + lam ||D||^2, so the
    kept units absorb what the dropped ones did; with `centered`, the dropped units' mean output moves
    into the bias (needs a bias to move it into).
    """
    a = acts.astype(np.float64)
    w = weight.astype(np.float64)
    dropped = np.setdiff1d(np.arange(a.shape[1]), keep)
    ak, ap = a[:, keep], a[:, dropped]
    shift = np.zeros(w.shape[1])
    if centered:
        mk, mp = ak.mean(axis=0), ap.mean(axis=0)
        ak, ap = ak - mk, ap - mp
    gram = ak.T @ ak
    gram += _RIDGE * max(float(np.trace(gram)) / len(gram), 1e-12) * np.eye(len(gram))
    delta = np.linalg.solve(gram, ak.T @ (ap @ w[dropped]))
    if centered:
        shift = mp @ w[dropped] - mk @ delta
    return (w[keep] + delta).astype(np.float32), shift.astype(np.float32)


def _ffn_scores(
    g: _Graph, blocks: Sequence[_FfnBlock], acts: Sequence[np.ndarray] | None
) -> list[np.ndarray]:
    """Unit importance: std(act) x ||W2 row|| with calibration, else ||W1 col|| x ||W2 row||.

    With calibration a dropped unit's mean output moves into the bias, so only its spread is lost.
    """
    down_norms = [np.linalg.norm(_weight_of(g, b.down).astype(np.float64), axis=1) for b in blocks]
    if acts is None:
        return [
            np.linalg.norm(_weight_of(g, b.up).astype(np.float64), axis=0) * n
            for b, n in zip(blocks, down_norms)
        ]
    return [a.astype(np.float64).std(axis=0) * n for a, n in zip(acts, down_norms)]


def _head_scores(
    g: _Graph, blocks: Sequence[_AttentionBlock], acts: Sequence[np.ndarray] | None
) -> list[np.ndarray]:
    """Head importance: RMS of the head's centred output (ctx_h - mean) @ Wo_h, else ||Wv_h|| x ||Wo_h||."""
    scores = []
    for i, b in enumerate(blocks):
        wo = _weight_of(g, b.out).astype(np.float64).reshape(b.heads, b.head_dim, -1)
        if acts is None:
            wv = _weight_of(g, b.v.matmul).astype(np.float64).reshape(-1, b.heads, b.head_dim)
            scores.append(np.linalg.norm(wv, axis=(0, 2)) * np.linalg.norm(wo, axis=(1, 2)))
            continue
        ctx = acts[i].astype(np.float64)
        ctx = (ctx - ctx.mean(axis=0)).reshape(len(ctx), b.heads, b.head_dim)
        energy = [np.mean(np.sum((ctx[:, h, :] @ wo[h]) ** 2, axis=1)) for h in range(b.heads)]
        scores.append(np.sqrt(np.asarray(energy)))
    return scores


def _shrink_down(g: _Graph, matmul: NodeProto, keep: np.ndarray, acts: np.ndarray | None) -> None:
    """Keep only rows `keep` of `matmul`'s weight; with activations, reconstruct them and shift the bias."""
    w = _weight_of(g, matmul)
    if acts is None:
        g.replace_input(matmul, 1, w[keep, :], "pruned")
        return
    bias = _output_bias(g, matmul)
    new_w, shift = _reconstruct(acts, w, keep, centered=bias is not None)
    g.replace_input(matmul, 1, new_w, "pruned")
    if bias is not None:
        node, index = bias
        value = g.const(node.input[index])
        assert value is not None  # _output_bias found it as a constant
        g.replace_input(node, index, value + shift.reshape(value.shape), "pruned")


def _keep(scores: np.ndarray, drop: int) -> np.ndarray:
    """Indices to keep (in original order) after dropping the `drop` lowest-scoring ones; ties are stable."""
    order = np.argsort(scores, kind="stable")
    return np.sort(order[drop:])


# --------------------------------------------------------------------------------------- the steps


@dataclass(frozen=True)
class PruneOptions:
    percent: int = required("percent to remove, 1-99 (rounded per block)")
    score: Score = option(  # noqa: RUF009 - option() is dataclasses.field with help
        "auto", "importance: activation (needs calibration), magnitude, or auto (activation when there are "
        "calibration feeds)")

    def __post_init__(self) -> None:
        _check_percent(self.percent)


@dataclass(frozen=True)
class SparsityOptions:
    percent: int = required("percent of each weight matrix to zero, 1-99")

    def __post_init__(self) -> None:
        _check_percent(self.percent)


def _check_percent(value: int) -> None:
    if not 0 < value < 100:
        raise ValueError(f"the percentage must be between 1 and 99, got {value} "
                         "(0 would change nothing and 100 would remove everything)")


def _share(count: int, percent: int) -> int:
    """`percent`% of `count`, rounded half up (Python round() rounds 2.5 down to 2)."""
    return int(np.floor(count * percent / 100 + 0.5))


def _method(ctx: StepContext, score: Score) -> str:
    if score == "auto":
        return "activation" if ctx.calibration else "magnitude"
    if score == "activation" and not ctx.calibration:
        raise SlimserveError(
            "prune: activation-aware scoring needs calibration feeds", hint="pass an evaluation set"
        )
    return score


def _save(model: ModelProto, dst: Path) -> None:
    """Save through onnx_io, proving the pruned graph passes onnx.checker (before writing, when it fits)."""
    import onnx

    large = onnx_io.needs_external_data(model)
    try:
        if not large:
            onnx.checker.check_model(model)
        onnx_io.save_model(model, dst, "prune")
        if large:
            onnx.checker.check_model(str(dst))
    except onnx.checker.ValidationError as exc:
        raise ToolError(f"prune: the pruned graph fails onnx.checker: {first_line(exc)}") from exc


def _dummy_feeds(model: ModelProto) -> dict[str, np.ndarray]:
    """Small valid inputs for a smoke run: batch 2, 8 positions, token id 1, mask 1, type id 0."""
    from onnx import helper

    inits = {i.name for i in model.graph.initializer}
    feeds: dict[str, np.ndarray] = {}
    for value in model.graph.input:
        if value.name in inits:
            continue
        ttype = value.type.tensor_type
        dims = [
            d.dim_value if d.HasField("dim_value") else (2 if i == 0 else 8)
            for i, d in enumerate(ttype.shape.dim)
        ]
        dtype = helper.tensor_dtype_to_np_dtype(ttype.elem_type)
        fill = 0 if "type" in value.name else 1
        feeds[value.name] = np.full(dims, fill, dtype=dtype)
    return feeds


def _smoke(original: bytes, pruned: ModelProto, feeds: Sequence[Feed]) -> None:
    """Run both models once and require the same output names and shapes."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    feed = dict(feeds[0]) if feeds else _dummy_feeds(pruned)
    shapes = []
    for label, blob in (("original", original), ("pruned", pruned.SerializeToString())):
        try:
            session = ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
            wanted = {i.name for i in session.get_inputs()}
            outs = session.run(None, {k: v for k, v in feed.items() if k in wanted})
        except Exception as exc:
            raise ToolError(f"prune: onnxruntime cannot run the {label} model: {first_line(exc)}") from exc
        shapes.append([np.shape(o) for o in outs])
    if shapes[0] != shapes[1]:
        raise ToolError(f"prune: output shapes changed from {shapes[0]} to {shapes[1]}")


def _infer_lengths(model: ModelProto) -> dict[str, int]:
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


def prune_ffn(src: Path, dst: Path, ctx: StepContext, percent: int, score: Score = "auto") -> StepResult:
    """Remove `percent`% of the intermediate units of every FFN block; see the module docstring."""
    method = _method(ctx, score)
    model = onnx_io.read_model(src, "prune")
    original = model.SerializeToString()
    g = _Graph(model)
    with ctx.progress.stage("prune-ffn: find blocks"):
        blocks = _find_ffn_blocks(g)
    if not blocks:
        raise SlimserveError(
            f"prune-ffn: no FFN blocks found in {Path(src).name} "
            "(looked for MatMul[H,I] -> elementwise activation -> MatMul[I,H] with constant weights)",
            hint="prune before fusing graph optimizations; only transformer encoders are supported",
        )
    with ctx.progress.stage("prune-ffn: score units"):
        acts = (
            _collect(g, [b.activation for b in blocks], ctx.calibration) if method == "activation" else None
        )
        scores = _ffn_scores(g, blocks, acts)
    before, after = [], []
    with ctx.progress.stage("prune-ffn: slice weights", total=len(blocks)) as stage:
        for i, (block, score_vec) in enumerate(zip(blocks, scores)):
            drop = _share(block.width, percent)
            if drop == 0 or drop >= block.width:
                raise SlimserveError(
                    f"prune-ffn: {percent}% of {block.width} units rounds to {drop}, leaving nothing to do",
                    hint=f"use at least {int(np.ceil(50 / block.width))}% and less than 100%",
                )
            keep = _keep(score_vec, drop)
            g.replace_input(block.up, 1, _weight_of(g, block.up)[:, keep], "pruned")
            _shrink_down(g, block.down, keep, None if acts is None else acts[i])
            for node, index in block.vectors:
                value = g.const(node.input[index])
                assert value is not None  # found as a constant during tracing
                g.replace_input(
                    node, index, value.reshape(-1)[keep].reshape(value.shape[:-1] + (len(keep),)), "pruned"
                )
            before.append(block.width)
            after.append(len(keep))
            stage.advance()
    return _finish(
        g, original, model, ctx, dst, method,
        f"removed {percent}% of FFN units in {len(blocks)} blocks ({before[0]} -> {after[0]} per block)",
        magnitude="units chosen by weight magnitude (no calibration feeds given; activation-aware is better)",
        activation="units chosen by calibration activations; kept units refitted (ridge least squares) to stand in",
        details={"blocks": len(blocks), "score": method, "units_before": before, "units_after": after},
    )


def prune_heads(src: Path, dst: Path, ctx: StepContext, percent: int, score: Score = "auto") -> StepResult:
    """Remove `percent`% of the heads (whole heads) of every attention block; see the module docstring."""
    method = _method(ctx, score)
    model = onnx_io.read_model(src, "prune")
    original = model.SerializeToString()
    g = _Graph(model)
    with ctx.progress.stage("prune-heads: find blocks"):
        g.lengths = _infer_lengths(model)
        blocks = _find_attention_blocks(g)
    if not blocks:
        fused = sorted(
            {n.op_type for n in model.graph.node if n.op_type in ("Attention", "MultiHeadAttention")}
        )
        raise SlimserveError(
            f"prune-heads: no attention blocks found in {Path(src).name} "
            "(looked for MatMul+Add -> Reshape[.., heads, dim] for Q, K, V -> MatMul -> Softmax -> MatMul -> "
            "Reshape -> MatMul)" + (f"; the graph has fused {', '.join(fused)} ops" if fused else ""),
            hint="prune before fusing graph optimizations; only transformer encoders are supported",
        )
    with ctx.progress.stage("prune-heads: score heads"):
        acts = _collect(g, [b.context for b in blocks], ctx.calibration) if method == "activation" else None
        scores = _head_scores(g, blocks, acts)
    before, after, kept_heads = [], [], []
    with ctx.progress.stage("prune-heads: slice weights", total=len(blocks)) as stage:
        for i, (block, score_vec) in enumerate(zip(blocks, scores)):
            drop = _share(block.heads, percent)
            if drop == 0 or drop >= block.heads:
                raise SlimserveError(
                    f"prune-heads: {percent}% of {block.heads} heads rounds to {drop} heads, "
                    "which is not a prune",
                    hint=f"with {block.heads} heads per layer use {int(np.ceil(50 / block.heads))}%..."
                    f"{int(np.floor(100 - 50 / block.heads))}%",
                )
            keep = _keep(score_vec, drop)
            d = block.head_dim
            cols = (keep[:, None] * d + np.arange(d)[None, :]).reshape(-1)
            width, new_heads = block.heads * d, len(keep)
            for proj in (block.q, block.k, block.v):
                w = _weight_of(g, proj.matmul)
                g.replace_input(proj.matmul, 1, w[:, cols], "pruned")
                for node, index in proj.vectors:
                    value = g.const(node.input[index])
                    assert value is not None  # found as a constant during tracing
                    if value.shape[-1] != width or value.size != width:
                        raise SlimserveError(
                            f"prune-heads: unexpected per-channel constant of shape {list(value.shape)} "
                            f"in a projection of width {width}",
                            hint="this attention pattern is not supported",
                        )
                    g.replace_input(
                        node,
                        index,
                        value.reshape(-1)[cols].reshape(value.shape[:-1] + (len(cols),)),
                        "pruned",
                    )
                _rewrite_shape_entry(g, proj.split, 1, -2, block.heads, new_heads)
            _rewrite_shape_entry(g, block.merge, 1, -1, width, new_heads * d)
            _shrink_down(g, block.out, cols, None if acts is None else acts[i])
            before.append(block.heads)
            after.append(new_heads)
            kept_heads.append([int(k) for k in keep])
            stage.advance()
    return _finish(
        g, original, model, ctx, dst, method,
        f"removed {before[0] - after[0]} of {before[0]} heads in each of {len(blocks)} attention blocks",
        magnitude="heads chosen by weight magnitude (no calibration feeds given; activation-aware is better)",
        activation="heads chosen by calibration activations; output projection refitted (ridge least squares)",
        details={
            "blocks": len(blocks),
            "score": method,
            "heads_before": before,
            "heads_after": after,
            "kept": kept_heads,
        },
    )


def _finish(g: _Graph, original: bytes, model: ModelProto, ctx: StepContext, dst: Path, method: str,
            summary: str, *, magnitude: str, activation: str, details: dict[str, Any]) -> StepResult:
    """Shared tail of the structured steps: drop dead nodes, prove the graph still runs, save, explain."""
    g.sweep()
    _smoke(original, model, ctx.calibration)
    _save(model, dst)
    how = magnitude if method == "magnitude" else activation
    return StepResult(path=Path(dst), notes=(summary, how), details=details)


def sparsify(src: Path, dst: Path, ctx: StepContext, percent: int) -> StepResult:
    """Zero the `percent`% smallest-magnitude entries of every constant MatMul/Gemm weight (per tensor)."""
    model = onnx_io.read_model(src, "prune")
    original = model.SerializeToString()
    g = _Graph(model)
    targets: list[tuple[NodeProto, int]] = []
    for node in model.graph.node:
        if node.op_type in ("MatMul", "Gemm") and len(node.input) > 1:
            value = g.const(node.input[1])
            if value is not None and value.ndim == 2 and value.dtype == np.float32 and value.size > 1:
                targets.append((node, 1))
    if not targets:
        raise SlimserveError(
            f"sparsity: no float MatMul/Gemm weights found in {Path(src).name}", hint="nothing to sparsify"
        )
    zeroed = total = 0
    for node, index in targets:
        value = g.const(node.input[index])
        assert value is not None
        k = _share(value.size, percent)
        if k == 0:
            continue
        threshold = np.partition(np.abs(value).reshape(-1), k - 1)[k - 1]
        sparse = np.where(np.abs(value) <= threshold, np.float32(0), value)
        zeroed += int((sparse == 0).sum())
        total += value.size
        g.replace_input(node, index, sparse, "sparse")
    g.sweep()
    _smoke(original, model, ctx.calibration)
    _save(model, dst)
    return StepResult(
        path=Path(dst),
        notes=(
            f"zeroed {zeroed} of {total} MatMul/Gemm weights ({percent}% per tensor, by magnitude)",
            (
                "unstructured sparsity shrinks only the zipped size: model.onnx bytes, memory and latency "
                "stay the same (onnxruntime has no sparse kernels for these dense tensors)"
            ),
        ),
        details={"zeroed": zeroed, "weights": total},
    )


def _run_ffn(src: Path, dst: Path, ctx: StepContext, options: PruneOptions) -> StepResult:
    return prune_ffn(src, dst, ctx, options.percent, options.score)


def _run_heads(src: Path, dst: Path, ctx: StepContext, options: PruneOptions) -> StepResult:
    return prune_heads(src, dst, ctx, options.percent, options.score)


def _run_sparsity(src: Path, dst: Path, ctx: StepContext, options: SparsityOptions) -> StepResult:
    return sparsify(src, dst, ctx, options.percent)


SPECS: tuple[StepSpec[Any], ...] = (
    StepSpec(
        name="prune-ffn",
        help="remove N% of the FFN intermediate units in every transformer layer (really smaller weights)",
        run=_run_ffn,
        options=PruneOptions,
        argument="percent",
    ),
    StepSpec(
        name="prune-heads",
        help="remove N% of the attention heads in every layer, rounded to whole heads (smaller weights)",
        run=_run_heads,
        options=PruneOptions,
        argument="percent",
    ),
    StepSpec(
        name="sparsity",
        help="zero the N% smallest weights: shrinks the zipped size only, not model bytes or latency",
        run=_run_sparsity,
        options=SparsityOptions,
        argument="percent",
    ),
)
