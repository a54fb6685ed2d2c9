"""The accuracy/FLOPs Pareto front of a study: which trials are on it, how to pick one, and how to show it.

The front is made of feasible, fully trained trials only. The study contract keeps infeasible proposals
out of COMPLETE (they are PRUNED with a positive constraint), so the front computed here, Optuna's
`study.best_trials` and optuna-dashboard's Pareto plot (which looks at COMPLETE trials only) agree.

Picking one trial off the front (`gas export --pick`):
    best               the most accurate trial on the front.
    knee               where the front bends: with accuracy and FLOPs each scaled to [0, 1] over the front,
                       the trial that gains the most scaled accuracy over scaled FLOPs (equivalently, the
                       one farthest above the straight line from the cheapest to the most accurate trial).
                       Both ends score 0; ties go to the more accurate trial, so a front of one or two
                       trials has its most accurate trial as the knee.
    max-acc-under B    the most accurate front trial with FLOPs <= B (also the most accurate of all
                       feasible trained trials within B, since anything dominating it is cheaper still).
"""

from __future__ import annotations

import html
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from gas import study as contract
from gas.errors import GasError
from gas.space import get_space
from gas.units import format_count, parse_count

PICKS = ("best", "knee", "max-acc-under")


# ---- choosing a trial ------------------------------------------------------------------------------


def accuracy_of(trial: FrozenTrial) -> float:
    return float(trial.values[0])


def flops_of(trial: FrozenTrial) -> int:
    return int(trial.values[1])


def knee_point(front_trials: Sequence[FrozenTrial]) -> FrozenTrial:
    """The front's knee (see the module docstring for the definition)."""
    if not front_trials:
        raise GasError("the front is empty, so it has no knee")
    accuracies = [accuracy_of(trial) for trial in front_trials]
    flops = [flops_of(trial) for trial in front_trials]
    accuracy_span = (max(accuracies) - min(accuracies)) or 1.0
    flops_span = (max(flops) - min(flops)) or 1

    def gain(trial: FrozenTrial) -> float:
        scaled_accuracy = (accuracy_of(trial) - min(accuracies)) / accuracy_span
        scaled_flops = (flops_of(trial) - min(flops)) / flops_span
        return scaled_accuracy - scaled_flops

    return max(front_trials, key=lambda trial: (gain(trial), accuracy_of(trial), -flops_of(trial), -trial.number))


def parse_pick(words: Sequence[str]) -> tuple[str, int | None]:
    """('best', None), ('knee', None) or ('max-acc-under', budget) from `--pick` words."""
    text = " ".join(words).strip()
    kind, _, rest = text.replace("=", " ", 1).partition(" ")
    rest = rest.strip()
    if kind in ("best", "knee") and not rest:
        return kind, None
    if kind == "max-acc-under" and rest:
        return kind, parse_count(rest, "max-acc-under budget")
    raise GasError(f"--pick {text!r} is not one of: best, knee, max-acc-under BUDGET (e.g. max-acc-under 2G)")


def pick_trial(study: optuna.Study, kind: str, budget: int | None = None) -> FrozenTrial:
    """The front trial that `--pick kind [budget]` names."""
    front_trials = contract.front(study)
    if not front_trials:
        raise GasError(f"study {study.study_name!r} has no feasible, fully trained trials yet, so nothing to pick")
    if kind == "best":
        return max(front_trials, key=lambda trial: (accuracy_of(trial), -flops_of(trial), -trial.number))
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
    raise GasError(f"unknown pick {kind!r}; choose one of {', '.join(PICKS)}")


# ---- the table -------------------------------------------------------------------------------------


def study_budget(study: optuna.Study) -> int | None:
    """The FLOPs budget the search ran under, if the study records one."""
    budget = study.user_attrs.get("budget")
    if isinstance(budget, int | float) and not isinstance(budget, bool) and budget > 0:
        return int(budget)
    if isinstance(budget, str):
        try:
            return parse_count(budget)
        except GasError:
            return None
    return None


def is_infeasible(trial: FrozenTrial) -> bool:
    """A proposal rejected before training (PRUNED with a positive constraint, per the study contract)."""
    constraint_positive = any(value > 0 for value in trial.system_attrs.get("constraints", ()) or ())
    constraint_positive |= any(
        key.startswith("constraints:") and value > 0 for key, value in trial.system_attrs.items()
    )
    return trial.user_attrs.get(contract.FEASIBLE) is False or constraint_positive


def state_counts(trials: Sequence[FrozenTrial]) -> dict[str, int]:
    """How many trials are complete, infeasible, failed, pruned for another reason, running or waiting."""
    counts: Counter[str] = Counter()
    for trial in trials:
        if trial.state == TrialState.PRUNED:
            counts["infeasible" if is_infeasible(trial) else "pruned"] += 1
        else:
            counts["failed" if trial.state == TrialState.FAIL else trial.state.name.lower()] += 1
    order = ("complete", "infeasible", "failed", "pruned", "running", "waiting")
    return {name: counts[name] for name in order if counts[name] or name in ("complete", "infeasible", "failed")}


def front_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One row per front trial, cheapest first: the numbers, the space's own columns, and the genome."""
    rows = []
    for trial in contract.front(study):
        genome = contract.trial_genome(trial)
        attrs = trial.user_attrs
        row: dict[str, Any] = {
            "trial": trial.number,
            "accuracy": accuracy_of(trial),
            "flops": flops_of(trial),
            "params": attrs.get(contract.PARAMS),
            "budget_utilisation": attrs.get(contract.BUDGET_UTILISATION),
        }
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
        return str(value)

    numeric = {"trial", "accuracy", "flops", "params", "budget_utilisation"}
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
    front_numbers = {trial.number for trial in contract.front(study)}
    groups: dict[str, list[Point]] = {"front": [], "dominated": [], "infeasible": [], "failed": []}
    for trial in study.get_trials(deepcopy=False):
        attrs = trial.user_attrs
        params = attrs.get(contract.PARAMS)
        if trial.state == TrialState.COMPLETE and trial.values:
            point = Point(trial.number, flops_of(trial), accuracy_of(trial), params)
            groups["front" if trial.number in front_numbers else "dominated"].append(point)
        elif isinstance(attrs.get(contract.FLOPS), int | float):
            point = Point(trial.number, int(attrs[contract.FLOPS]), None, params)
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
    """Draw the front against all trials: HTML (inline SVG, no network) for .html, else matplotlib by suffix."""
    path = Path(path)
    plot = front_plot(study)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() in (".html", ".htm"):
            path.write_text(_html_page(plot, front_rows(study), export_hint))
        elif path.suffix.lower() in (".png", ".svg", ".pdf"):
            _matplotlib_plot(plot, path)
        else:
            raise GasError(f"--plot {path}: write .png, .svg, .pdf or .html")
    except OSError as error:
        raise GasError(f"cannot write {path}: {error.strerror}") from None
    return path


def _matplotlib_plot(plot: FrontPlot, path: Path) -> None:
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
    figure.savefig(path)


def _nice_ticks(low: float, high: float, count: int = 6) -> list[float]:
    """Round tick positions (1, 2 or 5 times a power of ten apart) covering [low, high]."""
    if high <= low:
        high = low + 1.0
    raw_step = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw_step))
    step = next(factor * magnitude for factor in (1, 2, 5, 10) if factor * magnitude >= raw_step)
    first = math.ceil(low / step) * step
    return [first + index * step for index in range(int((high - first) / step + 1e-9) + 1)]


def _svg_chart(plot: FrontPlot) -> str:
    width, height = 760, 440
    left, right, top, bottom = 70, 20, 20, 56
    costed = plot.front + plot.dominated + plot.infeasible + plot.failed
    flops = [point.flops for point in costed] + ([plot.budget] if plot.budget else [])
    accuracies = [point.accuracy for point in plot.front + plot.dominated if point.accuracy is not None]
    x_low, x_high = (min(flops), max(flops)) if flops else (0, 1)
    y_low, y_high = (min(accuracies), max(accuracies)) if accuracies else (0.0, 1.0)
    x_pad = (x_high - x_low) * 0.05 or max(x_high * 0.05, 1)
    y_pad = (y_high - y_low) * 0.08 or 0.05
    x_low, x_high, y_low, y_high = x_low - x_pad, x_high + x_pad, y_low - y_pad, y_high + y_pad
    # Room below the lowest accuracy for the row of untrained trials.
    y_low -= (y_high - y_low) * 0.08

    def x_of(value: float) -> float:
        return left + (value - x_low) / (x_high - x_low) * (width - left - right)

    def y_of(value: float) -> float:
        return top + (y_high - value) / (y_high - y_low) * (height - top - bottom)

    def tooltip(point: Point, kind: str) -> str:
        accuracy = "not trained" if point.accuracy is None else f"accuracy {point.accuracy:.2%}"
        params = "" if point.params is None else f", {format_count(point.params)} params"
        return html.escape(f"trial {point.trial} ({kind}): {accuracy}, {format_count(point.flops)} FLOPs{params}")

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" '
        'fill="#fafafa" stroke="#bdbdbd"/>',
    ]
    for tick in _nice_ticks(x_low, x_high):
        x = x_of(tick)
        parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{height - bottom}" stroke="#eeeeee"/>')
        parts.append(f'<text x="{x:.1f}" y="{height - bottom + 16}" text-anchor="middle">{format_count(tick)}</text>')
    for tick in _nice_ticks(max(y_low, 0.0), y_high):
        y = y_of(tick)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="#eeeeee"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick:.0%}</text>')
    parts.append(
        f'<text x="{(left + width - right) / 2}" y="{height - 14}" text-anchor="middle">'
        "FLOPs at 224px (fvcore convention)</text>"
    )
    parts.append(
        f'<text transform="translate(16 {(top + height - bottom) / 2}) rotate(-90)" text-anchor="middle">'
        "proxy accuracy</text>"
    )
    if plot.budget:
        x = x_of(plot.budget)
        parts.append(
            f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{height - bottom}" stroke="#424242" '
            'stroke-dasharray="5 4"><title>budget</title></line>'
        )
    if plot.front:
        xs, ys = _staircase(plot.front)
        steps = " ".join(f"{x_of(x):.1f},{y_of(y):.1f}" for x, y in zip(xs, ys, strict=True))
        parts.append(f'<polyline points="{steps}" fill="none" stroke="#1565c0" stroke-width="1.5"/>')
    for point in plot.dominated:
        parts.append(
            f'<circle cx="{x_of(point.flops):.1f}" cy="{y_of(point.accuracy or 0.0):.1f}" r="4" fill="#9e9e9e" '
            f'data-trial="{point.trial}"><title>{tooltip(point, "dominated")}</title></circle>'
        )
    for point in plot.front:
        parts.append(
            f'<circle cx="{x_of(point.flops):.1f}" cy="{y_of(point.accuracy or 0.0):.1f}" r="6" fill="#1565c0" '
            f'data-trial="{point.trial}" class="front"><title>{tooltip(point, "Pareto front")}</title></circle>'
        )
    rug_y = height - bottom - 10
    for point in plot.infeasible:
        x = x_of(point.flops)
        parts.append(
            f'<path d="M{x - 4:.1f},{rug_y - 4} l8,8 m0,-8 l-8,8" stroke="#c62828" stroke-width="1.5">'
            f"<title>{tooltip(point, 'infeasible')}</title></path>"
        )
    for point in plot.failed:
        x = x_of(point.flops)
        parts.append(
            f'<path d="M{x - 4:.1f},{rug_y - 4} l8,0 l-4,8 z" fill="#ef6c00">'
            f"<title>{tooltip(point, 'failed')}</title></path>"
        )
    parts.append("</svg>")
    return "\n".join(parts)


def _html_page(plot: FrontPlot, rows: Sequence[dict[str, Any]], export_hint: str) -> str:
    """A self-contained page: the chart, a legend, the front as a table; clicking a point shows its export command."""
    table_lines = format_table(rows)
    table = html.escape("\n".join(table_lines)) if table_lines else "no feasible, fully trained trials yet"
    legend = (
        f"Pareto front: {len(plot.front)} &middot; feasible, dominated: {len(plot.dominated)} &middot; "
        f"infeasible, not trained: {len(plot.infeasible)} (red x) &middot; failed: {len(plot.failed)} (orange)"
    )
    hint = json.dumps(export_hint).replace("<", "\\u003c")  # a "</script>" inside must not end the script
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(plot.title)}: Pareto front</title>
<style>
body {{ font-family: sans-serif; margin: 24px; color: #212121; }}
circle {{ cursor: pointer; }}
circle:hover {{ stroke: #212121; stroke-width: 2; }}
pre, code {{ background: #f5f5f5; padding: 6px; }}
</style>
</head>
<body>
<h2>{html.escape(plot.title)}: accuracy against FLOPs</h2>
<p>{legend}. Hover a point for its numbers; click one for the command that exports it.</p>
{_svg_chart(plot)}
<p><code id="command">click a point</code></p>
<h3>Pareto front (feasible, fully trained)</h3>
<pre>{table}</pre>
<script>
const template = {hint};
for (const point of document.querySelectorAll("circle[data-trial]")) {{
  point.addEventListener("click", () => {{
    document.getElementById("command").textContent = template.replaceAll("TRIAL", point.dataset.trial);
  }});
}}
</script>
</body>
</html>
"""
