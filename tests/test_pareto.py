"""`gas pareto`: only feasible, fully trained, non-dominated trials; table, CSV, JSON and plots."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from gas.cli import main
from gas.front import knee_point, parse_pick, pick_trial
from gas.front_report import format_table, front_figure, front_plot, front_rows
from gas.record import StudyKey, TrialKey, latency_record, study_record
from gas.space import get_space, load_genome
from gas.study import front, state_counts
from tests.conftest import run_gas
from tests.studies import mixed_study, new_study, objective_study, sqlite_url


def brute_force_front(study) -> list[int]:
    """Trial numbers no other feasible COMPLETE trial dominates, by looking at every pair."""
    trained = [t for t in study.get_trials() if t.state.name == "COMPLETE" and t.user_attrs["feasible"] is True]

    def dominates(a, b) -> bool:
        no_worse = a.values[0] >= b.values[0] and a.values[1] <= b.values[1]
        return no_worse and (a.values[0] > b.values[0] or a.values[1] < b.values[1])

    return sorted(t.number for t in trained if not any(dominates(other, t) for other in trained))


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pareto")
    url, study, numbers = mixed_study(folder / "study.db")
    return folder, url, study, numbers


def test_front_is_the_brute_force_front_of_feasible_trained_trials(mixed):
    _, _, study, numbers = mixed
    expected = brute_force_front(study)
    assert 1 < len(expected) < len(numbers["complete"])  # the study has dominated trials to leave out
    rows = front_rows(study)
    assert sorted(row["trial"] for row in rows) == expected
    assert [row["flops"] for row in rows] == sorted(row["flops"] for row in rows)
    assert not {row["trial"] for row in rows} & set(numbers["infeasible"] + numbers["failed"])
    genome = load_genome(rows[0]["genome"])
    for key, value in get_space(genome.space).describe(genome).items():
        assert rows[0][key] == value


def test_cli_table_csv_png_and_commands(mixed):
    folder, url, study, numbers = mixed
    result = run_gas(
        "pareto",
        "--study",
        "mixed",
        "--storage",
        url,
        "--csv",
        str(folder / "front.csv"),
        "--plot",
        str(folder / "f.png"),
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header_at = next(index for index, line in enumerate(lines) if line.split()[:2] == ["trial", "accuracy"])
    listed = []
    for line in lines[header_at + 1 :]:
        if not line.strip()[:1].isdigit():
            break
        listed.append(int(line.split()[0]))
    assert sorted(listed) == brute_force_front(study)
    header = lines[header_at].split()
    assert {"FLOPs", "params", "budget", "attention", "q_pool"} <= set(header)
    counts = f"{len(numbers['complete'])} complete, {len(numbers['infeasible'])} infeasible, {len(numbers['failed'])}"
    assert counts in result.stdout
    assert f"gas export --study mixed --storage {url} --trial " in result.stdout
    assert f"gas dashboard --study mixed --storage {url}" in result.stdout

    table = pd.read_csv(folder / "front.csv")
    assert sorted(table["trial"]) == brute_force_front(study)
    assert all(load_genome(json.loads(text)) for text in table["genome"])
    png = (folder / "f.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


def test_json_is_the_front_for_scripts(mixed, capsys):
    _, url, study, numbers = mixed
    assert main(["pareto", "--study", "mixed", "--storage", url, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert [row["trial"] for row in document["front"]] == [trial.number for trial in front(study)]
    assert sorted(row["trial"] for row in document["front"]) == brute_force_front(study)
    assert document["trials"]["infeasible"] == len(numbers["infeasible"])
    assert document["trials"]["failed"] == len(numbers["failed"])
    assert document["picks"]["best"] == max(document["front"], key=lambda row: row["accuracy"])["trial"]


def test_html_plot_is_self_contained_and_shows_every_trial(mixed):
    folder, url, study, numbers = mixed
    path = folder / "front.html"
    assert main(["pareto", "--study", "mixed", "--storage", url, "--plot", str(path)]) == 0
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page
    assert "http" not in page  # nothing fetched, not even a namespace name to mistake for a link
    chart = page[page.index("<svg") : page.index("</svg>")]
    front_numbers = brute_force_front(study)
    # matplotlib's legend counts each state, and every front point is labelled with its trial number.
    assert f"Pareto front ({len(front_numbers)})" in chart
    assert f"infeasible, not trained ({len(numbers['infeasible'])})" in chart
    assert f"failed while training ({len(numbers['failed'])})" in chart
    assert all(f">{number}</text>" in chart for number in front_numbers)
    tables = re.findall(r"<pre>(.*?)</pre>", page, re.DOTALL)
    assert sorted(int(line.split()[0]) for line in tables[0].splitlines()[1:]) == front_numbers
    assert f"gas export --study mixed --storage {url} --trial TRIAL" in tables[1]
    states = {int(line.split()[0]): line.split()[1] for line in tables[2].splitlines()[1:]}
    assert {n for n, state in states.items() if state == "infeasible"} == set(numbers["infeasible"])
    assert {n for n, state in states.items() if state == "failed"} == set(numbers["failed"])
    assert not set(states) & set(front_numbers)


def test_picks_follow_their_definitions(mixed):
    _, _, study, _ = mixed
    trials = {trial.number: trial for trial in study.get_trials()}
    on_front = brute_force_front(study)
    assert pick_trial(study, "best").number == max(on_front, key=lambda n: trials[n].values[0])
    cheapest = min(trials[n].values[1] for n in on_front)
    assert pick_trial(study, "max-acc-under", int(cheapest)).number == min(on_front, key=lambda n: trials[n].values[1])
    assert knee_point(front(study)).number in on_front
    assert parse_pick(["max-acc-under", "2.5G"]) == ("max-acc-under", 2_500_000_000)
    assert parse_pick(["max-acc-under=1e9"]) == ("max-acc-under", 1_000_000_000)


def test_empty_study_has_an_empty_front_but_still_plots(tmp_path):
    url = sqlite_url(tmp_path / "empty.db")
    study = new_study(url, "empty")
    assert main(["pareto", "--study", "empty", "--storage", url, "--plot", str(tmp_path / "p.html")]) == 0
    assert (tmp_path / "p.html").stat().st_size > 0
    assert format_table([]) == []
    assert state_counts(study) == {"complete": 0, "infeasible": 0, "failed": 0}


def test_unknown_study_is_one_line_without_traceback(mixed, capsys):
    _, url, _, _ = mixed
    assert main(["pareto", "--study", "missing", "--storage", url]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "no study 'missing'" in captured.err
    assert "Traceback" not in captured.err and captured.out == ""


def test_missing_storage_file_is_refused_and_not_created(tmp_path, capsys):
    path = tmp_path / "typo.db"
    assert main(["pareto", "--study", "mixed", "--storage", sqlite_url(path)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not path.exists()


@pytest.mark.parametrize("plot", ["front.txt", "front"])
def test_unknown_plot_format_is_refused(plot, mixed, capsys):
    folder, url, _, _ = mixed
    assert main(["pareto", "--study", "mixed", "--storage", url, "--plot", str(folder / plot)]) == 2
    assert "write .png" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("objective", "unit", "label"),
    [
        ("latency", 1e-3, "measured latency (ms"),
        ("params", 1e6, "parameters at 224px (M)"),
        ("flops", 1e9, "FLOPs at 224px (G"),
    ],
)
def test_the_plot_draws_the_front_on_the_study_objective(tmp_path, objective, unit, label):
    _, study = objective_study(tmp_path / "study.db", objective)
    trials = {trial.number: trial for trial in study.get_trials()}
    key = {"latency": TrialKey.MEASURED_LATENCY, "params": TrialKey.PARAMS, "flops": TrialKey.FLOPS}[objective]

    def at(numbers, *keys) -> list[float]:
        """Where these trials belong on the axis: the first of `keys` each carries, in the axis unit."""
        return sorted(next(trials[n].user_attrs[k] for k in keys if k in trials[n].user_attrs) / unit for n in numbers)

    axes = front_figure(front_plot(study)).axes[0]
    assert axes.get_xlabel().startswith(label)
    drawn = {points.get_label().split(" (")[0]: sorted(points.get_offsets()[:, 0]) for points in axes.collections}
    on_front = brute_force_front(study)
    by_state: dict[str, list[int]] = {}
    for number, trial in trials.items():
        by_state.setdefault(trial.state.name, []).append(number)
    assert drawn["Pareto front"] == pytest.approx(at(on_front, key))
    assert drawn["feasible, dominated"] == pytest.approx(at(set(by_state["COMPLETE"]) - set(on_front), key))
    # Trials that never trained sit at their predicted latency; one trained, then measured over, at its measure.
    assert drawn["infeasible, not trained"] == pytest.approx(at(by_state["PRUNED"], key, TrialKey.PREDICTED_LATENCY))
    assert drawn["failed while training"] == pytest.approx(at(by_state["FAIL"], key, TrialKey.PREDICTED_LATENCY))
    limit = {
        "latency": latency_record(study).limit,
        "params": study.user_attrs[StudyKey.MAX_PARAMS],
        "flops": study_record(study).budget,
    }[objective]
    labelled_lines = [line for line in axes.lines if not line.get_label().startswith("_")]  # the staircase has none
    assert [line.get_xdata()[0] for line in labelled_lines] == [pytest.approx(limit / unit)]


def test_a_latency_front_page_is_headed_and_drawn_on_latency(tmp_path):
    url, study = objective_study(tmp_path / "study.db", "latency")
    path = tmp_path / "front.html"
    assert main(["pareto", "--study", study.study_name, "--storage", url, "--plot", str(path)]) == 0
    page = path.read_text(encoding="utf-8")
    assert f"{study.study_name} (turbovit space): accuracy against latency</h2>" in page
    assert "measured latency (ms" in page[page.index("<svg") : page.index("</svg>")] and "FLOPs at 224px" not in page
