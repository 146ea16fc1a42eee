"""The plain-text tables the evaluation commands print: one layout for all of them.

>>> print(text_table("detector", ["standard", "alerts"], [("default", ["48.4", "45"])]))
detector  standard  alerts
--------------------------
default       48.4      45
"""

from __future__ import annotations

from collections.abc import Sequence


def text_table(
    first: str, columns: Sequence[str], rows: Sequence[tuple[str, Sequence[str]]]
) -> str:
    """A header naming `first` and `columns`, a rule, then one line per (name, cells) row;
    names left-aligned, cells right-aligned under their column, each as wide as it needs."""
    name_width = max([len(first), *(len(name) for name, _ in rows)])
    widths = [
        max([len(column), *(len(cells[j]) for _, cells in rows)])
        for j, column in enumerate(columns)
    ]
    header = f"{first:<{name_width}}  " + "  ".join(
        f"{column:>{w}}" for column, w in zip(columns, widths, strict=True)
    )
    lines = [header, "-" * len(header)]
    for name, cells in rows:
        lines.append(
            f"{name:<{name_width}}  "
            + "  ".join(f"{cell:>{w}}" for cell, w in zip(cells, widths, strict=True))
        )
    return "\n".join(lines)
