"""What a search runs under (`SearchConfig`), its sampler, and the checks made before the first trial."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import optuna

from gas.defaults import DEFAULT_SPACE, DEFAULT_TRIALS, OBJECTIVE_AXES, SAMPLERS
from gas.errors import GasError
from gas.evaluate.datasets import DatasetCheck
from gas.evaluate.proxy import ProxyConfig, check_data
from gas.search.budget import Budget
from gas.search.early_stop import EarlyStopping
from gas.search.latency_limit import LatencyJudge, LatencyTarget
from gas.search.replicates import Replicates
from gas.search.sampling import sample_genomes
from gas.space import get_space
from gas.study import default_study_name


@dataclass(frozen=True)
class SearchConfig:
    """Everything `gas search` takes; defaults are the embedded ones."""

    budget: int | None  # FLOPs at 224px; None when a latency limit alone bounds the search
    space: str = DEFAULT_SPACE
    study: str | None = None
    storage: str | None = None
    trials: int = DEFAULT_TRIALS
    sampler: str = "tpe"
    seed: int = 0
    max_params: int | None = None
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    # The proxy instead of `proxy` when trials get GPUs (`gas search` passes `default_proxy(True, ...)`);
    # None: `proxy` on every device.
    gpu_proxy: ProxyConfig | None = None
    ray_address: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float | None = None  # None: TRIALS_PER_GPU trials share each GPU when the cluster has any
    max_concurrent: int | None = None
    progress: bool = True
    early_stop: EarlyStopping | None = None  # None: every feasible trial trains its whole schedule
    latency: LatencyTarget | None = None  # the device to be fast on, and the limit there (see latency_limit)
    objective: str = "flops"  # the front's cost axis: flops, params or latency
    # Seeds for the front's candidates, and the cap racing adds up to (gas.search.replicates); None: one seed
    # per trial. Trials of the zero-cost evaluator are never replicated.
    replicates: Replicates | None = field(default_factory=Replicates)

    @property
    def study_name(self) -> str:
        limit = self.latency.limit if self.latency else None
        return self.study or default_study_name(get_space(self.space).name, self.budget, self.max_params, limit)

    @property
    def limits(self) -> Budget:
        return Budget(self.budget, self.max_params, self.latency.limit if self.latency else None)


def resumed_seed(seed: int, earlier_trials: int) -> int:
    """The sampler seed of a run that resumes a study holding `earlier_trials` trials."""
    return int(np.random.SeedSequence([seed, earlier_trials]).generate_state(1)[0])


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


def prepare(config: SearchConfig) -> tuple[SearchConfig, DatasetCheck]:
    """Check a search's settings before anything starts; one-line GasError for the first problem.

    Returns the config with its data paths made absolute, and what the dataset check found.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = get_space(config.space)
    if config.trials < 1:
        raise GasError(f"--trials must be at least 1, got {config.trials}")
    if config.cpus_per_trial <= 0:
        raise GasError(f"--cpus-per-trial must be positive, got {config.cpus_per_trial}")
    make_sampler(config.sampler, config.seed)
    limits = config.limits  # a search with neither a FLOPs budget nor a latency limit is refused here
    if config.objective not in OBJECTIVE_AXES:
        raise GasError(f"unknown objective {config.objective!r}; choose one of {', '.join(OBJECTIVE_AXES)}")
    if config.objective == "latency" and config.latency is None:
        raise GasError("--objective latency needs the device to measure on (--latency-device)")
    proxy = config.proxy
    if config.early_stop is not None:
        if config.early_stop.max_epochs < 2 or config.early_stop.eta < 2:
            raise GasError("early stopping needs --max-epochs of at least 2 (and eta of at least 2)")
        if proxy.evaluator != "train":
            raise GasError("early stopping needs trained proxies; the zero-cost evaluator has no epochs to stop")
        proxy = proxy.with_overrides(epochs=config.early_stop.max_epochs)
    proxy, data = check_data(proxy, space.name)
    try:
        sample_genomes(space.name, 1, config.seed, 224, config.budget, config.max_params)
    except GasError as error:
        raise GasError(f"no genome of the {space.name} space fits this budget: {error}") from None
    if config.latency is not None:
        # Builds (or loads) the device's latency model now, before any trial loads the machine it times.
        judge = LatencyJudge(config.latency, limits.flops)
        judge.check_reachable(space.name, config.seed, limits.flops, limits.params)
        judge.save()
    return dataclasses.replace(config, proxy=proxy), data
