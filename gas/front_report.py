"""How a study's front is shown: the table, CSV, and the plot on the study's cost axis with its HTML page.

What the front is and where a trial sits on its axis is gas.front's; this module only draws it.
"""

from __future__ import annotations

import html
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from gas import record
from gas.errors import GasError
from gas.front import accuracy_of, axis_limit, axis_value, flops_of
from gas.space import get_space
from gas.study import front
from gas.units import format_count, format_duration

if TYPE_CHECKING:  # annotations only: `gas pareto` without --plot should not wait for matplotlib to import
    from matplotlib.figure import Figure


# ---- the table -------------------------------------------------------------------------------------


def front_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One row per front trial, cheapest first: the numbers, the space's own columns, and the genome.

    Where the study trained trials with several seeds, `accuracy` is their mean and `first_seed` the first
    training's: what a search that keeps each genome's first seed would have shown (the winner's curse).
    """
    rows = []
    for trial in front(study):
        genome = record.trial_genome(trial)
        recorded = record.trial_record(trial)
        row: dict[str, Any] = {
            "trial": trial.number,
            "accuracy": accuracy_of(trial),
        }
        if recorded.seed_accuracies:
            row["seeds"] = recorded.seeds
            row["first_seed"] = recorded.first_seed_accuracy
        row |= {
            "flops": flops_of(trial),
            "params": recorded.params,
            "budget_utilisation": recorded.budget_utilisation,
        }
        if recorded.measured_latency is not None:
            row["latency"] = recorded.measured_latency
        for key, value in get_space(genome.space).describe(genome).items():
            row.setdefault(key, value)
        row["genome"] = genome.to_dict()
        rows.append(row)
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Front rows as aligned text lines (header first); numbers right-aligned, words left-aligned."""
    if not rows:
        return []
    columns = [key for key in rows[0] if key != "genome"]
    headers = {
        "accuracy": "accuracy",
        "first_seed": "1st seed",
        "flops": "FLOPs",
        "params": "params",
        "budget_utilisation": "budget",
    }

    def cell(key: str, value: Any) -> str:
        if value is None:
            return "-"
        if key in ("accuracy", "first_seed"):
            return f"{value:.2%}"
        if key in ("flops", "params"):
            return format_count(value)
        if key == "budget_utilisation":
            return f"{value:.0%}"
        if key == "latency":
            return format_duration(value)
        return str(value)

    numeric = {"trial", "accuracy", "seeds", "first_seed", "flops", "params", "budget_utilisation", "latency"}
    table = [[headers.get(key, key) for key in columns]]
    table += [[cell(key, row.get(key)) for key in columns] for row in rows]
    widths = [max(len(line[index]) for line in table) for index in range(len(columns))]
    lines = []
    for line in table:
        cells = [
            text.rjust(width) if key in numeric else text.ljust(width)
            for key, text, width in zip(columns, line, widths, strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def write_csv(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """The front as CSV (the genome as one JSON column), via pandas."""
    import pandas as pd

    path = Path(path)
    records = [{**row, "genome": json.dumps(row["genome"], sort_keys=True)} for row in rows]
    columns = list(rows[0]) if rows else ["trial", "accuracy", "flops", "params", "budget_utilisation", "genome"]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame.from_records(records, columns=columns).to_csv(path, index=False)
    except OSError as error:
        raise GasError(f"cannot write {path}: {error.strerror}") from None
    return path


# ---- the plot --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Axis:
    """How one objective is drawn: its label, the unit its values are divided into, and its limit's name."""

    name: str  # in running text: "accuracy against FLOPs"
    label: str
    unit: float  # values on the axis are cost / unit
    limit: str


AXES = {
    "flops": Axis("FLOPs", "FLOPs at 224px (G, fvcore convention)", 1e9, "budget"),
    "params": Axis("params", "parameters at 224px (M)", 1e6, "params limit"),
    "latency": Axis("latency", "measured latency (ms; untrained trials at their prediction)", 1e-3, "latency limit"),
}


@dataclass(frozen=True)
class Point:
    trial: int
    cost: float  # on the study's axis
    flops: int | None
    accuracy: float | None = None
    params: int | None = None


@dataclass(frozen=True)
class FrontPlot:
    """What the plot shows: the front against every other trial with a place on the study's axis."""

    title: str
    objective: str  # flops, params or latency
    front: list[Point]
    dominated: list[Point]  # feasible, trained, not on the front
    infeasible: list[Point]  # over a limit: never trained (or trained, then measured over), so no accuracy
    failed: list[Point]  # raised while training
    limit: float | None  # the search's limit on this axis


def front_plot(study: optuna.Study) -> FrontPlot:
    searched = record.study_record(study)
    objective = searched.objective
    front_numbers = {trial.number for trial in front(study)}
    groups: dict[str, list[Point]] = {"front": [], "dominated": [], "infeasible": [], "failed": []}
    for trial in study.get_trials(deepcopy=False):
        cost = axis_value(trial, objective)
        if cost is None:
            continue
        recorded = record.trial_record(trial)
        point = Point(trial.number, cost, recorded.flops, None, recorded.params)
        if trial.state == TrialState.COMPLETE and trial.values:
            point = Point(trial.number, cost, flops_of(trial), accuracy_of(trial), point.params)
            groups["front" if trial.number in front_numbers else "dominated"].append(point)
        elif trial.state == TrialState.PRUNED and recorded.is_infeasible:
            groups["infeasible"].append(point)
        elif trial.state == TrialState.FAIL:
            groups["failed"].append(point)
    groups["front"].sort(key=lambda point: point.cost)
    title = f"{study.study_name}" + (f" ({searched.space} space)" if searched.space else "")
    return FrontPlot(
        title,
        objective,
        groups["front"],
        groups["dominated"],
        groups["infeasible"],
        groups["failed"],
        axis_limit(study, objective),
    )


def _staircase(points: Sequence[Point]) -> tuple[list[float], list[float]]:
    """The front drawn as steps: accuracy holds until the next, costlier trial raises it."""
    xs: list[float] = []
    ys: list[float] = []
    for index, point in enumerate(points):
        if index:
            xs.append(point.cost)
            ys.append(ys[-1])
        xs.append(point.cost)
        ys.append(point.accuracy or 0.0)
    return xs, ys


def write_plot(study: optuna.Study, path: str | Path, export_hint: str = "") -> Path:
    """Draw the front against all trials with matplotlib: .png, .svg or .pdf, or an .html page around its SVG."""
    path = Path(path)
    as_page = path.suffix.lower() in (".html", ".htm")
    if not as_page and path.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise GasError(f"--plot {path}: write .png, .svg, .pdf or .html")
    plot = front_plot(study)
    figure = front_figure(plot)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if as_page:
            path.write_text(_html_page(plot, front_rows(study), export_hint, _inline_svg(figure)), encoding="utf-8")
        else:
            figure.savefig(path)
    except OSError as error:
        raise GasError(f"cannot write {path}: {error.strerror}") from None
    return path


def front_figure(plot: FrontPlot) -> Figure:
    """The chart: accuracy against the study's cost axis, the front as steps, untrained trials as a rug."""
    # A bare Figure renders through the Agg canvas without pyplot, so no display or global state is touched.
    from matplotlib.figure import Figure

    axis = AXES[plot.objective]
    figure = Figure(figsize=(10, 5), dpi=120)
    axes = figure.add_subplot()
    if plot.dominated:
        axes.scatter(
            [point.cost / axis.unit for point in plot.dominated],
            [100 * (point.accuracy or 0.0) for point in plot.dominated],
            s=18,
            color="#9e9e9e",
            label=f"feasible, dominated ({len(plot.dominated)})",
        )
    if plot.front:
        xs, ys = _staircase(plot.front)
        axes.plot([x / axis.unit for x in xs], [100 * y for y in ys], color="#1565c0", linewidth=1.2)
        axes.scatter(
            [point.cost / axis.unit for point in plot.front],
            [100 * (point.accuracy or 0.0) for point in plot.front],
            s=36,
            color="#1565c0",
            zorder=3,
            label=f"Pareto front ({len(plot.front)})",
        )
        for point in plot.front:
            axes.annotate(
                str(point.trial),
                (point.cost / axis.unit, 100 * (point.accuracy or 0.0)),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=7,
            )
    # Untrained trials have no accuracy: draw them as ticks along the bottom edge.
    rug = axes.get_xaxis_transform()
    for points, color, marker, label in (
        (plot.infeasible, "#c62828", "x", "infeasible, not trained"),
        (plot.failed, "#ef6c00", "v", "failed while training"),
    ):
        if points:
            axes.scatter(
                [point.cost / axis.unit for point in points],
                [0.03] * len(points),
                transform=rug,
                marker=marker,
                s=22,
                color=color,
                label=f"{label} ({len(points)})",
            )
    if plot.limit:
        axes.axvline(plot.limit / axis.unit, color="#424242", linestyle="--", linewidth=1, label=axis.limit)
    # Points drawn in axes coordinates (the rug) do not widen the limits by themselves.
    every_cost = [point.cost / axis.unit for point in plot.front + plot.dominated + plot.infeasible + plot.failed]
    if plot.limit:
        every_cost.append(plot.limit / axis.unit)
    if every_cost:
        margin = (max(every_cost) - min(every_cost)) * 0.05 or max(every_cost) * 0.05 or 1.0
        axes.set_xlim(min(every_cost) - margin, max(every_cost) + margin)
    axes.set_xlabel(axis.label)
    axes.set_ylabel("proxy accuracy (%)")
    axes.set_title(plot.title)
    axes.grid(True, linewidth=0.3)
    accuracies = [100 * (point.accuracy or 0.0) for point in plot.front + plot.dominated]
    if accuracies:
        # Leave a band under the least accurate point for the rug of untrained trials.
        span = (max(accuracies) - min(accuracies)) or 5.0
        axes.set_ylim(min(accuracies) - 0.15 * span, max(accuracies) + 0.08 * span)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    figure.tight_layout()
    return figure


def _inline_svg(figure: Figure) -> str:
    """The figure as an <svg> element to put inside an HTML page, with no URL left in it."""
    import matplotlib

    buffer = io.StringIO()
    # Text stays <text>: a reader can select and find trial numbers, and a browser has the fonts to draw it.
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        # Without metadata there is no Dublin Core block, which names matplotlib's site and RDF vocabularies.
        figure.savefig(buffer, format="svg", metadata={"Creator": None, "Date": None, "Format": None, "Type": None})
    svg = buffer.getvalue()
    # The XML prolog and DOCTYPE belong to a standalone file, not to an element inside HTML.
    svg = svg[svg.index("<svg") :]
    # An HTML parser puts <svg> and xlink:href in their namespaces by itself, so the declarations can go.
    for declaration in (' xmlns="http://www.w3.org/2000/svg"', ' xmlns:xlink="http://www.w3.org/1999/xlink"'):
        svg = svg.replace(declaration, "", 1)
    return svg


def _html_page(plot: FrontPlot, rows: Sequence[dict[str, Any]], export_hint: str, chart: str) -> str:
    """A self-contained page: the chart, the front as a table, the export command, and every other charted trial."""
    front_lines = format_table(rows)
    front_table = html.escape("\n".join(front_lines)) if front_lines else "no feasible, fully trained trials yet"
    # A static chart cannot be hovered, so the numbers behind each point off the front are listed instead.
    others = []
    for state, points in (("dominated", plot.dominated), ("infeasible", plot.infeasible), ("failed", plot.failed)):
        for point in points:
            row = {
                "trial": point.trial,
                "state": state,
                "accuracy": point.accuracy,
                "flops": point.flops,
                "params": point.params,
            }
            if plot.objective == "latency":  # FLOPs and params are columns already
                row["latency"] = point.cost
            others.append(row)
    others.sort(key=lambda row: row["trial"])
    other_table = html.escape("\n".join(format_table(others))) if others else "none"
    hint = html.escape(export_hint)
    export = f"<p>Export a trial, its number for TRIAL:</p>\n<pre>{hint}</pre>" if export_hint else ""
    title = html.escape(plot.title)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}: Pareto front</title>
<style>
body {{ font-family: sans-serif; margin: 24px; color: #212121; }}
svg {{ max-width: 100%; height: auto; }}
pre {{ background: #f5f5f5; padding: 6px; }}
</style>
</head>
<body>
<h2>{title}: accuracy against {AXES[plot.objective].name}</h2>
{chart}
<h3>Pareto front (feasible, fully trained), cheapest first</h3>
<pre>{front_table}</pre>
{export}
<details>
<summary>Other trials: {len(plot.dominated)} dominated, {len(plot.infeasible)} infeasible (not trained), \
{len(plot.failed)} failed</summary>
<pre>{other_table}</pre>
</details>
</body>
</html>
"""
