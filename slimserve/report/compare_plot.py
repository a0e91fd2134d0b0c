"""compare.png: fidelity against deployment size and against cold start, every candidate a labelled point.

Drawn with matplotlib's object API on the Agg canvas (no pyplot: no global backend or figure state, so it
is safe in threads and on machines without a display). `render_png` returns what it drew, read back from
the matplotlib artists, so compare.json records the plotted points and tests can check them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slimserve.report.comparison import CandidateResult, Comparison

MIB = 1024**2
OFF_CHART = 4.0  # platform size limits beyond 4× the largest deployment are listed, not drawn


def size_limits(comparison: Comparison) -> list[dict[str, Any]]:
    """Each platform's deployment size limit (unzipped, or the image limit for container platforms)."""
    limits = []
    for p in comparison.platforms:
        limit, what = p.limits.unzipped_size, "unzipped"
        if limit is None:
            limit, what = p.limits.image_size, "image"
        if limit is None:
            continue
        limits.append({"platform": p.name, "bytes": int(limit.base()), "kind": what,
                       "label": f"{p.name}: {limit.display()} {what}"})
    return limits


def _envelope(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The best fidelity reachable up to each x: the staircase a 2-D view of the frontier draws."""
    best, out = float("-inf"), []
    for p in sorted(points, key=lambda p: (p["x"], -p["y"])):
        if p["y"] > best:
            best = p["y"]
            out.append(p)
    return out


def _x(c: CandidateResult, key: str) -> float:
    assert c.package is not None and c.cold_start is not None
    return c.package.unzipped_bytes / MIB if key == "size" else float(c.cold_start.total_ms)


def render_png(comparison: Comparison, path: Path, dpi: int = 110) -> dict[str, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FormatStrFormatter

    rows = [c for c in comparison.candidates if c.ok]
    frontier = set(comparison.frontier)
    fig = Figure(figsize=(12, 5), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    ax_size, ax_cold = fig.subplots(1, 2, sharey=True)
    panels: dict[str, Any] = {}
    for key, ax, xlabel in (
        ("size", ax_size, "deployment, unzipped (MiB)"),
        ("cold_start", ax_cold, "cold start measured here (ms, median of fresh processes)"),
    ):
        points: list[dict[str, Any]] = [
            {"recipe": c.recipe, "x": round(_x(c, key), 3), "y": round(c.fidelity.mean if c.fidelity else 0.0, 6),
             "frontier": c.recipe in frontier} for c in rows]
        on = [p for p in points if p["frontier"]]
        off = [p for p in points if not p["frontier"]]
        if off:
            ax.scatter([p["x"] for p in off], [p["y"] for p in off], color="tab:gray", label="dominated", zorder=3)
        if on:
            ax.scatter([p["x"] for p in on], [p["y"] for p in on], color="tab:blue",
                       label="Pareto frontier (fidelity, size, cold start)", zorder=4)
            envelope = _envelope(on)
            ax.step([p["x"] for p in envelope], [p["y"] for p in envelope], where="post", color="tab:blue",
                    alpha=0.5, zorder=2)
        for i, p in enumerate(sorted(points, key=lambda p: (p["x"], p["y"]))):
            star = " ★" if p["recipe"] == comparison.recommendation else ""
            ax.annotate(p["recipe"] + star, (p["x"], p["y"]), textcoords="offset points",
                        xytext=(5, 5 if i % 2 == 0 else -11), fontsize=8)
        ax.set_xlabel(xlabel)
        ax.grid(True, alpha=0.3)
        ax.yaxis.set_major_formatter(FormatStrFormatter("%.4f"))
        panels[key] = {"x": xlabel, "y": "mean cosine fidelity", "points": points,
                       "labels": [t.get_text() for t in ax.texts]}
    ys = [p["y"] for p in panels["size"]["points"]]
    if ys and max(ys) - min(ys) < 0.002:  # near-identical fidelity: show a readable band, not 1e-6 noise
        ax_size.set_ylim(min(ys) - 0.001, max(ys) + 0.001)
    ax_size.set_ylabel("fidelity (mean cosine vs the original model)")

    limits = size_limits(comparison)
    largest = max((p["x"] for p in panels["size"]["points"]), default=1.0)
    right = largest * 1.2
    colors = ("tab:red", "tab:orange", "tab:purple", "tab:brown", "tab:olive", "tab:cyan", "tab:pink")
    for i, limit in enumerate(sorted(limits, key=lambda x: (x["bytes"], x["platform"]))):
        limit["drawn"] = limit["bytes"] / MIB <= OFF_CHART * largest
        if limit["drawn"]:
            right = max(right, limit["bytes"] / MIB * 1.05)
            ax_size.axvline(limit["bytes"] / MIB, color=colors[i % len(colors)], linestyle="--", label=limit["label"])
    hidden = [x["label"] for x in limits if not x["drawn"]]
    ax_size.set_xlim(left=0, right=right)
    ax_size.legend(fontsize=7, loc="lower right")
    ax_size.set_title("fidelity vs size" + (f"\n(off chart: {', '.join(hidden)})" if hidden else ""), fontsize=9)
    cold_right = max((p["x"] for p in panels["cold_start"]["points"]), default=1.0)
    ax_cold.set_xlim(left=0, right=cold_right * 1.2)
    ax_cold.set_title("fidelity vs cold start", fontsize=9)
    fig.suptitle(f"slimserve compare: {Path(comparison.model).name}"
                 + (f" · recommended {comparison.recommendation} ★" if comparison.recommendation else ""))
    fig.savefig(path, format="png")
    width, height = fig.canvas.get_width_height()
    return {**panels, "limits": limits, "frontier": sorted(frontier), "png": {"width": width, "height": height}}
