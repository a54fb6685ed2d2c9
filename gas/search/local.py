"""The in-process driver: a job source's proposals evaluated one after another in this process, no Ray.

What benchmarks and tests use when the cluster is not what they measure; `gas search` runs the Ray Tune
driver (`gas.search.ray_tune`) on the same engine, so both write the same study for the same seed. Fixed
jobs (an audit's long runs, replicates, `gas compare`) go through the same loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from gas.search.config import SearchConfig, prepare
from gas.search.engine import Engine, SearchOutcome
from gas.search.jobs import FixedJobs, JobSource, Outcome, Proposal, Report, evaluate_proposal
from gas.search.progress import Progress


def drive(source: JobSource, done: Callable[[], None] = lambda: None) -> None:
    """Evaluate `source`'s proposals here until it has none left; `done` hears each one end.

    Ctrl-C and `kill` raise KeyboardInterrupt between writes (the source's interrupts are installed).
    """
    with source.interrupts.installed():
        while (proposal := source.propose()) is not None:
            number = proposal.number

            def report(entry: dict[str, float], number: int = number) -> bool:
                return source.report(number, int(entry["epoch"]), entry["accuracy"])

            source.record(number, evaluate_proposal(proposal, report=report))
            done()


def search_in_process(config: SearchConfig) -> SearchOutcome:
    """Run (or resume) a search here until the study holds `config.trials` trained trials."""
    started = time.monotonic()
    engine = Engine(*prepare(config))
    engine.requeue()
    progress = Progress(engine.study, config.trials, config.progress)
    engine.on_rejected = progress.refresh
    interrupted = False
    try:
        drive(engine, lambda: progress.refresh(completed=1))
    except KeyboardInterrupt:
        interrupted = True
    finally:
        interrupted = engine.abandon() or interrupted
        engine.finish()
        progress.close()
    return SearchOutcome.of(engine, interrupted, time.monotonic() - started)


def run_in_process(proposals: Sequence[Proposal], report: Report | None = None) -> list[Outcome]:
    """Train fixed jobs one after another here; `report` hears each outcome as it comes."""
    jobs = FixedJobs(proposals, report)
    drive(jobs)
    return jobs.results()
