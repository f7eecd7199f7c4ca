"""Plain-text tables for the command line and the benchmarks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def render_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *,
                 indent: int = 0, align: str = "left") -> str:
    """Columns padded to their widest cell (floats with 3 decimals, or thousands
    separators from 1000); `align` is "left" or "right"."""
    cells = [[_cell(c) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    pad = str.rjust if align == "right" else str.ljust
    lines = [[pad(h, w) for h, w in zip(headers, widths, strict=True)]]
    lines += [[pad(c, w) for c, w in zip(row, widths, strict=True)] for row in cells]
    return "\n".join((" " * indent + "  ".join(line)).rstrip() for line in lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)
