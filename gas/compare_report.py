"""How a comparison is shown: its table, and accuracy against latency as a figure (`gas compare` draws both)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gas.compare import epochs_text
from gas.errors import GasError
from gas.units import format_count

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PLOT_SUFFIXES = (".png", ".svg", ".pdf")





def _p_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}" if value >= 0.001 else "<0.001"


def format_comparison(result: Mapping[str, Any]) -> list[str]:
    """The comparison as lines: what was trained and where, a table of candidates, and any failed runs."""
    schedule_fields = result["schedule"]
    test_images = result["test_images"]
    lines = [
        f"study {result['study']} ({result['space']} space): every candidate retrained from scratch for "
        f"{epochs_text(schedule_fields['epochs'])} at {schedule_fields['resolution']}px on {result['dataset']} "
        f"({schedule_fields['train_size'] or 'all'} training images), seeds "
        f"{', '.join(map(str, result['seeds']))}, scored on its {test_images} test images",
        f"latency: median of {result['latency']['runs']} runs in turns, {result['latency']['describe']}",
    ]
    rows = result["candidates"]
    baseline_names = [row["name"] for row in rows if row["baseline"]]
    header = ["candidate", "kind", "params", "FLOPs", "latency", "test accuracy", "search"]
    header += [f"p vs {name} (Welch/paired)" for name in baseline_names]
    table = [header]
    for row in rows:
        mean, sd = row["test_accuracy_mean"], row["test_accuracy_sd"]
        accuracy = "failed" if mean is None else f"{mean:.2%}" + ("" if sd is None else f" ± {sd:.2%}")
        accuracy += f" ({len(row['runs'])})" if mean is not None else ""
        cells = [
            row["name"],
            row["kind"],
            format_count(row["params"]),
            format_count(row["flops"]),
            f"{1000 * row['latency_s']:.1f} ms",
            accuracy,
            "" if row["search_accuracy"] is None else f"{row['search_accuracy']:.2%}",
        ]
        for name in baseline_names:
            versus = row["against"].get(name)
            cells.append("" if versus is None else f"{_p_text(versus['welch_p'])} / {_p_text(versus['paired_p'])}")
        table.append(cells)
    widths = [max(len(cells[column]) for cells in table) for column in range(len(header))]
    for cells in table:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip())
    lines.append(
        "test accuracy: mean ± sd over seeds (runs finished); search: the pick's accuracy in the search, on "
        "its validation images, one seed; p: two-sided, Welch's t-test and the t-test paired by seed"
    )
    for row in rows:
        for seed, error in row["failed"].items():
            lines.append(f"{row['name']}, seed {seed}: failed: {error}")
    return lines


def write_plot(result: Mapping[str, Any], path: str | Path) -> Path:
    """Test accuracy (mean ± sd over seeds) against measured latency, picks and baselines marked: png, svg or pdf."""
    path = Path(path)
    check_plot_path(path)
    figure = comparison_figure(result)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path)
    except OSError as error:
        raise GasError(f"cannot write {path}: {error.strerror}") from None
    return path


def check_plot_path(path: str | Path) -> None:
    """One-line GasError for a plot file matplotlib would not write, before anything trains."""
    if Path(path).suffix.lower() not in PLOT_SUFFIXES:
        raise GasError(f"--plot {path}: write {', '.join(PLOT_SUFFIXES)}")


def comparison_figure(result: Mapping[str, Any]) -> Figure:
    # A bare Figure renders through the Agg canvas without pyplot, so no display or global state is touched.
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 5), dpi=120)
    axes = figure.add_subplot()
    styles = {False: ("o", "#1565c0", "picks"), True: ("s", "#ef6c00", "baselines")}
    for is_baseline, (marker, color, label) in styles.items():
        rows = [r for r in result["candidates"] if r["baseline"] == is_baseline and r["test_accuracy_mean"] is not None]
        if not rows:
            continue
        axes.errorbar(
            [1000 * row["latency_s"] for row in rows],
            [100 * row["test_accuracy_mean"] for row in rows],
            yerr=[100 * (row["test_accuracy_sd"] or 0.0) for row in rows],
            fmt=marker,
            color=color,
            capsize=4,
            markersize=7,
            label=label,
        )
        for row in rows:
            axes.annotate(
                row["name"],
                (1000 * row["latency_s"], 100 * row["test_accuracy_mean"]),
                textcoords="offset points",
                xytext=(6, 4),
                fontsize=8,
            )
    limit = result["latency"].get("limit")
    if limit:
        axes.axvline(1000 * limit, color="#424242", linestyle="--", linewidth=1, label="the study's latency limit")
    seeds = len(result["seeds"])
    axes.set_xlabel(f"latency (ms), {result['latency']['describe']}")
    axes.set_ylabel(f"test accuracy (%), mean ± sd over {seeds} seed{'s' if seeds != 1 else ''}")
    schedule_fields = result["schedule"]
    axes.set_title(
        f"{result['study']}: {result['dataset']} test split ({result['test_images']} images), "
        f"{epochs_text(schedule_fields['epochs'])} at {schedule_fields['resolution']}px",
        fontsize=10,
    )
    axes.grid(True, linewidth=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=8)
    figure.tight_layout()
    return figure
