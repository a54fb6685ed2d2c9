"""The search engine: ask-and-tell on the study, proposing feasible new genomes and recording their results.

Drivers (the Ray Tune one in `gas.search.ray_tune`, the in-process one in `gas.search.local`) decide only
where and when a proposal is evaluated; everything a search decides lives here:

    propose()  ask the sampler until a genome is within budget and new; every rejection is recorded
               (over budget: PRUNED with its reasons; a repeat of a genome trained before, whatever its
               training ended in: that outcome again, not a second training)
    record()   a worker's result or error, told to the study by this process alone
    requeue()  trials interrupted before they finished go back in the queue with the same genome

The budget is known before training, so a genome over it never reaches a worker; Optuna's samplers see its
positive constraint and learn to avoid the region. Nothing here imports Ray.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from gas import record
from gas.evaluate.datasets import DatasetCheck
from gas.evaluate.proxy import ProxyResult
from gas.search.config import SearchConfig, make_sampler, resumed_seed
from gas.search.early_stop import Rungs
from gas.search.interrupts import Interrupts
from gas.search.jobs import Proposal
from gas.search.latency_limit import LatencyJudge, prediction_accuracy
from gas.search.replicates import SeedRuns
from gas.space import SearchSpace, get_space, load_genome
from gas.storage import create_or_resume
from gas.study import (
    failed_trials,
    failure_summary,
    latency_pairs,
    reference_latencies,
    rung_cost,
    rung_histories,
    running_trials,
    trained_genomes,
    trained_trials,
)

# A sampler stuck outside the budget must not spin forever. Each rejection is written to the study (about
# 0.1-0.2 s in SQLite, most of it Optuna storing each parameter), so this many take 10 to 20 minutes.
MAX_REJECTIONS_IN_A_ROW = 5000



class Engine:
    """One search on one study: proposals out, results in. Drivers call `propose` and `record`."""

    def __init__(self, config: SearchConfig, data: DatasetCheck | None = None) -> None:
        self.config = config
        self.space: SearchSpace = get_space(config.space)
        self.budget = config.limits
        # Replicates (gas.search.replicates): trials held back for more seeds, told with their seed mean.
        replicates = config.replicates if config.proxy.evaluator == "train" else None
        self.seeds = SeedRuns(replicates, config.proxy.train.seed) if replicates else None
        self.study = create_or_resume(
            config.study_name,
            config.storage,
            make_sampler(config.sampler, config.seed),
            self.settings(),
            {
                record.StudyKey.SPACE: self.space.name,
                record.StudyKey.BUDGET: config.budget,
                record.StudyKey.MAX_PARAMS: config.max_params,
                record.StudyKey.SEED: config.seed,
                record.StudyKey.SAMPLER: config.sampler,
                record.StudyKey.DATA: dataclasses.asdict(data) if data else None,
                record.StudyKey.OBJECTIVE: config.objective,
            },
            config.objective,
        )
        earlier = len(self.study.get_trials(deepcopy=False))
        if earlier:
            # The sampler's seed alone would replay the first run's proposals (each one a duplicate, or a
            # rejection again): a resumed run draws from a stream of its own, still set by seed and study.
            self.study.sampler = make_sampler(config.sampler, resumed_seed(config.seed, earlier))
        self.judge = LatencyJudge(config.latency, config.budget) if config.latency else None
        self.live: dict[int, optuna.Trial] = {}
        self.interrupts = Interrupts()  # drivers install it; proposals and results are written whole
        self.on_rejected: Callable[[], None] = lambda: None  # a driver's progress display, in a run of rejections
        self.stopped_reason: str | None = None
        self.driver_seconds = 0.0  # time spent proposing and recording, outside any trial
        self.trained_before = len(trained_trials(self.study))
        self.completed_here = 0
        self.stopped_here = 0
        self.failed_here: list[str] = []
        self.evaluated = trained_genomes(self.study)
        self.rungs: Rungs | None = None
        if config.early_stop is not None:
            self.rungs = Rungs(config.early_stop)
            for number, history, cost in rung_histories(self.study):
                self.rungs.add_history(number, history, cost)
        self.histories: dict[int, list[float]] = {}  # accuracy per epoch of trials in flight
        self.stopped: set[int] = set()  # trials in flight that early stopping ended
        self.dispatched: dict[int, float] = {}  # when each trial in flight left, for stopped trials' wall time
        # The predicted latency constraint of each trial in flight, written only once its end is known: Optuna
        # keeps the first value set for a constraint, and a trained trial's must be the measured one.
        self.held_constraints: dict[int, dict[str, float]] = {}
        self.held_first: dict[int, ProxyResult] = {}  # a held trial's first training, its wall time summed
        self.out: set[int] = set()  # trials with a training on a worker now
        self.runs_done = sum(record.trial_record(t).seeds for t in trained_trials(self.study))
        if self.seeds is not None:
            for trial in trained_trials(self.study):
                self._remember(trial)

    def settings(self) -> dict[str, Any]:
        """What makes two runs part of the same search; a resumed study must match it."""
        return {
            "space": self.space.name,
            "budget": self.config.budget,
            "max_params": self.config.max_params,
            "proxy": self.config.proxy.settings(),
            "early_stop": self.config.early_stop.settings() if self.config.early_stop else None,
            "objective": self.config.objective,
            "latency": self.config.latency.to_dict() if self.config.latency else None,
            "replicates": self.seeds.policy.to_dict() if self.seeds else None,
        }

    def remaining(self) -> int:
        """Trainings still to go before the study holds `config.trials`' worth: each seed of a trial counts one."""
        return self.config.trials - self.runs_done - len(self.out)

    def waiting(self) -> bool:
        """Whether a training on a worker now may still ask for another seed: a driver waits for it."""
        return self.seeds is not None and bool(self.out)

    def requeue(self) -> int:
        """Trials a killed search left RUNNING go back in the queue with the same genome; returns how many."""
        stale = [trial.number for trial in running_trials(self.study) if trial.number not in self.live]
        for number in stale:
            record.requeue(self.study, number)
        return len(stale)

    def abandon(self) -> bool:
        """Trials still in flight when the search stops go back in the queue; True if there were any.

        A re-queued trial starts again from its first epoch, so its partial rung entries are forgotten.
        """
        numbers = sorted(self.live)
        for number in numbers:
            if number in self.held_first:  # trained once at least: told with the seeds it has
                self._tell_seeds(self.live[number])
                continue
            record.requeue(self.study, number)
            self._forget(number)
        self.live.clear()
        self.out.clear()
        return bool(numbers)

    def _forget(self, number: int) -> None:
        if self.rungs is not None:
            self.rungs.forget(number)
        self.histories.pop(number, None)
        self.stopped.discard(number)
        self.dispatched.pop(number, None)
        self.held_constraints.pop(number, None)

    def report(self, number: int, epoch: int, accuracy: float) -> bool:
        """A trial in flight finished `epoch` with `accuracy`; False when early stopping ends it here."""
        trial = self.live.get(number)
        if trial is None or number in self.held_first:  # a replicate trains its whole schedule
            return True
        self.histories.setdefault(number, []).append(float(accuracy))
        if self.rungs is None:
            return True
        goes_on = self.rungs.report(number, int(epoch), float(accuracy), self._rung_cost(trial))
        if not goes_on:
            self.stopped.add(number)
        return goes_on

    def restart(self, number: int, reason: str | None = None) -> None:
        """A trial in flight runs again from its first epoch (its worker died, or it is retried): its reports so
        far go, and `reason`, when given, is recorded on the trial as why it ran again."""
        trial = self.live.get(number)
        if trial is None:
            return
        if reason is not None:
            record.write_retried(trial, reason)
        if number in self.held_first:
            return
        if self.rungs is not None:
            self.rungs.forget(number)
        self.histories.pop(number, None)

    def partial_result(self, number: int, device: str = "") -> ProxyResult:
        """What a trial stopped at a rung on another machine left: the accuracies its reports carried."""
        history = tuple(self.histories.get(number, ()))
        return ProxyResult(
            accuracy=history[-1] if history else 0.0,
            accuracy_history=history,
            wall_time=time.monotonic() - self.dispatched.get(number, time.monotonic()),
            images_per_second=0.0,
            device=device,
            epochs=len(history),
            zero_cost={},
            mfu=None,
            loss=None,
            batch_size=self.config.proxy.train.batch_size,
            forward_flops=0,
        )

    def propose(self) -> Proposal | None:
        """The next training: a held trial's next seed, else a feasible genome not trained before; None when
        `config.trials` trainings are out or done (see `waiting`), or the sampler cannot find a genome."""
        started = time.perf_counter()
        try:
            if self.seeds is not None and self.seeds.queue:
                proposal = self._next_seed()
            elif self.remaining() <= 0:
                return None
            else:
                proposal = self._propose()
            if proposal is not None:
                self.out.add(proposal.number)
            return proposal
        finally:
            self.driver_seconds += time.perf_counter() - started

    def _next_seed(self) -> Proposal:
        number = self.seeds.queue.popleft()
        run = self.seeds.runs(number)
        proxy = self.config.proxy.with_overrides(seed=self.seeds.seed_of(number))
        return Proposal(number, record.trial_record(self.live[number]).genome, proxy.to_dict(), run)

    def _propose(self) -> Proposal | None:
        for _ in range(MAX_REJECTIONS_IN_A_ROW):
            with self.interrupts.held():
                proposal = self._judge_next()
            if proposal is not None:
                return proposal
            self.on_rejected()
        self.stopped_reason = (
            f"{MAX_REJECTIONS_IN_A_ROW} proposals in a row were over budget; the sampler cannot find feasible "
            "genomes (raise the budget or try --sampler random)"
        )
        return None

    def _judge_next(self) -> Proposal | None:
        """Ask the sampler once: the proposal if it is feasible and new, else None (recorded as rejected)."""
        trial = self.study.ask()
        genome = self.space.sample(trial)
        earlier = self.evaluated.get(record.genome_key(genome.to_dict()))
        if earlier is not None:  # trained under the same settings: its outcome stands, whatever is predicted now
            record.write_duplicate(self.study, trial, earlier)
            return None
        cost = self.space.cost(genome)
        predicted = self.judge.predict(genome) if self.judge else None
        constraints, reasons = self.budget.check(cost, predicted)
        if predicted is not None and reasons and self.budget.latency is not None and predicted > self.budget.latency:
            reasons[-1] = "predicted " + reasons[-1]
        held = {"latency": constraints.pop("latency")} if not reasons and "latency" in constraints else {}
        record.write_proposal(trial, genome, cost, self.budget.flops, constraints, predicted)
        if reasons:
            record.write_infeasible(self.study, trial, reasons)
            return None
        record.write_dispatch(trial, self.config.proxy)
        self.live[trial.number] = trial
        self.held_constraints[trial.number] = held
        self.dispatched[trial.number] = time.monotonic()
        return Proposal(trial.number, genome.to_dict(), self.config.proxy.to_dict())

    def record(
        self, number: int, outcome: ProxyResult | str, worker: tuple[int, int] | None = None
    ) -> FrozenTrial | None:
        """Tell the study a proposal's result, or its error; a trial not in flight here is ignored.

        `worker`: the (pid, resident bytes) of the process that ran it, where the driver knows them."""
        started = time.perf_counter()
        try:
            with self.interrupts.held():
                return self._record(number, outcome, worker)
        finally:
            self.driver_seconds += time.perf_counter() - started

    def _record(self, number: int, outcome: ProxyResult | str, worker: tuple[int, int] | None) -> FrozenTrial | None:
        trial = self.live.pop(number, None)
        if trial is None:
            return None
        self.out.discard(number)
        self.runs_done += 1
        if worker is not None:
            record.write_worker(trial, *worker)
        held = number in self.held_first
        frozen = self._seed_outcome(trial, outcome) if held else self._write_outcome(trial, outcome)
        if frozen is None:  # held back for another seed
            self.live[number] = trial
            return None
        if self.seeds is not None:
            self._remember(frozen)
        # Whatever the training ended in, a later proposal of the genome repeats it instead of training again.
        self.evaluated.setdefault(record.genome_key(record.trial_record(frozen).genome), frozen)
        return frozen if frozen.state == TrialState.COMPLETE else None

    def _write_outcome(self, trial: optuna.Trial, outcome: ProxyResult | str) -> FrozenTrial | None:
        number = trial.number
        stopped = number in self.stopped
        held = self.held_constraints.get(number, {})
        self._forget(number)
        if isinstance(outcome, str):
            record.write_constraints(trial, held)
            self.failed_here.append(outcome)
            return record.write_failure(self.study, trial, outcome)
        if stopped:
            record.write_constraints(trial, held)
            self.stopped_here += 1
            return record.write_stopped(self.study, trial, outcome)
        self.completed_here += 1
        measured = self._measure(trial)
        if measured is not None:
            constraints, reasons = self.budget.check(
                self.space.cost(load_genome(record.trial_record(trial).genome)), measured
            )
            # The others were written with the proposal; without a limit there is no latency constraint.
            latency = {name: value for name, value in constraints.items() if name == "latency"}
            if reasons:
                return record.write_over_limit(self.study, trial, outcome, latency, reasons)
            record.write_constraints(trial, latency)
        if self.rungs is not None:
            self.rungs.add_history(number, outcome.accuracy_history, self._rung_cost(trial))
        cost = self._objective_cost(trial, measured)
        if self.seeds is not None and self.seeds.wants_seeds(number, outcome.accuracy, cost):
            self.held_first[number] = outcome
            return None
        seeds = [(self.config.proxy.train.seed, outcome.accuracy)] if self.seeds is not None else []
        return record.write_result(self.study, trial, outcome, cost, seeds)

    def _seed_outcome(self, trial: optuna.Trial, outcome: ProxyResult | str) -> FrozenTrial | None:
        """A held trial's further training came back: hold it for one more seed, or tell it with its mean."""
        number, first = trial.number, self.held_first[trial.number]
        if isinstance(outcome, str):  # a replicate that fails leaves the trial with the seeds it has
            record.write_retried(trial, f"seed {self.seeds.seed_of(number)}: {outcome}")
        else:
            self.held_first[number] = dataclasses.replace(first, wall_time=first.wall_time + outcome.wall_time)
        accuracy = None if isinstance(outcome, str) else outcome.accuracy
        may_race = self.remaining() > 0
        if self.seeds.wants_more(number, accuracy, self._told_cost(trial), may_race):
            return None
        return self._tell_seeds(trial)

    def _tell_seeds(self, trial: optuna.Trial) -> FrozenTrial:
        """Tell a held trial with the mean of its seeds; its first training's history, their summed wall time."""
        first = self.held_first.pop(trial.number)
        accuracies = self.seeds.release(trial.number)
        seeds = [(self.seeds.first_seed + index, accuracy) for index, accuracy in enumerate(accuracies)]
        mean = dataclasses.replace(first, accuracy=sum(accuracies) / len(accuracies))
        return record.write_result(self.study, trial, mean, self._told_cost(trial), seeds)

    def _told_cost(self, trial: optuna.Trial) -> float:
        return self._objective_cost(trial, record.trial_record(trial).measured_latency)

    def _remember(self, trial: FrozenTrial) -> None:
        """A trained trial, told: its seeds count towards the noise, and it stands on the front if it can."""
        recorded = record.trial_record(trial)
        if trial.state != TrialState.COMPLETE or recorded.duplicate_of is not None:
            return
        accuracies = [accuracy for _, accuracy in recorded.seed_accuracies] or [float(trial.values[0])]
        feasible = all(value <= 0 for value in trial.constraints.values())
        self.seeds.told(trial.number, accuracies, float(trial.values[1]) if feasible else None)

    def _measure(self, trial: optuna.Trial) -> float | None:
        """The trained network's latency on the target device (None without one), recorded on the trial with
        the time measuring it took: work outside the trial that a latency-aware search costs."""
        if self.judge is None:
            return None
        started = time.perf_counter()
        measured = self.judge.measure(load_genome(record.trial_record(trial).genome))
        record.write_measured_latency(trial, measured.median, time.perf_counter() - started, measured.reference)
        return measured.median

    def _objective_cost(self, trial: optuna.Trial, measured: float | None) -> float:
        if self.config.objective == "latency" and measured is not None:
            return measured
        recorded = record.trial_record(trial)
        return float(recorded.params if self.config.objective == "params" else recorded.flops)

    def _rung_cost(self, trial: optuna.Trial) -> float:
        return rung_cost(record.trial_record(trial), self.config.objective)

    def latency_accuracy(self) -> dict | None:
        """How well the latency model predicted this study's trained trials (None without a latency target)."""
        if self.judge is None:
            return None
        return prediction_accuracy(latency_pairs(self.study), reference_latencies(self.study))

    def finish(self) -> None:
        """At the end of a run: the proxy's measured noise and the latency model's accuracy go to the study, the
        recalibrated latency model to disk."""
        if self.seeds is not None:
            record.write_noise(self.study, self.seeds.noise())
        if self.judge is None:
            return
        accuracy = self.latency_accuracy()
        record.write_latency(self.study, self.config.latency.to_dict(), accuracy)
        self.judge.save()

    def failure_verdict(self) -> str | None:
        """Why this run failed as a whole (every trial it trained failed), or None."""
        if self.failed_here and not self.completed_here and not self.stopped_here:
            count = len(self.failed_here)
            return f"all {count} trials of this run failed; the first: {self.failed_here[0]}"
        if not self.complete():
            return f"no trial was trained to the end{f': {self.stopped_reason}' if self.stopped_reason else ''}"
        return None

    def trained(self) -> list[FrozenTrial]:
        return trained_trials(self.study)

    def complete(self) -> list[FrozenTrial]:
        return [t for t in self.trained() if t.state == TrialState.COMPLETE]


@dataclass
class SearchOutcome:
    """What a driver reports when a search stops."""

    study: optuna.Study
    trained: int  # trained trials in the study, counting earlier runs
    interrupted: bool
    stopped_reason: str | None
    elapsed: float  # seconds this run took, Ray start-up included
    driver_seconds: float = 0.0  # of which proposing genomes and recording results
    concurrency: float = 1.0  # trials that fit on the cluster at once
    failures: str | None = None  # 'N failed: ...' over the whole study, or None
    failed_run: str | None = None  # set when every trial this run trained failed

    @classmethod
    def of(cls, engine: Engine, interrupted: bool, elapsed: float, concurrency: float = 1.0) -> SearchOutcome:
        failed = failed_trials(engine.study)
        return cls(
            engine.study,
            len(engine.trained()),
            interrupted,
            engine.stopped_reason,
            elapsed,
            engine.driver_seconds,
            concurrency,
            failure_summary(failed) if failed else None,
            engine.failure_verdict(),
        )
