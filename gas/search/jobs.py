"""Fixed evaluations for the drivers: a list of (genome, proxy settings) jobs run as a search's trials run.

The audit, seed replicates and `gas compare` retrain genomes that are already chosen. They go through the
same drivers as a search (`gas.search.local.run_in_process`, `gas.search.ray_tune.run_on_ray`), which take
any `JobSource`: the engine proposes a search's trials, `FixedJobs` hands out its list. So every job trains
in the same trial function, with the same retries and resources, whoever asked for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Protocol

from gas.evaluate.proxy import ProxyResult
from gas.search.engine import Proposal
from gas.search.interrupts import Interrupts

Outcome = ProxyResult | str
#: What a caller hears as each job ends: the job and its result, or its error in one line.
Report = Callable[[Proposal, Outcome], None]


class JobSource(Protocol):
    """What a driver runs: proposals out, per-epoch reports and outcomes in (the engine is one)."""

    interrupts: Interrupts
    stopped: set[int]  # jobs in flight that the source ended at a rung

    def remaining(self) -> int: ...

    def propose(self) -> Proposal | None: ...

    def report(self, number: int, epoch: int, accuracy: float) -> bool: ...

    def restart(self, number: int, reason: str | None = None) -> None: ...

    def partial_result(self, number: int, device: str = "") -> ProxyResult: ...

    def record(self, number: int, outcome: Outcome, worker: tuple[int, int] | None = None) -> object: ...


class FixedJobs:
    """A `JobSource` over a fixed list of proposals: each runs to its end; outcomes are kept by number.

    Numbers must be distinct: they name the jobs (an audit uses its trials' numbers, others their index).
    """

    def __init__(self, proposals: Sequence[Proposal], report: Report | None = None) -> None:
        numbers = [proposal.number for proposal in proposals]
        if len(set(numbers)) != len(numbers):
            raise ValueError(f"jobs need distinct numbers, got {numbers}")
        self.proposals = list(proposals)
        self.waiting = list(proposals)
        self.by_number = {proposal.number: proposal for proposal in proposals}
        self.outcomes: dict[int, Outcome] = {}
        self.reported = report
        self.interrupts = Interrupts()
        self.stopped: set[int] = set()  # fixed jobs are never stopped early
        self.started: dict[int, float] = {}

    def remaining(self) -> int:
        return len(self.proposals) - len(self.outcomes)

    def propose(self) -> Proposal | None:
        if not self.waiting:
            return None
        proposal = self.waiting.pop(0)
        self.started[proposal.number] = time.monotonic()
        return proposal

    def report(self, number: int, epoch: int, accuracy: float) -> bool:
        return True

    def restart(self, number: int, reason: str | None = None) -> None:
        """A job's worker died or it is retried: it runs again from the start; nothing to forget here."""

    def partial_result(self, number: int, device: str = "") -> ProxyResult:
        raise RuntimeError(f"fixed job {number} was stopped early, which nothing asks for")

    def record(self, number: int, outcome: Outcome, worker: tuple[int, int] | None = None) -> None:
        if number not in self.by_number or number in self.outcomes:
            return
        self.outcomes[number] = outcome
        if self.reported is not None:
            self.reported(self.by_number[number], outcome)

    def results(self) -> list[Outcome]:
        """Each job's outcome in the order given; a job that never ended says so."""
        return [self.outcomes.get(p.number, "the driver returned no result for this job") for p in self.proposals]
