"""What the drivers run: `Proposal`s (a genome, its proxy settings, its trial) from any `JobSource`.

The engine proposes a search's trials and their seed replicates. The audit and `gas compare` retrain genomes
that are already chosen, as `FixedJobs`. Both go through the same drivers (`gas.search.local.drive`,
`gas.search.ray_tune`), so every job trains in the same trial function, with the same retries and
resources, whoever asked for it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gas.errors import GasError
from gas.evaluate.proxy import ProxyConfig, ProxyResult, evaluate
from gas.search.interrupts import Interrupts
from gas.space import load_genome

#: What a worker hears after each epoch: {"epoch": ..., "accuracy": ...}.
EpochReport = Callable[[dict[str, float]], None]


@dataclass(frozen=True)
class Proposal:
    """A feasible, new genome on its way to a worker: plain data, so it travels to any machine."""

    number: int  # the study's trial number
    genome: dict[str, Any]
    proxy: dict[str, Any]
    run: int = 0  # which training of the trial: 0 its first, k its k-th replicate with another seed

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def evaluate_proposal(proposal: Proposal, report: EpochReport | None = None) -> ProxyResult | str:
    """What a worker does with a proposal: its result, or its error in one line. Never raises.

    A failure is returned, not raised: a raise would make Ray retry the trial, which is right only when
    the worker itself died.
    """
    try:
        genome = load_genome(proposal.genome)
        return evaluate(genome, ProxyConfig.from_dict(proposal.proxy), report=report)
    except GasError as error:
        return str(error)
    except Exception as error:  # a trial that raises is recorded with its error; the search goes on
        return f"{type(error).__name__}: {error}".splitlines()[0]


Outcome = ProxyResult | str
#: What a caller hears as each job ends: the job and its result, or its error in one line.
Report = Callable[[Proposal, Outcome], None]


class JobSource(Protocol):
    """What a driver runs: proposals out, per-epoch reports and outcomes in (the engine is one)."""

    interrupts: Interrupts
    stopped: set[int]  # jobs in flight that the source ended at a rung

    def remaining(self) -> int: ...

    def waiting(self) -> bool: ...

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
        self.queued = list(proposals)
        self.by_number = {proposal.number: proposal for proposal in proposals}
        self.outcomes: dict[int, Outcome] = {}
        self.reported = report
        self.interrupts = Interrupts()
        self.stopped: set[int] = set()  # fixed jobs are never stopped early
        self.started: dict[int, float] = {}

    def remaining(self) -> int:
        return len(self.proposals) - len(self.outcomes)

    def waiting(self) -> bool:
        """Fixed jobs never ask for more: nothing to wait for once the list is out."""
        return False

    def propose(self) -> Proposal | None:
        if not self.queued:
            return None
        proposal = self.queued.pop(0)
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
