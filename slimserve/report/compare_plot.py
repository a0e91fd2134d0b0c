"""compare.png: fidelity against deployment size and against cold start, then the platform's view.

Three panels, every candidate a labelled point:
- fidelity vs deployment size: the Pareto frontier (selection.pareto_frontier: no other candidate at least
  as small and at least as faithful) as a staircase, each platform's size limit as a vertical line;
- fidelity vs cold start measured here;
- cold start projected onto the platform (at the memory setting `check` recommends, or --memory) against
  peak memory: the numbers a deployment meets, with each candidate's memory setting above its peak RSS.
The fidelity budget (--min-fidelity, else the task metric's default floor) is a horizontal line on both
fidelity panels, so a point under it is visibly out.

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
COLORS = ("tab:red", "tab:orange", "tab:purple", "tab:brown", "tab:olive", "tab:cyan", "tab:pink")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")


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


def fidelity_budget(comparison: Comparison) -> dict[str, Any]:
    """The floor a recommendation must clear: --min-fidelity, else the default of the candidates' metric."""
    from slimserve.tasks import default_min_fidelity, ranked_metric

    metric = ranked_metric(next((c.fidelity.metric for c in comparison.candidates if c.fidelity is not None), None))
    given = comparison.options.min_fidelity
    value = given if given is not None else default_min_fidelity(metric)
    return {"metric": metric, "value": value, "source": "--min-fidelity" if given is not None else "task default"}


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


def _label(ax: Any, points: list[dict[str, Any]], recommended: str | None) -> None:
    for i, p in enumerate(sorted(points, key=lambda p: (p["x"], p["y"]))):
        star = " ★" if p["recipe"] == recommended else ""
        ax.annotate(p["recipe"] + star, (p["x"], p["y"]), textcoords="offset points",
                    xytext=(5, 5 if i % 2 == 0 else -11), fontsize=8)


def projected_points(comparison: Comparison) -> list[dict[str, Any]]:
    """Per platform and measured candidate: cold start projected onto the platform at the memory setting
    its verdict was judged at (what `check` shows), peak RSS measured here, and that memory setting."""
    points = []
    for profile in comparison.platforms:
        for c in comparison.measured:
            v = c.verdict(profile.name)
            if v is None or v.projection is None or c.cold_start is None:
                continue
            points.append({"platform": profile.name, "recipe": c.recipe, "x": round(v.projection.total_ms, 1),
                           "y": round(c.cold_start.peak_rss_mb, 1), "memory_mb": v.projection.memory_mb,
                           "vcpus": round(v.projection.vcpus, 3), "fits": v.fits})
    return points


def _platform_panel(ax: Any, comparison: Comparison) -> dict[str, Any]:
    """Projected cold start (x) against peak RSS (y); a dash at each memory setting, joined to its point."""
    points = projected_points(comparison)
    # Platforms whose projections coincide (two Lambda profiles share memory and CPU rules) draw as one series.
    series: dict[tuple[Any, ...], list[str]] = {}
    for name in dict.fromkeys(p["platform"] for p in points):
        key = tuple((p["recipe"], p["x"], p["y"], p["memory_mb"]) for p in points if p["platform"] == name)
        series.setdefault(key, []).append(name)
    for i, names in enumerate(series.values()):
        mine = [p for p in points if p["platform"] == names[0]]
        color, label = COLORS[i % len(COLORS)], ", ".join(names)
        ax.scatter([p["x"] for p in mine], [p["y"] for p in mine], color=color, marker=MARKERS[i % len(MARKERS)],
                   label=f"{label}: peak RSS", zorder=4, alpha=0.8)
        ax.scatter([p["x"] for p in mine], [p["memory_mb"] for p in mine], color=color, marker="_", s=200,
                   label=f"{label}: memory setting", zorder=3)
        for p in mine:
            ax.plot([p["x"], p["x"]], [p["y"], p["memory_mb"]], color=color, alpha=0.3, zorder=2)
    first = [p for p in points if series and p["platform"] == next(iter(series.values()))[0]]
    _label(ax, first, comparison.recommendation)
    xlabel = "cold start projected onto the platform (ms, estimate)"
    ax.set_xlabel(xlabel)
    ax.set_ylabel("MB: peak RSS measured here (point), memory setting (dash)")
    ax.grid(True, alpha=0.3)
    if points:
        ax.set_xlim(left=0, right=max(p["x"] for p in points) * 1.25)
        ax.set_ylim(bottom=0, top=max(max(p["y"], p["memory_mb"]) for p in points) * 1.15)
        ax.legend(fontsize=7, loc="best")
        title = "on the platform: cold start vs memory"
    else:
        title = "on the platform: no projection (no platform measures CPU by memory)"
        ax.text(0.5, 0.5, "no projection", transform=ax.transAxes, ha="center", va="center", color="tab:gray")
    ax.set_title(title, fontsize=9)
    return {"x": xlabel, "y": "peak RSS (MB) and memory setting (MB)", "points": points,
            "labels": [t.get_text() for t in ax.texts]}


def render_png(comparison: Comparison, path: Path, dpi: int = 110) -> dict[str, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FormatStrFormatter

    rows = [c for c in comparison.candidates if c.ok]
    frontier = set(comparison.frontier)
    budget = fidelity_budget(comparison)
    metric_label = f"mean {budget['metric']}"
    fig = Figure(figsize=(17, 5.5), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    ax_size, ax_cold, ax_platform = fig.subplots(1, 3)
    ax_cold.sharey(ax_size)
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
            ax.scatter([p["x"] for p in off], [p["y"] for p in off], color="tab:gray",
                       label="dominated (another is as small and as faithful)", zorder=3)
        if on:
            ax.scatter([p["x"] for p in on], [p["y"] for p in on], color="tab:blue",
                       label="Pareto frontier (size vs fidelity)", zorder=4)
            if key == "size":  # the staircase is the frontier's shape on the size axis only
                envelope = _envelope(on)
                ax.step([p["x"] for p in envelope], [p["y"] for p in envelope], where="post", color="tab:blue",
                        alpha=0.5, zorder=2)
        line = ax.axhline(budget["value"], color="tab:green", linestyle=":",
                          label=f"fidelity budget: {metric_label} ≥ {budget['value']:g} ({budget['source']})")
        budget[f"drawn_{key}"] = float(line.get_ydata()[0])
        _label(ax, points, comparison.recommendation)
        ax.set_xlabel(xlabel)
        ax.grid(True, alpha=0.3)
        ax.yaxis.set_major_formatter(FormatStrFormatter("%.4f"))
        panels[key] = {"x": xlabel, "y": f"{metric_label} fidelity", "points": points,
                       "labels": [t.get_text() for t in ax.texts]}
    ys = [p["y"] for p in panels["size"]["points"]] + [budget["value"]]
    pad = max(0.001, (max(ys) - min(ys)) * 0.08)  # the budget line is always on the chart
    ax_size.set_ylim(min(ys) - pad, max(ys) + pad)
    low, high = (float(y) for y in ax_size.get_ylim())
    budget["visible"] = low <= budget["value"] <= high
    ax_size.set_ylabel(f"fidelity ({metric_label} vs the original model)")

    limits = size_limits(comparison)
    largest = max((p["x"] for p in panels["size"]["points"]), default=1.0)
    right = largest * 1.2
    for i, limit in enumerate(sorted(limits, key=lambda x: (x["bytes"], x["platform"]))):
        limit["drawn"] = limit["bytes"] / MIB <= OFF_CHART * largest
        if limit["drawn"]:
            right = max(right, limit["bytes"] / MIB * 1.05)
            ax_size.axvline(limit["bytes"] / MIB, color=COLORS[i % len(COLORS)], linestyle="--",
                            label=limit["label"])
    hidden = [x["label"] for x in limits if not x["drawn"]]
    ax_size.set_xlim(left=0, right=right)
    ax_size.legend(fontsize=7, loc="lower right")
    ax_size.set_title("fidelity vs size" + (f"\n(off chart: {', '.join(hidden)})" if hidden else ""), fontsize=9)
    cold_right = max((p["x"] for p in panels["cold_start"]["points"]), default=1.0)
    ax_cold.set_xlim(left=0, right=cold_right * 1.2)
    ax_cold.set_title("fidelity vs cold start (this machine)", fontsize=9)
    panels["platform"] = _platform_panel(ax_platform, comparison)
    fig.suptitle(f"slimserve compare: {Path(comparison.model).name}"
                 + (f" · recommended {comparison.recommendation} ★" if comparison.recommendation else ""))
    fig.savefig(path, format="png")
    width, height = fig.canvas.get_width_height()
    return {**panels, "limits": limits, "budget": budget, "frontier": sorted(frontier),
            "png": {"width": width, "height": height}}
