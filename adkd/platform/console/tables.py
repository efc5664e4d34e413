"""Tables that fit the terminal: names and versions are never cut; less important columns go first.

Rich shrinks every column of a table wider than the console and cuts cells with an ellipsis, so at 80
columns (and whenever output is piped, where rich assumes 80) a model name became ``adkd-…``. Here
each column says whether it must stay whole (``keep``), may wrap onto several lines (``wrap``), or is
dropped when the table does not fit (lowest ``rank`` first); the caller prints a note naming what
was dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table
from rich.text import Text

UNLIMITED = 100_000


@dataclass(frozen=True)
class Column:
    """One column: its header, alignment and how it gives way when space is short."""

    header: str
    justify: str = "left"
    keep: bool = False  # never dropped, never cut: names, versions, ids the user types next
    wrap: bool = False  # free text that may wrap at spaces instead of being dropped
    rank: int = 0  # among droppable columns, the lowest rank is dropped first
    markup: bool = False  # cells carry rich markup ("[green]FINISHED[/]"); else text as it is ("[openvino]" stays)


def _cell(column: Column, value: object) -> Text:
    return Text.from_markup(str(value)) if column.markup else Text(str(value))


def _cells(columns: Sequence[Column], rows: Sequence[Sequence[str]], i: int) -> list[Text]:
    return [Text(columns[i].header), *(_cell(columns[i], row[i]) for row in rows)]


def _widths(columns: Sequence[Column], rows: Sequence[Sequence[str]], i: int) -> tuple[int, int]:
    """(narrowest, natural) content width of column ``i``; a wrapping column can narrow to its longest word."""
    cells = _cells(columns, rows, i)
    natural = max(cell.cell_len for cell in cells)
    if not columns[i].wrap:
        return natural, natural
    words = [len(word) for cell in cells for word in cell.plain.split()]
    return max(words, default=1), natural


def _build(
    title: str | None, columns: Sequence[Column], rows: Sequence[Sequence[str]], shown: list[int], width: int
) -> Table:
    table = Table(title=title)
    sizes = {i: _widths(columns, rows, i) for i in shown}
    # Each column takes 3 characters of padding and rule, the table one more.
    spare = width - 1 - 3 * len(shown) - sum(natural for _, natural in sizes.values())
    wrapping = [i for i in shown if columns[i].wrap and sizes[i][0] < sizes[i][1]]
    for i in shown:
        col = columns[i]
        fixed = None
        if spare < 0 and i in wrapping:
            # Wrapping columns give up the shortfall in proportion to their natural width, not below a word.
            total = sum(sizes[j][1] for j in wrapping)
            fixed = max(sizes[i][0], sizes[i][1] + (spare * sizes[i][1]) // total)
        # fold (not ellipsis): should a kept cell still be too wide for the terminal, it breaks, never loses text
        table.add_column(col.header, justify=col.justify, no_wrap=not col.wrap, overflow="fold", width=fixed)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(*(_cell(columns[i], row[i]) for i in shown))
    return table


def _min_width(columns: Sequence[Column], rows: Sequence[Sequence[str]], shown: list[int]) -> int:
    return 1 + sum(3 + _widths(columns, rows, i)[0] for i in shown)


def fit_table(
    title: str | None,
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    width: int | None = None,
) -> tuple[Table, list[str]]:
    """A table no wider than ``width`` (no limit when None) and the headers of the columns left out."""
    width = width or UNLIMITED
    shown = list(range(len(columns)))
    droppable = sorted((i for i, c in enumerate(columns) if not c.keep), key=lambda i: (columns[i].rank, -i))
    while droppable and _min_width(columns, rows, shown) > width:
        shown.remove(droppable.pop(0))
    hidden = [c.header for i, c in enumerate(columns) if i not in shown]
    return _build(title, columns, rows, shown, width), hidden


def print_table(
    console: Console,
    title: str | None,
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    more: str = "",
) -> list[str]:
    """Print a fitted table; when columns were left out, one dim line names them (and ``more``, where to see them)."""
    table, hidden = fit_table(title, columns, rows, console.width)
    console.print(table)
    if hidden:
        note = f"(not shown at {console.width} columns: {', '.join(hidden)}{'; ' + more if more else ''})"
        console.print(Text(note, style="dim"))
    return hidden
