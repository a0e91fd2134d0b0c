"""The blocks structured pruning finds by graph pattern: transformer FFN blocks (MatMul -> elementwise
activation -> MatMul) and attention blocks (Q/K/V projections, head split, Softmax, merge, output
projection), and the rewrite of the shape constants that spell the head count."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from slimserve.errors import SlimserveError
from slimserve.optimizer.prune_graph import PruneGraph, weight, weight_of

if TYPE_CHECKING:
    from onnx import NodeProto


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

# ----------------------------------------------------------------------------------------- FFN blocks


@dataclass
class FfnBlock:
    up: NodeProto  # MatMul X @ W1 [H, I]
    down: NodeProto  # MatMul act @ W2 [I, O]
    width: int  # I
    vectors: list[tuple[NodeProto, int]] = field(default_factory=list)  # constants with last dim I

    @property
    def activation(self) -> str:
        return str(self.down.input[0])


def find_ffn_blocks(g: PruneGraph) -> list[FfnBlock]:
    blocks = []
    for node in g.graph.node:
        w1 = weight(g, node)
        if w1 is None or w1.shape[1] < 2:
            continue
        block = _trace_ffn(g, node, int(w1.shape[1]))
        if block is not None:
            blocks.append(block)
    return blocks


def _trace_ffn(g: PruneGraph, up: NodeProto, width: int) -> FfnBlock | None:
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
                w2 = weight(g, c)
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
    return FfnBlock(up=up, down=down, width=width, vectors=vectors)


# ----------------------------------------------------------------------------------- attention blocks


@dataclass
class Projection:
    matmul: NodeProto
    vectors: list[tuple[NodeProto, int]]  # per-channel constants between MatMul and Reshape (bias)
    split: NodeProto  # the Reshape [.., heads, head_dim]


@dataclass
class AttentionBlock:
    q: Projection
    k: Projection
    v: Projection
    merge: NodeProto  # Reshape [.., heads * head_dim]
    out: NodeProto  # MatMul ctx @ Wo [A, H]
    heads: int
    head_dim: int

    @property
    def context(self) -> str:
        return str(self.out.input[0])


def _walk_up(g: PruneGraph, start: str, through: frozenset[str], target: str, limit: int = 8) -> list[NodeProto]:
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
    g: PruneGraph, start: str, through: frozenset[str], target: str, limit: int = 8
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


def _projection(g: PruneGraph, split: NodeProto) -> Projection | None:
    """The constant-weight MatMul (and bias) feeding a head-split Reshape."""
    name = split.input[0]
    vectors: list[tuple[NodeProto, int]] = []
    for _ in range(6):
        node = g.producer.get(name)
        if node is None:
            return None
        if weight(g, node) is not None:
            return Projection(matmul=node, vectors=vectors, split=split)
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


def find_attention_blocks(g: PruneGraph) -> list[AttentionBlock]:
    blocks = []
    for softmax in [n for n in g.graph.node if n.op_type == "Softmax"]:
        block = _trace_attention(g, softmax)
        if block is not None:
            blocks.append(block)
    return blocks


def _trace_attention(g: PruneGraph, softmax: NodeProto) -> AttentionBlock | None:
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
    if out is None or weight(g, out) is None or out.input[0] == out.input[1]:
        return None
    width = {int(weight_of(g, p.matmul).shape[1]) for p in (q, k, v)}
    wo = weight_of(g, out)
    if len(width) != 1 or wo.shape[0] not in width:
        return None
    heads, head_dim = _head_geometry(g, q.split, width.pop())
    return AttentionBlock(q=q, k=k, v=v, merge=merge, out=out, heads=heads, head_dim=head_dim)


def _shape_entry(g: PruneGraph, name: str, pos: int) -> int | None:
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


def _locate_piece(g: PruneGraph, concat: NodeProto, pos: int) -> tuple[int, int] | None:
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


def _head_geometry(g: PruneGraph, split: NodeProto, width: int) -> tuple[int, int]:
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


def rewrite_shape_entry(g: PruneGraph, node: NodeProto, index: int, pos: int, old: int, new: int) -> None:
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
    rewrite_shape_entry(g, producer, piece, inner, old, new)
