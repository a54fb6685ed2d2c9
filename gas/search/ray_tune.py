"""The search loop: an Optuna study generates genomes under a budget; Ray Tune trains the feasible ones.

The budget is known before training, so the generator checks it first: a genome over budget is told to
the study as PRUNED with a positive constraint (TPE learns to avoid it) and never reaches a worker.
Feasible genomes become Ray Tune trials; their results are told back by this process alone, so one
SQLite file stays correct even when the workers are on other machines.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from ray import tune
from ray.tune.error import TuneError
from ray.tune.search import Searcher

from gas import study as keys
from gas.defaults import DEFAULT_SPACE, DEFAULT_TRIALS
from gas.errors import GasError
from gas.evaluate.proxy import ProxyConfig, check_data, evaluate
from gas.genome import Genome
from gas.search.cluster import ray_cluster
from gas.search.sampling import sample_genomes
from gas.space import SearchSpace, get_space, load_genome
from gas.units import compact_count, format_count

SAMPLERS = ("tpe", "nsga2", "gp", "random")
# Rejected proposals cost microseconds, but a sampler stuck outside the budget must not spin forever.
MAX_REJECTIONS_IN_A_ROW = 5000
# Ray retries a trial whose worker process died (not one whose training raised: that is recorded).
WORKER_RETRIES = 2


@dataclass(frozen=True)
class SearchConfig:
    """Everything `gas search` takes; defaults are the embedded ones."""

    budget: int
    space: str = DEFAULT_SPACE
    study: str | None = None
    storage: str | None = None
    trials: int = DEFAULT_TRIALS
    sampler: str = "tpe"
    seed: int = 0
    max_params: int | None = None
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    ray_address: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float | None = None  # None: one GPU per trial when the cluster has any
    max_concurrent: int | None = None
    progress: bool = True

    @property
    def study_name(self) -> str:
        return self.study or keys.default_study_name(get_space(self.space).name, self.budget, self.max_params)


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        # constant_liar keeps concurrent proposals apart; multivariate TPE models widths jointly.
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True, n_startup_trials=10)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=8)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=10)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise GasError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")


def _study_settings(config: SearchConfig, space: SearchSpace) -> dict[str, Any]:
    """What makes two runs part of the same search; a resumed study must match it."""
    return {
        "space": space.name,
        "budget": config.budget,
        "max_params": config.max_params,
        "proxy": {
            "dataset": config.proxy.dataset,
            "resolution": config.proxy.resolution,
            "epochs": config.proxy.epochs,
            "evaluator": config.proxy.evaluator,
        },
    }


def open_study(config: SearchConfig, space: SearchSpace) -> optuna.Study:
    """Create the study, or resume it when its settings match this run's."""
    storage = keys.storage_for(config.storage)
    settings = _study_settings(config, space)
    study = optuna.create_study(
        study_name=config.study_name,
        storage=storage,
        directions=list(keys.DIRECTIONS),
        sampler=make_sampler(config.sampler, config.seed),
        load_if_exists=True,
    )
    existing = study.user_attrs.get("settings")
    if existing is None:
        study.set_user_attr("settings", settings)
        study.set_user_attr("space", space.name)
        study.set_user_attr("budget", config.budget)
        study.set_user_attr("max_params", config.max_params)
        study.set_user_attr("seed", config.seed)
        study.set_user_attr("sampler", config.sampler)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(keys.OBJECTIVES))
    elif existing != settings:
        differences = ", ".join(
            f"{key} {json.dumps(existing.get(key))} (now {json.dumps(value)})"
            for key, value in settings.items()
            if existing.get(key) != value
        )
        raise GasError(f"study {config.study_name!r} was run with other settings: {differences}; pass another --study")
    return study


def requeue_interrupted(study: optuna.Study) -> int:
    """Trials left RUNNING by a killed search go back in the queue with the same parameters."""
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in stale:
        study._storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
        study._storage.set_trial_user_attr(trial._trial_id, keys.ERROR, "interrupted before it finished; re-queued")
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"requeued_from": trial.number}, skip_if_exists=False)
    return len(stale)


def trained_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Trials that spent a worker's time: what `--trials` counts."""
    return [
        trial
        for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL))
        if not trial.user_attrs.get("interrupted") and "duplicate_of" not in trial.user_attrs
    ]


def trial_result(config: dict[str, Any], report: Callable[[dict[str, float]], None] | None = None) -> dict[str, Any]:
    """Evaluate a suggestion of `GenomeSearcher.suggest`: its final metrics with "finished", or {"error": line}.

    Failures are returned, not raised: a raise would make Ray retry the trial, which is right only when
    the worker itself died. Drivers that evaluate in-process (experiments/bench_search) call this too.
    """
    try:
        genome = load_genome(config["genome"])
        result = evaluate(genome, ProxyConfig(**config["proxy"]), report=report)
    except GasError as error:
        return {"error": str(error)}
    except Exception as error:  # a trial that raises is recorded with its error; the search goes on
        return {"error": f"{type(error).__name__}: {error}".splitlines()[0]}
    zero_cost = {f"zero_cost/{name}": value for name, value in result.get("zero_cost", {}).items()}
    final = {key: value for key, value in result.items() if key != "zero_cost" and value is not None}
    return {**final, **zero_cost, "finished": True}


def run_trial(config: dict[str, Any]) -> None:
    """One Ray Tune trial: train the genome's proxy, report per epoch, then the final result (or the error)."""
    import torch

    torch.set_num_threads(config["threads"])
    tune.report(trial_result(config, report=lambda metrics: tune.report(dict(metrics))))


class _Progress:
    """One status line: trials done/total, proposals and feasible share, failures, best accuracy, front."""

    def __init__(self, study: optuna.Study, total: int, enabled: bool) -> None:
        from tqdm import tqdm

        self.study = study
        self.started = time.monotonic()
        done = len(trained_trials(study))
        self.bar = tqdm(total=total, initial=min(done, total), unit="trial", disable=not enabled, dynamic_ncols=True)
        self.refresh()

    def refresh(self, completed: int = 0) -> None:
        trials = self.study.get_trials(deepcopy=False)
        proposals = [t for t in trials if t.user_attrs.get(keys.FEASIBLE) is not None]
        feasible = sum(bool(t.user_attrs[keys.FEASIBLE]) for t in proposals)
        failed = sum(t.state == TrialState.FAIL and not t.user_attrs.get("interrupted") for t in trials)
        accuracies = [t.values[0] for t in trials if t.state == TrialState.COMPLETE]
        self.bar.update(completed)
        self.bar.set_postfix_str(
            f"proposed {len(proposals)} ({feasible / max(len(proposals), 1):.0%} feasible), failed {failed}, "
            f"best acc {max(accuracies, default=float('nan')):.3f}, front {len(self.study.best_trials)}",
            refresh=True,
        )

    def close(self) -> None:
        self.bar.close()


class GenomeSearcher(Searcher):
    """Ray Tune's view of the study: each suggestion is the next feasible, not-yet-trained genome.

    Nothing in it needs Ray running: a driver without Ray calls `suggest`, evaluates the suggestion with
    `trial_result` and passes the result to `on_trial_complete`, and the study is written the same way.
    """

    def __init__(
        self, study: optuna.Study, space: SearchSpace, config: SearchConfig, progress: _Progress | None = None
    ) -> None:
        super().__init__()  # no metric: failed trials report an error instead of an accuracy
        self.study = study
        self.space = space
        self.config = config
        self.progress = progress
        self.live: dict[str, optuna.Trial] = {}
        self.stopped_reason: str | None = None
        self.driver_seconds = 0.0  # time this process spends proposing and recording, outside any trial
        self.evaluated = {
            json.dumps(t.user_attrs[keys.GENOME], sort_keys=True): t
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if keys.GENOME in t.user_attrs
        }

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True

    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        """Nothing to save: the study is the search's state."""

    def _propose(self) -> tuple[optuna.Trial, Genome] | None:
        """Ask until a genome is within budget and new; record every rejection in the study."""
        budget, max_params = self.config.budget, self.config.max_params
        for _ in range(MAX_REJECTIONS_IN_A_ROW):
            trial = self.study.ask()
            genome = self.space.sample(trial)
            cost = self.space.cost(genome)
            trial.set_user_attr(keys.GENOME, genome.to_dict())
            trial.set_user_attr(keys.PARAMS, cost.params)
            trial.set_user_attr(keys.FLOPS, cost.flops)
            trial.set_user_attr(keys.BUDGET_UTILISATION, cost.flops / budget)
            # Constraints are relative overshoots so FLOPs and params weigh alike; <= 0 is feasible.
            trial.set_constraint("flops", (cost.flops - budget) / budget)
            reasons = []
            if cost.flops > budget:
                reasons.append(f"FLOPs {format_count(cost.flops)} over the {compact_count(budget)} budget")
            if max_params is not None:
                trial.set_constraint("params", (cost.params - max_params) / max_params)
                if cost.params > max_params:
                    reasons.append(f"params {format_count(cost.params)} over {compact_count(max_params)}")
            trial.set_user_attr(keys.FEASIBLE, not reasons)
            if reasons:
                trial.set_user_attr(keys.INFEASIBLE_REASON, "; ".join(reasons))
                self.study.tell(trial, state=TrialState.PRUNED)
                if self.progress is not None:
                    self.progress.refresh()
                continue
            earlier = self.evaluated.get(json.dumps(genome.to_dict(), sort_keys=True))
            if earlier is not None:  # same genome, same seed: same result, no need to train it again
                for key, value in earlier.user_attrs.items():
                    if key not in trial.user_attrs and key not in ("requeued_from", "interrupted"):
                        trial.set_user_attr(key, value)
                trial.set_user_attr("duplicate_of", earlier.number)
                self.study.tell(trial, list(earlier.values))
                continue
            proxy = self.config.proxy
            trial.set_user_attr(keys.DATASET, proxy.dataset)
            trial.set_user_attr(keys.PROXY_RESOLUTION, proxy.resolution)
            trial.set_user_attr(keys.PROXY_EPOCHS, proxy.epochs)
            trial.set_user_attr(keys.EVALUATOR, proxy.evaluator)
            trial.set_user_attr(keys.SEED, proxy.seed)
            return trial, genome
        self.stopped_reason = (
            f"{MAX_REJECTIONS_IN_A_ROW} proposals in a row were over budget; the sampler cannot find feasible "
            "genomes (raise the budget or try --sampler random)"
        )
        return None

    def suggest(self, trial_id: str) -> dict | None:
        started = time.perf_counter()
        try:
            return self._suggest(trial_id)
        finally:
            self.driver_seconds += time.perf_counter() - started

    def _suggest(self, trial_id: str) -> dict | None:
        proposal = self._propose()
        if proposal is None:
            return Searcher.FINISHED
        trial, genome = proposal
        self.live[trial_id] = trial
        return {
            "trial_number": trial.number,
            "genome": genome.to_dict(),
            "proxy": dataclasses.asdict(self.config.proxy),
            "threads": max(1, int(self.config.cpus_per_trial)),
        }

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        started = time.perf_counter()
        try:
            self._complete(trial_id, result, error)
        finally:
            self.driver_seconds += time.perf_counter() - started

    def _complete(self, trial_id: str, result: dict | None, error: bool) -> None:
        trial = self.live.pop(trial_id, None)
        if trial is None:
            return
        if error or not result:
            trial.set_user_attr(keys.ERROR, f"the worker died {WORKER_RETRIES + 1} times running this trial")
            self.study.tell(trial, state=TrialState.FAIL)
        elif "error" in result:
            trial.set_user_attr(keys.ERROR, str(result["error"]))
            self.study.tell(trial, state=TrialState.FAIL)
        elif not result.get("finished"):
            trial.set_user_attr(keys.ERROR, "stopped before its last epoch; not a fully trained result")
            self.study.tell(trial, state=TrialState.FAIL)
        else:
            self._record(trial, result)
        if self.progress is not None:
            self.progress.refresh(completed=1)

    def _record(self, trial: optuna.Trial, result: dict) -> None:
        accuracy = float(result["accuracy"])
        trial.set_user_attr(keys.ACCURACY, accuracy)
        trial.set_user_attr(keys.WALL_TIME, float(result["wall_time"]))
        trial.set_user_attr(keys.IMAGES_PER_SECOND, float(result.get("images_per_second", 0.0)))
        trial.set_user_attr(keys.DEVICE, str(result.get("device", "unknown")))
        trial.set_user_attr("epochs_completed", int(result.get("epochs", 0)))
        if result.get("mfu") is not None:
            trial.set_user_attr("mfu", float(result["mfu"]))
        zero_cost = {k.removeprefix("zero_cost/"): float(v) for k, v in result.items() if k.startswith("zero_cost/")}
        if zero_cost:
            trial.set_user_attr("zero_cost", zero_cost)
        frozen = self.study.tell(trial, [accuracy, float(trial.user_attrs[keys.FLOPS])])
        self.evaluated[json.dumps(frozen.user_attrs[keys.GENOME], sort_keys=True)] = frozen

    def abandon_live(self) -> None:
        """Trials still running when the search stops go back in the queue for the next run."""
        for trial in self.live.values():
            trial.set_user_attr("interrupted", True)
            trial.set_user_attr(keys.ERROR, "interrupted before it finished; re-queued")
            self.study.tell(trial, state=TrialState.FAIL)
            self.study.enqueue_trial(trial.params, user_attrs={"requeued_from": trial.number}, skip_if_exists=False)
        self.live.clear()


def _ray_trial_name(trial: Any) -> str:
    return f"trial_{trial.config['trial_number']}"


@contextmanager
def _terminate_like_interrupt() -> Iterator[None]:
    """`kill` stops a search the way Ctrl-C does: trials in flight are re-queued, finished ones stay."""
    previous = signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass
class SearchOutcome:
    study: optuna.Study
    trained: int  # trained trials in the study, counting earlier runs
    interrupted: bool
    stopped_reason: str | None
    elapsed: float  # seconds this run took, Ray start-up included
    driver_seconds: float = 0.0  # of which proposing genomes and recording results
    concurrency: float = 1.0  # trials that fit on the cluster at once


def run_search(config: SearchConfig) -> SearchOutcome:
    """Run (or resume) the search until the study holds `config.trials` trained trials."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = get_space(config.space)
    if config.trials < 1:
        raise GasError(f"--trials must be at least 1, got {config.trials}")
    if config.cpus_per_trial <= 0:
        raise GasError(f"--cpus-per-trial must be positive, got {config.cpus_per_trial}")
    check_data(config.proxy, space.name)
    try:
        sample_genomes(space.name, 1, config.seed, 224, config.budget, config.max_params)
    except GasError as error:
        raise GasError(f"no genome of the {space.name} space fits this budget: {error}") from None
    study = open_study(config, space)
    requeue_interrupted(study)
    remaining = config.trials - len(trained_trials(study))
    started = time.monotonic()
    if remaining <= 0:
        return SearchOutcome(study, len(trained_trials(study)), False, None, 0.0)

    with ray_cluster(config.ray_address) as cluster:
        gpus = config.gpus_per_trial if config.gpus_per_trial is not None else (1.0 if cluster.gpus else 0.0)
        if gpus > cluster.gpus:
            raise GasError(f"--gpus-per-trial {gpus:g} asks for more GPUs than the cluster has ({cluster.gpus:g})")
        if config.cpus_per_trial > cluster.cpus:
            raise GasError(
                f"--cpus-per-trial {config.cpus_per_trial:g} asks for more CPUs than the cluster has ({cluster.cpus:g})"
            )
        progress = _Progress(study, config.trials, config.progress)
        searcher = GenomeSearcher(study, space, config, progress)
        resources = {"cpu": config.cpus_per_trial, "gpu": gpus}
        tuner = tune.Tuner(
            tune.with_resources(run_trial, resources),
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                num_samples=remaining,
                max_concurrent_trials=config.max_concurrent,
                # One worker process serves many trials: no per-trial start-up, dataset caches stay warm.
                reuse_actors=True,
                # Ray's folder for a trial is named after the study's trial it trains.
                trial_name_creator=_ray_trial_name,
                trial_dirname_creator=_ray_trial_name,
            ),
            run_config=tune.RunConfig(
                name=f"{config.study_name}-{time.strftime('%Y%m%d-%H%M%S')}",
                storage_path=str(Path("runs/ray").resolve()),
                verbose=0,
                failure_config=tune.FailureConfig(max_failures=WORKER_RETRIES),
            ),
        )
        interrupted = False
        try:
            with _terminate_like_interrupt():
                tuner.fit()
        except KeyboardInterrupt:
            interrupted = True
        except TuneError as error:
            lines = [line for line in str(error).splitlines() if line.strip()]
            reason = (lines[-1] if lines else type(error).__name__)[:300]
            raise GasError(f"Ray Tune stopped the search: {reason}") from None
        finally:
            interrupted = interrupted or bool(searcher.live)
            searcher.abandon_live()
            progress.close()
    slots = min(cluster.cpus // config.cpus_per_trial, cluster.gpus // gpus if gpus else float("inf"))
    return SearchOutcome(
        study,
        len(trained_trials(study)),
        interrupted,
        searcher.stopped_reason,
        time.monotonic() - started,
        searcher.driver_seconds,
        min(slots, config.max_concurrent or slots),
    )


def feasible_share_by_half(study: optuna.Study) -> tuple[float, float]:
    """Share of feasible proposals in the first and second half of the study: the sampler learning."""
    proposals = [
        bool(t.user_attrs[keys.FEASIBLE])
        for t in study.get_trials(deepcopy=False)
        if keys.FEASIBLE in t.user_attrs and "requeued_from" not in t.user_attrs
    ]
    half = len(proposals) // 2
    first, second = proposals[:half], proposals[half:]
    return (sum(first) / max(len(first), 1), sum(second) / max(len(second), 1))
