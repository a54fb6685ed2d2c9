"""The Ray Tune driver: a job source's proposals become Ray Tune trials, trained on the cluster's workers.

Ray Tune asks a `Searcher` for each next trial's config; `JobSearcher` answers with the source's next
proposal and hands finished trials' results back to it. The source is the engine in a search
(`run_search`), or a fixed list of jobs (`run_on_ray`: an audit's long runs, replicates, `gas compare`);
either way one Tuner set-up (`_fit`) runs them. Workers receive a proposal (plain data) and return
a result or an error; only this process writes the study, so one SQLite file stays correct even when the
workers are on other machines.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.error import TuneError
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from gas.defaults import TRIALS_PER_GPU
from gas.errors import GasError
from gas.evaluate.proxy import ProxyConfig, ProxyResult, check_data
from gas.evaluate.train import breaks_cuda_context, hold_to_share, says_out_of_memory
from gas.search.cluster import ray_cluster
from gas.search.config import SearchConfig, prepare
from gas.search.engine import Engine, SearchOutcome
from gas.search.jobs import FixedJobs, JobSource, Outcome, Proposal, Report, evaluate_proposal
from gas.search.progress import Progress

# Ray runs a trial again when its worker process died, or when the trial raised (`TrialRetried`, `WorkerBroken`);
# an error a trial returns is its result, recorded.
WORKER_RETRIES = 2
TUNE_SIGINT_SWITCH = "TUNE_DISABLE_SIGINT_HANDLER"  # "1": Tune leaves Ctrl-C to the program that runs it
RETRY = "retry"  # a worker's last report before it raises TrialRetried: why the trial deserves a second run
RETRIED = "retried"  # in a trial's config once it has been given its second run: there is no third


class TrialRetried(RuntimeError):
    """Raised by a trial whose failure may not be its own: Ray drops the worker and runs the trial on a new one."""


class WorkerBroken(RuntimeError):
    """Raised by a worker whose CUDA context an earlier trial broke: Ray replaces it before it trains anything."""


# The error after which this worker process can use its GPU no more (see `breaks_cuda_context`), once met.
_broken_by: str | None = None


def retry_reason(error: str, gpus: float) -> str | None:
    """Why a trial that failed with `error` (its one-line text) gets a second run on a fresh worker, or None.

    Out of memory on a GPU the trial shared with others (`gpus` below 1): its neighbours held part of the
    memory, and a later run meets other neighbours. A CUDA error that breaks the CUDA context: it may come
    from an earlier trial in the same process, and says nothing about this one until it runs in a new
    process. Any other error, or running out of memory on a GPU of its own, is the trial's own result.
    """
    if says_out_of_memory(error):
        return f"out of memory on a GPU shared with other trials: {error}" if 0 < gpus < 1 else None
    if breaks_cuda_context(error):
        return f"a CUDA error that breaks its worker: {error}"
    return None


def run_trial(config: dict[str, Any]) -> None:
    """One Ray Tune trial: evaluate the proposal, report per epoch, then the final result (or the error).

    A failure `retry_reason` names raises TrialRetried after reporting why, so Ray drops this worker and runs
    the trial again, later, on a new one; in that second run the error is reported as the trial's result. A
    worker left with a broken CUDA context raises WorkerBroken at its next trial, which Ray then runs elsewhere.
    """
    global _broken_by
    if _broken_by is not None:
        raise WorkerBroken(f"an earlier trial in this worker broke its CUDA context: {_broken_by}")
    import torch

    torch.set_num_threads(config["threads"])
    gpus = float(config.get("gpus", 0.0))
    hold_to_share(gpus)
    proposal = Proposal(**config["proposal"])
    outcome = evaluate_proposal(proposal, report=lambda metrics: tune.report(dict(metrics)))
    # The result travels as one JSON string: Tune flattens nested metrics ("zero_cost/naswot") on the way.
    _release_freed_memory()
    worker = {"worker_pid": os.getpid(), "worker_rss": _resident_bytes()}
    if isinstance(outcome, str):
        if breaks_cuda_context(outcome):
            _broken_by = outcome
        reason = retry_reason(outcome, gpus)
        if reason is not None and RETRIED not in config:
            tune.report({RETRY: reason, **worker})  # the driver records why before the raise restarts the trial
            raise TrialRetried(reason)
        tune.report({"error": outcome, **worker})
    else:
        tune.report({"result": json.dumps(outcome.to_dict()), **worker})


def _release_freed_memory() -> None:
    """Hand memory the trial freed back to the OS (glibc's malloc_trim), so a reused worker stays small."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim this way
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _resident_bytes() -> int:
    """This process's resident memory (0 where /proc does not say), recorded with each trial."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class JobScheduler(FIFOScheduler):
    """The driver's view of each trial as it runs: early stopping at rungs, and trials that start over.

    Each epoch's report goes to the source, which says whether the trial goes on. A trial that asks for a
    second run is marked so in its config (Ray starts the run from it); a trial that starts over, asked or
    after its worker died, has its earlier reports forgotten.
    """

    def __init__(self, source: JobSource) -> None:
        super().__init__()
        self.source = source

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        number = trial.config["trial_number"]
        if RETRY in result:
            trial.set_config({**trial.config, RETRIED: True})
            self.source.restart(number, str(result[RETRY]))
            return TrialScheduler.CONTINUE
        if "epoch" not in result or "accuracy" not in result:
            return TrialScheduler.CONTINUE
        goes_on = self.source.report(number, int(result["epoch"]), float(result["accuracy"]))
        return TrialScheduler.CONTINUE if goes_on else TrialScheduler.STOP

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self.source.restart(trial.config["trial_number"])


class JobSearcher(Searcher):
    """Ray Tune's view of a job source: each suggestion is the source's next proposal."""

    def __init__(self, source: JobSource, threads: int, progress: Progress | None = None, gpus: float = 0.0) -> None:
        super().__init__()  # no metric: failed trials report an error instead of an accuracy
        self.source = source
        self.threads = threads
        self.gpus = gpus  # each trial's share of a GPU, which its worker holds it to
        self.progress = progress
        self.numbers: dict[str, int] = {}  # Ray's trial id -> the study's trial number

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True

    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        """Nothing to save: the study is the search's state."""

    def suggest(self, trial_id: str) -> dict | None:
        proposal = self.source.propose()
        if self.progress is not None:
            self.progress.refresh()
        if proposal is None:
            # A training still out may ask for another seed: Tune asks again later instead of ending.
            return None if self.source.waiting() else Searcher.FINISHED
        self.numbers[trial_id] = proposal.number
        return {
            "trial_number": proposal.number,
            "proposal": proposal.to_dict(),
            "threads": self.threads,
            "gpus": self.gpus,
        }

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        number = self.numbers.pop(trial_id, None)
        if number is None:
            return
        if number in self.source.stopped:  # ended at a rung by JobScheduler: its reports are its result
            outcome: ProxyResult | str = self.source.partial_result(number, str((result or {}).get("device", "")))
        elif error or not result:
            outcome = f"the worker died {WORKER_RETRIES + 1} times running this trial"
        elif "error" in result:
            outcome = str(result["error"])
        elif "result" not in result:
            outcome = "stopped before its last epoch; not a fully trained result"
        else:
            outcome = ProxyResult.from_dict(json.loads(result["result"]))
        worker = (int(result["worker_pid"]), int(result["worker_rss"])) if result and result.get("worker_rss") else None
        self.source.record(number, outcome, worker)
        if self.progress is not None:
            self.progress.refresh(completed=1)


def _ray_trial_name(trial: Any) -> str:
    run = trial.config["proposal"].get("run", 0)
    return f"trial_{trial.config['trial_number']}" + (f"_seed{run}" if run else "")


@contextmanager
def _tune_leaves_interrupts_to_us() -> Iterator[None]:
    """Tune's own Ctrl-C handler only sets a flag its loop reads between steps, and a step waits for the
    searcher: with no trial running, Tune asks for the next suggestion for up to 10 minutes, while the sampler
    may be rejecting proposals over the budget for as long. The engine's handlers stop the search at once."""
    before = os.environ.get(TUNE_SIGINT_SWITCH)
    os.environ[TUNE_SIGINT_SWITCH] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(TUNE_SIGINT_SWITCH, None)
        else:
            os.environ[TUNE_SIGINT_SWITCH] = before


def gpus_per_trial(cluster_gpus: float, requested: float | None, device: str = "auto") -> float:
    """The GPUs each trial asks Ray for: `requested` (--gpus-per-trial) when given, else a packing gas picks.

    On a cluster with GPUs, TRIALS_PER_GPU trials share each GPU; on one without, or for a proxy that
    trains on the CPU (`device` "cpu"), trials take none. GasError for a request the device rules out.
    """
    if requested is not None:
        if requested < 0:
            raise GasError(f"--gpus-per-trial must be 0 or more, got {requested:g}")
        if requested > 0 and device == "cpu":
            raise GasError(f"--device cpu trains on CPUs; --gpus-per-trial {requested:g} would hold GPUs it never uses")
        return requested
    return 1.0 / TRIALS_PER_GPU if cluster_gpus > 0 and device != "cpu" else 0.0


def _packing_line(cluster_gpus: float, gpus: float, proxy: ProxyConfig) -> str:
    images = proxy.train_size or "all"
    return (
        f"gas search: {1 / gpus:g} trials per GPU on {cluster_gpus:g} GPU(s) (--gpus-per-trial {gpus:g}; pass "
        f"it to choose another packing); proxy {proxy.resolution}px, {proxy.train.epochs} epochs of {images} "
        f"images at batch {proxy.train.batch_size}"
    )


def _cpus_left_for_trials(config: SearchConfig) -> int | None:
    """A local cluster's CPUs: all of them, less the cores the driver measures latency on.

    Measurements must not share cores with training (they would time the neighbour as much as the
    network), so a latency search gives its trials the other cores. None: Ray's own count.
    """
    if config.latency is None or config.ray_address or config.latency.settings.device != "cpu":
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    reserved = config.latency.settings.effective_threads()
    if cores - reserved < config.cpus_per_trial:
        raise GasError(
            f"measuring latency on {reserved} core(s) leaves {cores - reserved} of {cores} for trials, fewer than "
            f"--cpus-per-trial {config.cpus_per_trial:g}; lower --latency-threads"
        )
    return cores - reserved


def trials_want_gpus(config: SearchConfig) -> bool:
    """Whether the search's trials would train on GPUs where the cluster has any."""
    return config.proxy.train.device != "cpu" and config.gpus_per_trial != 0


def measuring_gpu(visible: int, trials_want_gpus: bool, node_gpus: float | None = None) -> int:
    """The GPU the driver measures latency on (`--latency-device cuda`): the last of the `visible` ones.

    No trial may train on it, or a measurement would time the neighbour as much as the network. Ray hands
    a node's GPUs out from the first, so a node that offers one GPU fewer than the machine shows never gives
    the last to a trial: a local cluster is started so, and on a cluster gas joins, `node_gpus` (the GPUs
    its node on this machine offers) must leave it out. With one GPU that leaves none to train on, which is
    refused unless the trials train on CPUs. GasError in one line for each refusal.
    """
    if visible < 1:
        raise GasError("--latency-device cuda: latency is measured where the search runs, and it has no CUDA")
    if visible == 1 and trials_want_gpus:
        raise GasError(
            "--latency-device cuda measures on a GPU that no trial trains on, and this machine has one; "
            "train on CPUs (--device cpu) or search on a machine with more GPUs"
        )
    if node_gpus is not None and node_gpus > visible - 1:
        raise GasError(
            f"--latency-device cuda measures on this machine's last GPU, which its Ray node offers to trials "
            f"({node_gpus:g} of {visible} GPUs); start the node with `ray start --num-gpus {visible - 1}`"
        )
    return visible - 1


def _reserve_measuring_gpu(config: SearchConfig) -> int | None:
    """Make the GPU latency is measured on this process's current device; its index, or None when the
    search measures on CPUs or not at all. The latency model is built and used on that device alone."""
    if config.latency is None or config.latency.settings.device != "cuda":
        return None
    import torch

    index = measuring_gpu(torch.cuda.device_count(), trials_want_gpus(config))
    torch.cuda.set_device(index)
    return index


def run_search(config: SearchConfig) -> SearchOutcome:
    """Run (or resume) the search on Ray until the study holds `config.trials` trained trials.

    With `--latency-device cuda` the driver keeps one GPU for measuring (`measuring_gpu`): trials train on
    the others while it times each trained network on that one.
    """
    measuring = _reserve_measuring_gpu(config)
    config, data = prepare(config)
    started = time.monotonic()
    gpus_for_trials = measuring if not config.ray_address else None  # GPUs 0 .. measuring - 1
    with ray_cluster(config.ray_address, num_cpus=_cpus_left_for_trials(config), num_gpus=gpus_for_trials) as cluster:
        if measuring is not None and config.ray_address:  # a joined node's GPUs were its starter's choice
            measuring_gpu(measuring + 1, trials_want_gpus(config), cluster.node_gpus)
        gpus = gpus_per_trial(cluster.gpus, config.gpus_per_trial, config.proxy.train.device)
        if gpus and config.gpu_proxy is not None:
            # Only now is it known that trials get GPUs; prepare() checked the CPU proxy, so check this one.
            gpu_proxy = config.gpu_proxy
            if config.early_stop is not None:  # as prepare() sets it: the rungs' longest schedule
                gpu_proxy = gpu_proxy.with_overrides(epochs=config.early_stop.max_epochs)
            gpu_proxy, data = check_data(gpu_proxy, config.space)
            config = dataclasses.replace(config, proxy=gpu_proxy)
        if gpus and config.gpus_per_trial is None:
            print(_packing_line(cluster.gpus, gpus, config.proxy), flush=True)
        if gpus > cluster.gpus:
            raise GasError(f"--gpus-per-trial {gpus:g} asks for more GPUs than the cluster has ({cluster.gpus:g})")
        if config.cpus_per_trial > cluster.cpus:
            raise GasError(
                f"--cpus-per-trial {config.cpus_per_trial:g} asks for more CPUs than the cluster has ({cluster.cpus:g})"
            )
        if config.proxy.train.device == "auto":  # the workers' device, not the driver's, decides
            config = dataclasses.replace(config, proxy=config.proxy.with_overrides(device="cuda" if gpus else "cpu"))
        engine = Engine(config, data)
        engine.requeue()
        remaining = engine.remaining()
        if remaining <= 0:
            return SearchOutcome.of(engine, False, time.monotonic() - started)
        progress = Progress(engine.study, config.trials, config.progress)
        engine.on_rejected = progress.refresh
        interrupted = False
        try:
            resources = TrialResources(config.cpus_per_trial, gpus, config.max_concurrent)
            # Candidates finish their seeds after the last new genome: Tune's count is an upper bound, and the
            # engine ends the run (gas.search.replicates).
            runs = remaining * (engine.seeds.policy.max_seeds if engine.seeds else 1)
            _fit(engine, runs, resources, config.study_name, progress)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            interrupted = engine.abandon() or interrupted
            engine.finish()
            progress.close()
    slots = min(cluster.cpus // config.cpus_per_trial, cluster.gpus // gpus if gpus else float("inf"))
    return SearchOutcome.of(engine, interrupted, time.monotonic() - started, min(slots, config.max_concurrent or slots))


@dataclasses.dataclass(frozen=True)
class TrialResources:
    """What each trial asks Ray for, and how many may run at once (None: as many as fit)."""

    cpus: float
    gpus: float = 0.0
    max_concurrent: int | None = None


def _fit(source: JobSource, count: int, resources: TrialResources, name: str, progress: Progress | None) -> None:
    """Run up to `count` of `source`'s proposals as Ray Tune trials; KeyboardInterrupt when stopped.

    The one Tuner set-up every evaluation on Ray goes through: a search's trials and fixed jobs alike.
    """
    searcher = JobSearcher(source, max(1, int(resources.cpus)), progress, resources.gpus)
    tuner = tune.Tuner(
        tune.with_resources(run_trial, {"cpu": resources.cpus, "gpu": resources.gpus}),
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            num_samples=count,
            max_concurrent_trials=resources.max_concurrent,
            # One worker process serves many trials: no per-trial start-up, dataset caches stay warm.
            reuse_actors=True,
            # Ray's folder for a trial is named after the study's trial it trains.
            trial_name_creator=_ray_trial_name,
            trial_dirname_creator=_ray_trial_name,
            scheduler=JobScheduler(source),
        ),
        run_config=tune.RunConfig(
            name=f"{name}-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=str(Path("runs/ray").resolve()),
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=WORKER_RETRIES),
        ),
    )
    try:
        with _tune_leaves_interrupts_to_us(), source.interrupts.installed():
            tuner.fit()
    except TuneError as error:
        lines = [line for line in str(error).splitlines() if line.strip()]
        reason = (lines[-1] if lines else type(error).__name__)[:300]
        raise GasError(f"Ray Tune stopped the run: {reason}") from None


def run_on_ray(
    proposals: list[Proposal],
    address: str | None = None,
    cpus_per_trial: float = 1.0,
    report: Report | None = None,
    name: str = "jobs",
) -> list[Outcome]:
    """Train fixed jobs as Ray Tune trials on the cluster at `address` (default: a local one started here).

    Each runs the search's own trial function, so a job trains exactly as a search trial does; jobs that
    train on CUDA ask one GPU each. Outcomes come back in the order of `proposals`.
    """
    if cpus_per_trial <= 0:
        raise GasError(f"--cpus-per-trial must be positive, got {cpus_per_trial}")
    gpus = 1.0 if any(str(p.proxy["train"]["device"]).startswith("cuda") for p in proposals) else 0.0
    jobs = FixedJobs(proposals, report)
    with ray_cluster(address) as cluster:
        if gpus > cluster.gpus:
            raise GasError("these runs train on CUDA, so each needs a GPU, and the cluster has none")
        if cpus_per_trial > cluster.cpus:
            raise GasError(
                f"--cpus-per-trial {cpus_per_trial:g} asks for more CPUs than the cluster has ({cluster.cpus:g})"
            )
        _fit(jobs, len(proposals), TrialResources(cpus_per_trial, gpus), name, None)
    return jobs.results()
