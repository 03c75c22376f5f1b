"""Plain-text tables: columns padded to a common width for terminals, and Markdown tables for reports."""

from __future__ import annotations

from collections.abc import Sequence


def aligned(lines: Sequence[Sequence[str]], *, right: bool = False) -> str:
    """``lines`` of cells as text, each column padded to its widest cell and columns two spaces apart.

    Args:
        lines: rows of cells, the header first; every row the same length.
        right: right-align the cells (numbers), else left-align them (names), without trailing spaces.

    Returns:
        The table, one line per row, without a final newline.
    """
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))] if lines else []
    pad = str.rjust if right else str.ljust
    return "\n".join("  ".join(pad(cell, w) for cell, w in zip(line, widths)).rstrip() for line in lines)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table, the first column left-aligned and the others right-aligned."""
    align = [":---"] + ["---:"] * (len(header) - 1)
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines) + "\n"
