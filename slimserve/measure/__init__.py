"""Measurements, each with exactly one implementation: reports and checks only read these values.

- size of a deployment: `packagers` build the real artifacts; `PackageSize` holds what they weigh.
- cold start, peak memory and the worst accepted request: `coldstart.measure_cold_start` runs the real
  handler in fresh interpreters.
- fidelity: `slimserve.optimizer.fidelity`; latency of a model file: `latency.measure_latency`; the warm
  timing both use: `warm.warm_median_ms`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class PackageSize:
    """Bytes of everything that would be deployed: model + handler + runtime closure for the target."""

    unzipped_bytes: int
    zipped_bytes: int
    parts: dict[str, int] = field(default_factory=dict)  # e.g. {"layer.zip": n, "function.zip": n}
    unzipped_parts: dict[str, int] = field(default_factory=dict)
    layers: int = 1
    image_bytes: int | None = None  # uncompressed image size, for container targets

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ColdStart:
    """Medians over `runs` fresh processes that see only the deployable files.

    `python` is the interpreter version actually used; `fallback` says why it differs from the target.
    `peak_rss_mb` is the peak after the small sample requests; `worst_ms` and `worst_peak_rss_mb` are the
    time and the process's peak after the largest request the handler's limits accept (`worst_request`
    says what it was), on `cpus` CPUs. None when no worst request was run.
    """

    import_ms: float
    load_ms: float
    first_inference_ms: float
    total_ms: float
    warm_ms: float
    peak_rss_mb: float
    runs: int
    python: str
    fallback: str | None = None
    samples: dict[str, list[float]] = field(default_factory=dict)
    worst_ms: float | None = None
    worst_peak_rss_mb: float | None = None
    worst_request: str = ""
    cpus: int = 1
    ttft_ms: float | None = None  # text generation: time to first token of the sample request
    tokens_per_s: float | None = None  # text generation: decode tokens/s after the first token
    snapshot_hook_ms: float | None = None  # SnapStart: the before-snapshot hook (a warm-up inference)
    restore_hook_ms: float | None = None  # SnapStart: the after-restore hook

    @property
    def max_rss_mb(self) -> float:
        """The process's peak over everything it ran: what the memory setting must hold."""
        return max(self.peak_rss_mb, self.worst_peak_rss_mb or 0.0)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
