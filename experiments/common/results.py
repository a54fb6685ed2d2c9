"""Benchmark results on disk: pages stamped with machine and command, and SUMMARY.md sections.

Every harness in `experiments/bench_*` writes its files into one folder (`--out`, by default
`experiments/results/`) and then replaces its own section of that folder's SUMMARY.md, between the
markers `<!-- NAME:start -->` and `<!-- NAME:end -->`, so the summary always shows the latest run of
each benchmark and a rerun of one leaves the others alone.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from experiments.common.machine import machine_line

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "experiments" / "results"
SUMMARY = "SUMMARY.md"
SUMMARY_TITLE = "# Benchmarks: does the search pay?"


def command_line(script: str, argv: Sequence[str] | None = None, runner: str = "python") -> str:
    """The command that reproduces this run, as a user would type it from the repository root.

    `--report-only` is dropped: a harness's redraw from its CSVs shows the figures of the run that made them.
    """
    arguments = [argument for argument in (sys.argv[1:] if argv is None else argv) if argument != "--report-only"]
    return " ".join([runner, script, *(shlex.quote(argument) for argument in arguments)])


def machine_stamp(note: str = "") -> str:
    """'Machine: ' and the CPU, GPU and library versions a figure was measured with, `note` right after them."""
    return f"Machine: {machine_line()}{note}"


def stamp(command: str, note: str = "") -> str:
    """The machine and library versions a figure was measured with, and the command that measured it."""
    return f"{machine_stamp(note)}\n\nCommand: `{command}`"


def write_page(out: Path, name: str, page: str, summary: str | None = None) -> Path:
    """Write `page` as `out`/NAME.md and, given `summary`, make it NAME's section of SUMMARY.md; return the page."""
    path = Path(out) / f"{name}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page.rstrip("\n") + "\n")
    if summary is not None:
        update_summary(out, name, summary)
    return path


def update_summary(out: Path, name: str, markdown: str) -> Path:
    """Replace section `name` of `out`/SUMMARY.md with `markdown` (appending it if absent); return the path."""
    path = Path(out) / SUMMARY
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    section = f"{start}\n{markdown.strip()}\n{end}"
    text = path.read_text() if path.exists() else f"{SUMMARY_TITLE}\n"
    if start in text and end in text:
        before, _, rest = text.partition(start)
        _, _, after = rest.partition(end)
        text = before + section + after
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
