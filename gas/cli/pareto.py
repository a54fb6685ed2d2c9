"""`gas pareto`: a study's front as a table, CSV, JSON or plot, with its picks and records."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from gas.cli.common import add_study_options, storage_option
from gas.units import format_count

if TYPE_CHECKING:
    from gas.record import LatencyRecord, NoiseRecord


def register(commands: argparse._SubParsersAction) -> None:
    pareto = commands.add_parser(
        "pareto", help="the feasible front of a study, accuracy against its objective: table, CSV, plot"
    )
    add_study_options(pareto, "study name")
    pareto.add_argument("--csv", help="also write the front to this CSV file")
    pareto.add_argument("--plot", help="also draw the front against all trials: .png/.svg/.pdf, or .html (no network)")
    pareto.add_argument("--json", action="store_true", help="print the front as one JSON object instead of a table")
    pareto.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import re
    import shlex

    from gas.front import pick_trial
    from gas.front_report import format_table, front_rows, write_csv, write_plot
    from gas.record import audit_record, latency_record, noise_record, study_record
    from gas.storage import open_study
    from gas.study import state_counts

    study = open_study(args.study, args.storage)
    rows = front_rows(study)
    searched = study_record(study)
    audit = audit_record(study)
    latency = latency_record(study)
    noise = noise_record(study)
    name = shlex.quote(study.study_name)
    storage = storage_option(args.storage)
    module = re.sub(r"\W", "_", study.study_name)
    export_template = f"gas export --study {name}{storage} --trial TRIAL --out generated/{module}_tTRIAL.py"
    written = []
    if args.csv:
        written.append(write_csv(rows, args.csv))
    if args.plot:
        written.append(write_plot(study, args.plot, export_template))
    counts = state_counts(study)
    picks = {kind: pick_trial(study, kind).number for kind in ("best", "knee")} if rows else {}
    budget = searched.budget
    if args.json:
        print(
            json.dumps(
                {
                    "study": study.study_name,
                    "space": searched.space,
                    "budget": budget,
                    "trials": counts,
                    "picks": picks,
                    "objective": searched.objective,
                    "front": rows,
                    "audit": None if audit is None else audit.stored,
                    "latency": None if latency is None else latency.stored,
                    "noise": None if noise is None else dataclasses.asdict(noise),
                }
            )
        )
        return 0
    space = searched.space
    about = ", ".join(
        part
        for part in (space and f"{space} space", budget and f"budget {format_count(budget)} FLOPs at 224px")
        if part
    )
    print(f"study {study.study_name}" + (f" ({about})" if about else ""))
    print("trials: " + ", ".join(f"{count} {state}" for state, count in counts.items()))
    for line in _measurement_lines(latency, noise):
        print(line)
    if rows:
        print(f"Pareto front: {len(rows)} feasible, fully trained trials, by {searched.objective} ascending")
        for line in format_table(rows):
            print(f"  {line}")
        print(f"most accurate: trial {picks['best']}   knee: trial {picks['knee']}")
    else:
        print("Pareto front: empty (no feasible, fully trained trials yet)")
    if audit is not None:
        from gas.search.audit import audit_line

        print(audit_line(audit))
    for path in written:
        print(f"wrote {path}")
    example = str(rows[-1]["trial"]) if rows else "N"
    print(f"export a row:       {export_template.replace('TRIAL', example)}")
    print(f"open the dashboard: gas dashboard --study {name}{storage}")
    return 0


def _measurement_lines(latency: LatencyRecord | None, noise: NoiseRecord | None) -> list[str]:
    """What the study measured about its own figures: the latency model's accuracy, the proxy's seed noise."""
    lines = []
    if latency is not None:
        from gas.search.latency_limit import describe_accuracy, describe_target

        lines.append(f"latency measured in {latency.measured_in} on {describe_target(latency)}")
        lines.append(describe_accuracy(latency.accuracy))
    if noise is not None:
        from gas.search.replicates import describe_noise

        lines.append(describe_noise(noise))
    return lines
