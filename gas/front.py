"""The Pareto front of a study (accuracy against its cost axis): which trials are on it, picks, and how to show it.

The cost axis is the study's objective: FLOPs unless the search said params or measured latency.

The front is made of feasible, fully trained trials only. The study contract keeps infeasible proposals
out of COMPLETE (they are PRUNED with a positive constraint), so the front computed here, Optuna's
`study.best_trials` and optuna-dashboard's Pareto plot (which looks at COMPLETE trials only) agree.

Picking one trial off the front (`gas export --pick`):
    best               the most accurate trial on the front.
    knee               where the front bends: with accuracy and cost each scaled to [0, 1] over the front,
                       the trial that gains the most scaled accuracy over scaled cost (equivalently, the
                       one farthest above the straight line from the cheapest to the most accurate trial).
                       Both ends score 0; ties go to the more accurate trial, so a front of one or two
                       trials has its most accurate trial as the knee.
    max-acc-under B    the most accurate front trial with FLOPs <= B (also the most accurate of all
                       feasible trained trials within B, since anything dominating it is cheaper still).
    fastest-over A     the front trial with the lowest measured latency among those with proxy accuracy
                       >= A (e.g. 0.9 or 90%); by the cost axis where the study measured no latency.
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
from optuna.trial import FrozenTrial, TrialState

from gas import study as record
from gas.errors import GasError
from gas.space import get_space
from gas.study import TrialKey, is_infeasible, study_budget
from gas.units import format_count, format_duration, parse_count

if TYPE_CHECKING:  # annotations only: `gas pareto` without --plot should not wait for matplotlib to import
    from matplotlib.figure import Figure

PICKS = ("best", "knee", "max-acc-under", "fastest-over")


# ---- choosing a trial ------------------------------------------------------------------------------


def accuracy_of(trial: FrozenTrial) -> float:
    return float(trial.values[0])


def cost_of(trial: FrozenTrial) -> float:
    """The trial's value on the study's cost axis (FLOPs, params or seconds)."""
    return float(trial.values[1])


def flops_of(trial: FrozenTrial) -> int:
    return int(trial.user_attrs.get(TrialKey.FLOPS, trial.values[1]))


def latency_of(trial: FrozenTrial) -> float | None:
    value = trial.user_attrs.get(TrialKey.MEASURED_LATENCY)
    return None if value is None else float(value)


def knee_point(front_trials: Sequence[FrozenTrial]) -> FrozenTrial:
    """The front's knee (see the module docstring for the definition)."""
    if not front_trials:
        raise GasError("the front is empty, so it has no knee")
    accuracies = [accuracy_of(trial) for trial in front_trials]
    costs = [cost_of(trial) for trial in front_trials]
    accuracy_span = (max(accuracies) - min(accuracies)) or 1.0
    cost_span = (max(costs) - min(costs)) or 1.0

    def gain(trial: FrozenTrial) -> float:
        scaled_accuracy = (accuracy_of(trial) - min(accuracies)) / accuracy_span
        scaled_cost = (cost_of(trial) - min(costs)) / cost_span
        return scaled_accuracy - scaled_cost

    return max(front_trials, key=lambda trial: (gain(trial), accuracy_of(trial), -cost_of(trial), -trial.number))


def parse_pick(words: Sequence[str]) -> tuple[str, float | None]:
    """('best', None), ('knee', None), ('max-acc-under', FLOPs) or ('fastest-over', accuracy) from `--pick` words."""
    text = " ".join(words).strip()
    kind, _, rest = text.replace("=", " ", 1).partition(" ")
    rest = rest.strip()
    if kind in ("best", "knee") and not rest:
        return kind, None
    if kind == "max-acc-under" and rest:
        return kind, parse_count(rest, "max-acc-under budget")
    if kind == "fastest-over" and rest:
        try:
            accuracy = float(rest.removesuffix("%")) / (100 if rest.endswith("%") else 1)
        except ValueError:
            accuracy = -1.0
        if not 0.0 <= accuracy <= 1.0:
            raise GasError(f"--pick fastest-over {rest!r}: give an accuracy like 0.9 or 90%")
        return kind, accuracy
    raise GasError(
        f"--pick {text!r} is not one of: best, knee, max-acc-under BUDGET (e.g. max-acc-under 2G), "
        "fastest-over ACCURACY (e.g. fastest-over 90%)"
    )


def pick_trial(study: optuna.Study, kind: str, budget: float | None = None) -> FrozenTrial:
    """The front trial that `--pick kind [value]` names (value: FLOPs for max-acc-under, accuracy for fastest-over)."""
    front_trials = record.front(study)
    if not front_trials:
        raise GasError(f"study {study.study_name!r} has no feasible, fully trained trials yet, so nothing to pick")
    if kind == "best":
        return max(front_trials, key=lambda trial: (accuracy_of(trial), -cost_of(trial), -trial.number))
    if kind == "knee":
        return knee_point(front_trials)
    if kind == "max-acc-under" and budget is not None:
        within = [trial for trial in front_trials if flops_of(trial) <= budget]
        if not within:
            cheapest = front_trials[0]
            raise GasError(
                f"no front trial of {study.study_name!r} has at most {format_count(budget)} FLOPs; the cheapest, "
                f"trial {cheapest.number}, has {format_count(flops_of(cheapest))}"
            )
        return max(within, key=lambda trial: (accuracy_of(trial), -flops_of(trial), -trial.number))
    if kind == "fastest-over" and budget is not None:
        over = [trial for trial in front_trials if accuracy_of(trial) >= budget]
        if not over:
            best = max(accuracy_of(trial) for trial in front_trials)
            raise GasError(
                f"no front trial of {study.study_name!r} reaches {budget:.2%} proxy accuracy; the best has {best:.2%}"
            )

        def speed(trial: FrozenTrial) -> float:
            measured = latency_of(trial)
            return cost_of(trial) if measured is None else measured

        return min(over, key=lambda trial: (speed(trial), -accuracy_of(trial), trial.number))
    raise GasError(f"unknown pick {kind!r}; choose one of {', '.join(PICKS)}")


# ---- the table -------------------------------------------------------------------------------------


def front_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One row per front trial, cheapest first: the numbers, the space's own columns, and the genome."""
    rows = []
    for trial in record.front(study):
        genome = record.trial_genome(trial)
        attrs = trial.user_attrs
        row: dict[str, Any] = {
            "trial": trial.number,
            "accuracy": accuracy_of(trial),
            "flops": flops_of(trial),
            "params": attrs.get(TrialKey.PARAMS),
            "budget_utilisation": attrs.get(TrialKey.BUDGET_UTILISATION),
        }
        if TrialKey.MEASURED_LATENCY in attrs:
            row["latency"] = float(attrs[TrialKey.MEASURED_LATENCY])
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
    headers = {"accuracy": "accuracy", "flops": "FLOPs", "params": "params", "budget_utilisation": "budget"}

    def cell(key: str, value: Any) -> str:
        if value is None:
            return "-"
        if key == "accuracy":
            return f"{value:.2%}"
        if key in ("flops", "params"):
            return format_count(value)
        if key == "budget_utilisation":
            return f"{value:.0%}"
        if key == "latency":
            return format_duration(value)
        return str(value)

    numeric = {"trial", "accuracy", "flops", "params", "budget_utilisation", "latency"}
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
class Point:
    trial: int
    flops: int
    accuracy: float | None = None
    params: int | None = None


@dataclass(frozen=True)
class FrontPlot:
    """What the plot shows: the front against every other trial that has a cost."""

    title: str
    front: list[Point]
    dominated: list[Point]  # feasible, trained, not on the front
    infeasible: list[Point]  # over budget: never trained, so no accuracy
    failed: list[Point]  # raised while training
    budget: int | None


def front_plot(study: optuna.Study) -> FrontPlot:
    front_numbers = {trial.number for trial in record.front(study)}
    groups: dict[str, list[Point]] = {"front": [], "dominated": [], "infeasible": [], "failed": []}
    for trial in study.get_trials(deepcopy=False):
        attrs = trial.user_attrs
        params = attrs.get(TrialKey.PARAMS)
        if trial.state == TrialState.COMPLETE and trial.values:
            point = Point(trial.number, flops_of(trial), accuracy_of(trial), params)
            groups["front" if trial.number in front_numbers else "dominated"].append(point)
        elif isinstance(attrs.get(TrialKey.FLOPS), int | float):
            point = Point(trial.number, int(attrs[TrialKey.FLOPS]), None, params)
            if trial.state == TrialState.PRUNED and is_infeasible(trial):
                groups["infeasible"].append(point)
            elif trial.state == TrialState.FAIL:
                groups["failed"].append(point)
    groups["front"].sort(key=lambda point: point.flops)
    space = study.user_attrs.get("space", "")
    title = f"{study.study_name}" + (f" ({space} space)" if space else "")
    return FrontPlot(
        title, groups["front"], groups["dominated"], groups["infeasible"], groups["failed"], study_budget(study)
    )


def _staircase(points: Sequence[Point]) -> tuple[list[float], list[float]]:
    """The front drawn as steps: accuracy holds until the next, costlier trial raises it."""
    xs: list[float] = []
    ys: list[float] = []
    for index, point in enumerate(points):
        if index:
            xs.append(point.flops)
            ys.append(ys[-1])
        xs.append(point.flops)
        ys.append(point.accuracy or 0.0)
    return xs, ys


def write_plot(study: optuna.Study, path: str | Path, export_hint: str = "") -> Path:
    """Draw the front against all trials with matplotlib: .png, .svg or .pdf, or an .html page around its SVG."""
    path = Path(path)
    as_page = path.suffix.lower() in (".html", ".htm")
    if not as_page and path.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise GasError(f"--plot {path}: write .png, .svg, .pdf or .html")
    plot = front_plot(study)
    figure = _figure(plot)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if as_page:
            path.write_text(_html_page(plot, front_rows(study), export_hint, _inline_svg(figure)), encoding="utf-8")
        else:
            figure.savefig(path)
    except OSError as error:
        raise GasError(f"cannot write {path}: {error.strerror}") from None
    return path


def _figure(plot: FrontPlot) -> Figure:
    # A bare Figure renders through the Agg canvas without pyplot, so no display or global state is touched.
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 5), dpi=120)
    axes = figure.add_subplot()
    giga = 1e9
    if plot.dominated:
        axes.scatter(
            [point.flops / giga for point in plot.dominated],
            [100 * (point.accuracy or 0.0) for point in plot.dominated],
            s=18,
            color="#9e9e9e",
            label=f"feasible, dominated ({len(plot.dominated)})",
        )
    if plot.front:
        xs, ys = _staircase(plot.front)
        axes.plot([x / giga for x in xs], [100 * y for y in ys], color="#1565c0", linewidth=1.2)
        axes.scatter(
            [point.flops / giga for point in plot.front],
            [100 * (point.accuracy or 0.0) for point in plot.front],
            s=36,
            color="#1565c0",
            zorder=3,
            label=f"Pareto front ({len(plot.front)})",
        )
        for point in plot.front:
            axes.annotate(
                str(point.trial),
                (point.flops / giga, 100 * (point.accuracy or 0.0)),
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
                [point.flops / giga for point in points],
                [0.03] * len(points),
                transform=rug,
                marker=marker,
                s=22,
                color=color,
                label=f"{label} ({len(points)})",
            )
    if plot.budget:
        axes.axvline(plot.budget / giga, color="#424242", linestyle="--", linewidth=1, label="budget")
    # Points drawn in axes coordinates (the rug) do not widen the limits by themselves.
    every_flops = [point.flops / giga for point in plot.front + plot.dominated + plot.infeasible + plot.failed]
    if plot.budget:
        every_flops.append(plot.budget / giga)
    if every_flops:
        margin = (max(every_flops) - min(every_flops)) * 0.05 or max(every_flops) * 0.05 or 1.0
        axes.set_xlim(min(every_flops) - margin, max(every_flops) + margin)
    axes.set_xlabel("FLOPs at 224px (G, fvcore convention)")
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
    others = [
        {"trial": point.trial, "state": state, "accuracy": point.accuracy, "flops": point.flops, "params": point.params}
        for state, points in (("dominated", plot.dominated), ("infeasible", plot.infeasible), ("failed", plot.failed))
        for point in points
    ]
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
<h2>{title}: accuracy against FLOPs</h2>
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
