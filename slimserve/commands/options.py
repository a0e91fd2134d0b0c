"""Click options several commands share, declared once: the target Python, CPU architecture and numpy build.

`--python`'s default and `--arch`'s choices come from `packagers.target` (the one place that knows which
targets a runtime closure can be built for), so `package`, `check`, `compare` and `build` cannot drift.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from slimserve.packagers.target import ARCHES, DEFAULT_PYTHON, NUMPY_BUILDS

F = TypeVar("F", bound=Callable[..., Any])

PYTHON_HELP = "Target Python version."
ARCH_HELP = "Target CPU architecture."


def python_option(text: str = PYTHON_HELP) -> Callable[[F], F]:
    """`--python X.Y` (default: DEFAULT_PYTHON), passed as `python`."""
    return click.option("--python", "python", default=DEFAULT_PYTHON, show_default=True, metavar="X.Y", help=text)


def arch_option(text: str = ARCH_HELP) -> Callable[[F], F]:
    """`--arch x86_64|arm64` (default: the first of ARCHES), passed as `arch`."""
    return click.option("--arch", "arch", type=click.Choice(ARCHES), default=ARCHES[0], show_default=True,
                        help=text)


def numpy_option() -> Callable[[F], F]:
    """`--numpy pypi|no-blas` (default pypi), passed as `numpy`: which numpy the runtime closure ships."""
    return click.option("--numpy", "numpy", type=click.Choice(NUMPY_BUILDS), default=NUMPY_BUILDS[0],
                        show_default=True,
                        help="numpy in the runtime: PyPI's wheel, or no-blas: built here without OpenBLAS for "
                             "the target's glibc (about 8 MB off the zipped layer; this machine's architecture only; once "
                             "about 4 minutes; needs slimserve[numpy-build]).")
