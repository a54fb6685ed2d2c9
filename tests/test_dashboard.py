"""`gas dashboard`: optuna-dashboard serves the study, its front is gas's feasible front, Ctrl-C frees the port."""

from __future__ import annotations

import json
import queue
import signal
import socket
import threading
import time
import urllib.request

import pytest

from gas.cli import main
from gas.front_report import front_rows
from tests.conftest import start_gas
from tests.studies import mixed_study

STARTUP_SECONDS = 120


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


def _lines(stream, into: queue.Queue) -> None:
    for line in stream:
        into.put(line)
    into.put(None)


def _dashboard_front(detail: dict) -> list[int]:
    """The trials the dashboard's Pareto plot draws as its front: non-dominated among Complete trials.

    This is the rule its front end applies (state "Complete", values present; constraints are read from a
    key Optuna 5 no longer writes, so every Complete trial counts as feasible there).
    """
    directions = detail["directions"]
    complete = [t for t in detail["trials"] if t["state"] == "Complete" and t.get("values")]

    def signed(trial) -> list[float]:
        return [v if d == "minimize" else -v for v, d in zip(trial["values"], directions, strict=True)]

    def dominates(a, b) -> bool:
        sa, sb = signed(a), signed(b)
        return all(x <= y for x, y in zip(sa, sb, strict=True)) and sa != sb

    return sorted(t["number"] for t in complete if not any(dominates(other, t) for other in complete))


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    return mixed_study(tmp_path_factory.mktemp("dashboard") / "study.db")


def test_dashboard_serves_the_study_with_gas_front_and_stops_on_sigint(mixed, tmp_path):
    url, study, numbers = mixed
    port = _free_port()
    process = start_gas("dashboard", "--study", "mixed", "--storage", url, "--port", str(port), cwd=tmp_path)
    output: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(process.stdout, output), daemon=True).start()
    try:
        printed, deadline = [], time.monotonic() + STARTUP_SECONDS
        while not any("Ctrl-C" in line for line in printed):
            line = output.get(timeout=max(deadline - time.monotonic(), 0.1))
            assert line is not None, f"dashboard exited early: {process.stderr.read()}"
            printed.append(line)
        text = "".join(printed)
        base = f"http://127.0.0.1:{port}"
        assert f"{base}/dashboard/studies/" in text

        summaries = _get(f"{base}/api/studies")["study_summaries"]
        (summary,) = [s for s in summaries if s["study_name"] == "mixed"]
        assert f"{base}/dashboard/studies/{summary['study_id']}" in text
        detail = _get(f"{base}/api/studies/{summary['study_id']}")
        by_number = {trial["number"]: trial for trial in detail["trials"]}
        assert sorted(by_number) == sorted(t.number for t in study.get_trials())

        # Infeasible proposals reach the dashboard as Pruned, so neither its API nor its plot can use them.
        assert {by_number[n]["state"] for n in numbers["infeasible"]} == {"Pruned"}
        assert {by_number[n]["state"] for n in numbers["failed"]} == {"Fail"}
        infeasible = {n for n, trial in by_number.items() if str(_user_attr(trial, "feasible")).lower() == "false"}
        assert infeasible == set(numbers["infeasible"])
        gas_front = sorted(row["trial"] for row in front_rows(study))
        assert sorted(trial["number"] for trial in detail["best_trials"]) == gas_front
        assert _dashboard_front(detail) == gas_front
        assert not infeasible & set(gas_front)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == 0, process.stderr.read()
    assert "dashboard stopped" in process.stderr.read()
    with socket.socket() as probe:  # nothing listens on the port any more
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))


def _user_attr(trial: dict, key: str) -> str | None:
    return next((attr["value"] for attr in trial["user_attrs"] if attr["key"] == key), None)


def test_port_in_use_is_one_line(mixed, capsys):
    url, _, _ = mixed
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["dashboard", "--study", "mixed", "--storage", url, "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot listen on 127.0.0.1:{port}" in err and "--port" in err


def test_unknown_study_is_refused_before_listening(mixed, capsys):
    url, _, _ = mixed
    assert main(["dashboard", "--study", "other", "--storage", url, "--port", str(_free_port())]) == 2
    assert "no study 'other'" in capsys.readouterr().err
