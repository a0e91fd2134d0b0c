"""Warm latency: the median of timed calls after a warm-up. The one implementation of that measurement.

Standard library only: `latency.measure_latency` calls it in this process, and `coldstart`'s probe runs
this same source inside the fresh interpreter that holds the deployed handler (which cannot import
slimserve).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def warm_median_ms(call: Callable[[], object], runs: int, warmup: int = 1) -> float:
    """Median wall time in ms of `runs` calls of `call`, after `warmup` untimed calls; NaN when runs is 0."""
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples) if samples else float("nan")
