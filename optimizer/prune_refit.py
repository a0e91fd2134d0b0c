"""Scoring what to prune and refitting what stays: activation statistics on calibration feeds (or weight
magnitude), the indices kept, and the ridge least-squares reconstruction of the next layer's weights."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from slimserve.optimizer import activations
from slimserve.optimizer.prune_blocks import AttentionBlock, FfnBlock
from slimserve.optimizer.prune_graph import PruneGraph, weight_of
from slimserve.optimizer.steps.base import Feed

if TYPE_CHECKING:
    from onnx import NodeProto


_MAX_TOKENS = 4096  # calibration tokens kept per block (memory: tokens x width float32)
_RIDGE = 0.1  # ridge strength relative to the mean Gram diagonal (0.001..3 tried on MiniLM; 0.1 was best)


def collect_activations(g: PruneGraph, names: Sequence[str], feeds: Sequence[Feed]) -> list[np.ndarray]:
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


def _output_bias(g: PruneGraph, matmul: NodeProto) -> tuple[NodeProto, int] | None:
    """The constant bias added right after `matmul` (its only consumer being that Add), if any."""
    consumers = g.consumers.get(matmul.output[0], [])
    if len(consumers) != 1 or consumers[0].op_type != "Add" or matmul.output[0] in g.output_names:
        return None
    add = consumers[0]
    width = weight_of(g, matmul).shape[1]
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


def ffn_scores(
    g: PruneGraph, blocks: Sequence[FfnBlock], acts: Sequence[np.ndarray] | None
) -> list[np.ndarray]:
    """Unit importance: std(act) x ||W2 row|| with calibration, else ||W1 col|| x ||W2 row||.

    With calibration a dropped unit's mean output moves into the bias, so only its spread is lost.
    """
    down_norms = [np.linalg.norm(weight_of(g, b.down).astype(np.float64), axis=1) for b in blocks]
    if acts is None:
        return [
            np.linalg.norm(weight_of(g, b.up).astype(np.float64), axis=0) * n
            for b, n in zip(blocks, down_norms)
        ]
    return [a.astype(np.float64).std(axis=0) * n for a, n in zip(acts, down_norms)]


def head_scores(
    g: PruneGraph, blocks: Sequence[AttentionBlock], acts: Sequence[np.ndarray] | None
) -> list[np.ndarray]:
    """Head importance: RMS of the head's centred output (ctx_h - mean) @ Wo_h, else ||Wv_h|| x ||Wo_h||."""
    scores = []
    for i, b in enumerate(blocks):
        wo = weight_of(g, b.out).astype(np.float64).reshape(b.heads, b.head_dim, -1)
        if acts is None:
            wv = weight_of(g, b.v.matmul).astype(np.float64).reshape(-1, b.heads, b.head_dim)
            scores.append(np.linalg.norm(wv, axis=(0, 2)) * np.linalg.norm(wo, axis=(1, 2)))
            continue
        ctx = acts[i].astype(np.float64)
        ctx = (ctx - ctx.mean(axis=0)).reshape(len(ctx), b.heads, b.head_dim)
        energy = [np.mean(np.sum((ctx[:, h, :] @ wo[h]) ** 2, axis=1)) for h in range(b.heads)]
        scores.append(np.sqrt(np.asarray(energy)))
    return scores


def shrink_down(g: PruneGraph, matmul: NodeProto, keep: np.ndarray, acts: np.ndarray | None) -> None:
    """Keep only rows `keep` of `matmul`'s weight; with activations, reconstruct them and shift the bias."""
    w = weight_of(g, matmul)
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


def keep_indices(scores: np.ndarray, drop: int) -> np.ndarray:
    """Indices to keep (in original order) after dropping the `drop` lowest-scoring ones; ties are stable."""
    order = np.argsort(scores, kind="stable")
    return np.sort(order[drop:])
