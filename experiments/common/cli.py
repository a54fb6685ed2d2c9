"""A harness's command line: the parser every harness starts from, and its one-line errors."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from experiments.common.results import REPO, RESULTS


def harness_parser(doc: str, redraw: str | None = None, out: Path | None = RESULTS) -> argparse.ArgumentParser:
    """A parser described by the first line of the harness's docstring `doc`.

    With `out`, it takes --out, the results folder, `out` by default; with `redraw` (the option's help, what a
    redraw draws again), --report-only, which redraws the harness's pages from its CSVs and runs nothing.
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    if out is not None:
        shown = out.relative_to(REPO) if out.is_relative_to(REPO) else out
        parser.add_argument("--out", type=Path, default=out, help=f"results folder (default: {shown})")
    if redraw is not None:
        parser.add_argument("--report-only", action="store_true", help=redraw)
    return parser


def fail(name: str, message: str) -> int:
    """Say what was wrong in one line on stderr, as `NAME: error: ...`; the exit status of bad input."""
    print(f"{name}: error: {message}", file=sys.stderr)
    return 2
