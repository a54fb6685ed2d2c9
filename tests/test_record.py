"""The study record reads what every version of gas wrote: each attribute of the committed studies, typed."""

from __future__ import annotations

import dataclasses
import json
import shutil

import optuna
import pytest

from gas import record
from gas.cli import main
from gas.search.audit import audit_line
from gas.storage import open_study
from tests.conftest import REPO
from tests.studies import mixed_study

# Studies written by earlier versions, kept beside the results they produced.
COMMITTED = sorted((REPO / "experiments" / "results").rglob("*.db"))
TRIAL_KEYS = {value for name, value in vars(record.TrialKey).items() if name.isupper()}


def _open_copy(path, tmp_path):
    """The committed study, opened from a copy: opening a SQLite study writes beside its file."""
    copy = tmp_path / path.name
    shutil.copy(path, copy)
    url = f"sqlite:///{copy}"
    (summary,) = optuna.get_all_study_summaries(url)
    return open_study(summary.study_name, url), url


@pytest.mark.parametrize("path", COMMITTED, ids=[str(path.relative_to(REPO / "experiments")) for path in COMMITTED])
def test_every_attribute_an_earlier_version_wrote_reads_as_written(path, tmp_path):
    study, _ = _open_copy(path, tmp_path)
    for trial in study.get_trials():
        recorded = record.trial_record(trial)
        assert (recorded.number, recorded.state) == (trial.number, trial.state)
        assert set(trial.user_attrs) <= TRIAL_KEYS, f"trial {trial.number} carries attributes the record does not read"
        for key, written in trial.user_attrs.items():
            read = getattr(recorded, key)
            if isinstance(read, record.Worker):
                read = dataclasses.asdict(read)
            elif isinstance(read, tuple):
                read = list(read)
            assert read == written, (trial.number, key)
    attrs = study.user_attrs
    searched = record.study_record(study)
    assert (searched.space, searched.budget, searched.seed, searched.sampler) == (
        attrs["space"],
        attrs["budget"],
        attrs["seed"],
        attrs["sampler"],
    )
    assert searched.settings == attrs["settings"] and searched.objective == attrs.get("objective", "flops")
    assert (searched.data is None) == ("data" not in attrs)
    latency = record.latency_record(study)
    if latency is None:
        assert "latency" not in attrs
    else:
        assert latency.stored == attrs["latency"] and latency.limit == attrs["latency"]["limit"]
        assert latency.accuracy == record.LatencyAccuracy(**attrs["latency"]["accuracy"])


def test_an_audit_an_earlier_version_wrote_reads_typed_and_prints_as_stored(tmp_path, capsys):
    study, url = _open_copy(REPO / "experiments" / "results" / "default_search_audited.db", tmp_path)
    stored = study.user_attrs[record.StudyKey.AUDIT]
    assert "bootstrap" in stored  # the interval's settings, which that version recorded and this one does not
    audit = record.audit_record(study)
    assert (audit.n, audit.epochs, audit.resolution, audit.epoch_factor) == (4, 12, 32, 3)
    assert audit.front == (32, 43, 26, 39) and audit.pairs[32] == record.AuditPair(0.669921875, 0.947265625)
    assert audit.interval == (-1.0, 1.0) and audit.search_setting("dataset") == "shapes"
    assert audit_line(audit) == (
        "audit: Kendall τ 0.33 (95% interval -1.00 to 1.00), n 4, against 12 epochs at 32px; the front's order did "
        "NOT hold (4 front trials)"
    )
    assert main(["pareto", "--study", study.study_name, "--storage", url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["audit"] == stored


def test_a_written_audit_reads_back_as_it_was_recorded(tmp_path):
    _, study, numbers = mixed_study(tmp_path / "audited.db")
    first, second, third = numbers["complete"][:3]
    audit = record.AuditRecord(
        epochs=6,
        resolution=64,
        evaluator="train",
        epoch_factor=3,
        search_proxy={"epochs": 2, "dataset": "digits"},
        pairs={second: record.AuditPair(0.5, 0.75), first: record.AuditPair(0.25, 0.5)},
        front=(second,),
        failed={third: "RuntimeError: loss diverged"},
        tau=1.0,
        interval=None,
        n=2,
        front_order_held=None,
        seconds=12.5,
    )
    assert record.write_audit(study, audit) == audit
    assert record.audit_record(study) == audit
    assert list(record.audit_record(study).pairs) == [second, first], "the audit's order is kept"
    assert study.user_attrs[record.StudyKey.AUDIT]["failed"] == {str(third): "RuntimeError: loss diverged"}
