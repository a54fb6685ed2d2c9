"""Result tables: markdown tables as the harnesses draw them, and CSV files as they write them."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A pipe table of cells already formatted (each is written with str())."""
    lines = ["| " + " | ".join(str(cell) for cell in line) + " |" for line in [header, *rows]]
    lines.insert(1, "|" + "---|" * len(header))
    return "\n".join(lines)


def frame_markdown(frame: pd.DataFrame, floatfmt: str = "g", index: bool = False) -> str:
    """A data frame as a pipe table, floats in `floatfmt`, without its index unless asked."""
    return frame.to_markdown(index=index, floatfmt=floatfmt)


def write_csv(path: Path, frame: pd.DataFrame) -> Path:
    """A data frame as pandas writes it, without its index, its folder made if needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


def write_rows(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Rows of dicts with the csv module: columns in the order they first appear, a missing value empty."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path
