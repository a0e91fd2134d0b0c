"""`compare --format text` (the default): the comparison as a rich table (same cells as compare.md),
failed recipes and the recommendation under it; plain text when written to a file or pipe."""

from __future__ import annotations

from typing import TextIO

from slimserve.report.compare_table import FRONTIER_MARK, RECOMMENDED_MARK, table
from slimserve.report.comparison import Comparison


def render(comparison: Comparison, out: TextIO) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    # A fixed width off a terminal keeps files, pipes and golden snapshots byte-stable (and wide enough
    # for one column per platform).
    console = Console(file=out, width=None if out.isatty() else 220, highlight=False, emoji=False)
    header, rows = table(comparison)
    grid = Table(title=f"slimserve compare: {comparison.model}", title_justify="left")
    for i, name in enumerate(header):
        grid.add_column(name, justify="left" if i < 2 else "right")
    for row in rows:
        grid.add_row(*row)
    console.print(grid)
    for c in comparison.candidates:
        if c.error:
            console.print(f"[red]failed[/red] {escape(c.recipe)}: {escape(c.error)}")  # an error may hold [..]
    console.print(f"{FRONTIER_MARK} Pareto frontier   {RECOMMENDED_MARK} recommended")
    if comparison.recommendation:
        console.print(f"recommended: [bold]{escape(comparison.recommendation)}[/bold] "
                      f"({escape(comparison.recommendation_reason)})")
    else:
        console.print(f"no recommendation: {comparison.recommendation_reason}", markup=False)
