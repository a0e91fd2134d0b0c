"""One report value for `slimserve check`, and one renderer per output format.

(compare's and build's report values live beside it, in `comparison.py` and `build_report.py`, each with
its own table of renderers; the number formatting below is shared by all three.)

`Report` holds what was measured once (package size, cold start, peak RSS) and every platform's verdict,
sorted deterministically (platforms by name, findings by rule order). Each format is its own module with
the same `render(report, out)` signature, chosen from `RENDERERS`; renderers never decide the exit code.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from slimserve.measure import ColdStart, PackageSize
from slimserve.profiles.rules import PlatformVerdict

# format name -> module under slimserve.report (imported when used, so rich loads only for text output)
RENDERERS: dict[str, str] = {
    "text": "text",
    "json": "json_",
    "markdown": "markdown",
    "junit": "junit",
    "github": "github",
}
FORMATS = tuple(RENDERERS)


@dataclass(frozen=True)
class Report:
    path: str
    python: str
    arch: str
    package: PackageSize
    cold_start: ColdStart
    platforms: tuple[PlatformVerdict, ...]
    model: Mapping[str, Any] = field(default_factory=dict)  # path, bytes, recipe, fidelity (from the manifest)
    host_vcpus: float = 1.0

    @property
    def fits(self) -> bool:
        return all(p.fits for p in self.platforms)

    @property
    def peak_rss_mb(self) -> float:
        """The process's peak, after the worst accepted request when it was measured."""
        return self.cold_start.max_rss_mb

    def verdict(self, platform: str) -> PlatformVerdict:
        """The verdict for one platform by name (KeyError if it was not checked)."""
        for v in self.platforms:
            if v.name == platform:
                return v
        raise KeyError(platform)


def make_report(*, path: str, python: str, arch: str, package: PackageSize, cold_start: ColdStart,
                verdicts: Sequence[PlatformVerdict], model: Mapping[str, Any] | None = None,
                host_vcpus: float = 1.0) -> Report:
    """The one constructor that fixes the order of everything a renderer walks."""
    platforms = tuple(sorted(verdicts, key=lambda v: v.name))
    return Report(path=path, python=python, arch=arch, package=package, cold_start=cold_start,
                  platforms=platforms, model=dict(model or {}), host_vcpus=host_vcpus)


def load_renderer(table: Mapping[str, str], fmt: str) -> Any:
    """The `render` function of the module `table[fmt]` names (check's, compare's and build's tables)."""
    if fmt not in table:
        raise ValueError(f"unknown report format {fmt!r}")
    return importlib.import_module(f"slimserve.report.{table[fmt]}").render


def renderer(fmt: str) -> Callable[[Report, TextIO], None]:
    render: Callable[[Report, TextIO], None] = load_renderer(RENDERERS, fmt)
    return render


PROJECTION_NOTE = ("estimates project the cold start measured here onto the platform: "
                   "projected = measured × max(1, vCPUs used here / platform vCPUs at that memory)")


def fmt_value(value: float | str | None, unit: str) -> str:
    """A measured or limit value for tables: '172 MiB', '2.53 s', '3.12', '—'."""
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    if unit == "ms":
        return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:,.0f} ms"
    if unit == "count":
        return f"{value:,.0f}"
    if unit == "cosine":
        return f"{value:.4f}"
    shown = f"{value:,.2f}" if abs(value) < 10 else f"{value:,.1f}" if abs(value) < 100 else f"{value:,.0f}"
    return f"{shown} {unit}".strip()


def fmt_bytes(n: float) -> str:
    mib = n / 1024**2
    if mib < 1:
        return f"{n / 1024:,.1f} KiB"
    return f"{mib:,.1f} MiB" if mib < 100 else f"{mib:,.0f} MiB"


def verdict_line(v: PlatformVerdict) -> str:
    """'fits at 384 MB (recommended 384 MB)' / 'does not fit at 128 MB (recommended 640 MB)'."""
    head = "fits" if v.fits else "does not fit"
    at = f" at {v.memory_mb:,} MB" if v.memory_mb is not None else ""
    rec = (f"recommended {v.recommended_memory_mb:,} MB" if v.recommended_memory_mb is not None
           else "no memory setting meets every constraint")
    return f"{head}{at} ({rec})"
