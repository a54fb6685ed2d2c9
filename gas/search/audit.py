"""The fidelity audit: whether a study's proxy ranking holds when a sample of its trials is trained longer.

A search ranks genomes by a cheap proxy: a few epochs at a low resolution, or a score at initialisation
(the zero-cost evaluator). The audit takes a few of the study's fully trained trials (COMPLETE, not
repeats): the Pareto front first, then trials spread over the accuracy range of the rest, so the ranking
is tested across what the search saw and not only among near-equals at the top. It trains each again with
a longer schedule: `epoch_factor` times the epochs, at twice the proxy resolution where the space allows
it, always by training (a zero-cost study is exactly the one whose ranking most needs checking), with the
study's seed, data and every other setting unchanged, so the schedule is the only difference. Then:

    tau               Kendall's tau-b between the search's accuracies and the long runs' accuracies of the
                      audited trials. 1: the long schedule orders them exactly as the search did; 0: no
                      better than chance; -1: reversed. Among n trials one swapped pair moves tau by
                      4 / (n (n - 1)), a third at n = 4, so a small audit speaks in coarse steps.
    interval          the 95% interval of tau (`gas.stats.tau_interval`), None under 6 trials, where no
                      interval would be honest. With the handful of trials an audit can afford it is wide;
                      an interval that reaches down to 0 says this sample cannot tell the proxy's ranking
                      from chance.
    front_order_held  whether the audited front trials come out in the same order by accuracy in the long
                      runs (no two swap places; a tie in the long runs is not a swap). This is what decides
                      which genome `gas export --pick best` hands over. None with fewer than two of them.

How to read it: a tau near 1 with the front's order held means the proxy's picks stand. A low tau, or a
broken front order, means the front reflects the proxy's schedule as much as the architectures: train
the picks longer before trusting the choice, or search again with more epochs or a higher resolution.

Finished Optuna trials take no new attributes, so the audit is one study user attribute
(`StudyKey.AUDIT`, read with `gas.record.audit_record`) holding both accuracies of each audited trial; a new
audit replaces the previous one. Only this process writes it; the long runs go through an `evaluate`
callable: the drivers' fixed jobs, `gas.search.local.run_in_process` here or `gas.search.ray_tune.run_on_ray`
on Ray Tune workers, where they train as the search's trials do.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from gas import record
from gas.defaults import DEFAULT_SPACE
from gas.errors import GasError
from gas.stats import MIN_TAU_INTERVAL_N, kendall_tau, tau_interval, tau_interval_width
from gas.study import front, trained_trials

if TYPE_CHECKING:  # the proxy imports torch and the Ray driver imports Ray; reading an audit needs neither
    from gas.evaluate.proxy import ProxyConfig, ProxyResult
    from gas.search.jobs import Proposal

__all__ = [
    "AuditConfig",
    "after_search",
    "audit_line",
    "format_audit",
    "long_schedule",
    "print_outcome",
    "run_audit",
    "select_trials",
    "study_proxy",
    "study_space",
]

# Tau over two trials is +1 or -1 whatever the proxy is worth; three is the least that ranks anything.
MIN_TRIALS = 3

Evaluate = Callable[[list["Proposal"]], list["ProxyResult | str"]]


@dataclass(frozen=True)
class AuditConfig:
    """How many trials an audit retrains, and how much longer it trains them."""

    trials: int = 4  # trials retrained: the front first, then spread over the accuracy range
    epoch_factor: int = 3  # the long schedule trains this many times the search's epochs
    resolution: int | None = None  # None: twice the search's resolution if the space allows it, else the same
    data_dir: str | None = None  # the dataset's folder where it needs one (a study does not record paths)


def after_search(trials: int, proxy: ProxyConfig) -> AuditConfig:
    """The audit every `gas search` ends with: the proxy's resolution and three times its epochs.

    Doubling the resolution as `gas audit` does would quadruple its cost, more than the default search's
    envelope holds.
    """
    return AuditConfig(trials=trials, epoch_factor=3, resolution=proxy.resolution, data_dir=proxy.data_dir)


def front_order_held(pairs: Mapping[int, record.AuditPair], on_front: Sequence[int]) -> bool | None:
    """Whether no two of the `on_front` trials swap places between the search and the long runs."""
    if len(on_front) < 2:
        return None
    for a, b in itertools.combinations(on_front, 2):
        search = pairs[a].search - pairs[b].search
        long = pairs[a].long - pairs[b].long
        if search * long < 0:
            return False
    return True


# ---- what to retrain, and how ----------------------------------------------------------------------


#: The widest 95% interval on an audit's Kendall τ worth the long runs: `sized_trials` aims under it.
MAX_INTERVAL_WIDTH = 0.4
#: The τ an audit expects before the study has measured its proxy's test-retest τ.
PRIOR_TAU = 0.5


def sized_trials(study: optuna.Study) -> tuple[int, str | None]:
    """How many trials an audit retrains when not told: enough for a 95% τ interval at most
    `MAX_INTERVAL_WIDTH` wide, at the τ the proxy's own noise allows (its test-retest τ: a proxy ranks a
    long schedule no better than it ranks itself again); with a plain statement when the study has fewer
    trained trials than that, all of which it then retrains."""
    noise = record.noise_record(study)
    expected = noise.retest_tau if noise is not None and noise.retest_tau is not None else PRIOR_TAU
    widths = ((n, tau_interval_width(expected, n)) for n in itertools.count(MIN_TAU_INTERVAL_N))
    needed = next(n for n, width in widths if width <= MAX_INTERVAL_WIDTH)
    available = len(candidates(study))
    if available >= needed:
        return needed, None
    return max(available, 3), (
        f"a 95% interval on Kendall τ at most {MAX_INTERVAL_WIDTH} wide needs {needed} trials at the expected τ "
        f"{expected:.2f}; the study has {available} trained to the end, too few: its interval will be wider"
    )


def candidates(study: optuna.Study) -> list[FrozenTrial]:
    """Trials trained to the end by the search: COMPLETE, and not the repeat of an earlier genome."""
    return [trial for trial in trained_trials(study) if trial.state == TrialState.COMPLETE]


def _spread(trials: Sequence[FrozenTrial], count: int) -> list[FrozenTrial]:
    """`count` of `trials` at evenly spaced positions, both ends included; the first alone for a count of 1."""
    if count >= len(trials):
        return list(trials)
    if count <= 0:
        return []
    if count == 1:
        return [trials[0]]
    return [trials[round(index * (len(trials) - 1) / (count - 1))] for index in range(count)]


def select_trials(study: optuna.Study, n: int) -> list[FrozenTrial]:
    """The `n` trials an audit retrains: the front (cheapest first), then the rest spread over accuracy.

    A front of more than `n` trials is thinned evenly along its FLOPs, keeping both ends; the places left
    after the front go to the other trials at evenly spaced accuracy ranks, least accurate first, so the
    sample spans the accuracies the search produced.
    """
    trained = candidates(study)
    numbers = {trial.number for trial in trained}
    front_trials = [trial for trial in front(study) if trial.number in numbers]
    on_front = {trial.number for trial in front_trials}
    rest = sorted((t for t in trained if t.number not in on_front), key=lambda t: (t.values[0], t.number))
    chosen = _spread(front_trials, n)
    return chosen + _spread(rest, n - len(chosen))


def recorded_proxy(study: optuna.Study) -> dict[str, Any]:
    """The proxy settings the study's trials were trained under (`ProxyConfig.settings()`, flat)."""
    settings = record.study_record(study).proxy_settings()
    if settings is None:
        raise GasError(f"study {study.study_name!r} records no proxy settings, so its trials cannot be retrained")
    return settings


def study_proxy(study: optuna.Study, data_dir: str | None = None) -> ProxyConfig:
    """The proxy the study's trials were trained under, rebuilt, with its data in `data_dir`.

    One-line GasError for settings this version cannot rebuild, or a study whose dataset this version splits
    into train, validation and test otherwise than it did (a retrain would learn and be scored on other
    images, some of them the test split's).
    """
    from gas.evaluate.datasets import split_version
    from gas.evaluate.proxy import ProxyConfig
    from gas.evaluate.train import TrainConfig

    proxy_settings = recorded_proxy(study)
    splits = proxy_settings.pop("splits", None)
    known = {f.name for f in dataclasses.fields(ProxyConfig)} | {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(proxy_settings) - known)
    if unknown:
        # Retraining without a setting that changed the search's results would compare two different proxies.
        raise GasError(
            f"study {study.study_name!r} records proxy settings this version of gas does not know: "
            f"{', '.join(unknown)}; retrain its trials with the version that ran the search"
        )
    dataset = str(proxy_settings.get("dataset"))
    if splits != split_version(dataset):
        raise GasError(
            f"study {study.study_name!r} searched on an earlier split of {dataset} into train and validation "
            "images, some of which this version holds out as test images; search again to retrain its trials"
        )
    # The data's location is this machine's business: the study never holds it (see ProxyConfig.settings).
    proxy_settings.pop("data_dir", None)
    return ProxyConfig().with_overrides(**proxy_settings, data_dir=data_dir)


def study_space(study: optuna.Study) -> str:
    """The space the study searched."""
    return str(record.study_record(study).searched_space or DEFAULT_SPACE)


def long_schedule(study: optuna.Study, config: AuditConfig) -> ProxyConfig:
    """The study's proxy with the longer schedule: more epochs, a higher resolution if it fits, training.

    One-line GasError for settings this version cannot rebuild, a resolution the space refuses or a
    dataset that is not where `config.data_dir` says.
    """
    from gas.evaluate.proxy import check_data, check_resolution

    # The resolution check samples probe genomes through throwaway in-memory studies; their creation is
    # not news to someone auditing (the search's `prepare` quiets Optuna the same way).
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = study_space(study)
    proxy = study_proxy(study, config.data_dir)
    resolution = config.resolution
    if resolution is None:
        resolution = 2 * proxy.resolution
        try:
            check_resolution(resolution, space)
        except GasError:
            resolution = proxy.resolution
    long = proxy.with_overrides(
        evaluator="train",
        epochs=proxy.train.epochs * config.epoch_factor,
        resolution=resolution,
        zero_cost_batch=0,  # the audit reads accuracies only; scores at initialisation would cost time for nothing
    )
    # The data and resolution are checked here, once, rather than in every long run. The device is checked
    # where the runs train (a Ray driver need not have the workers' GPU), so the check sees a CPU.
    checked, _ = check_data(long.with_overrides(device="cpu"), space)
    return dataclasses.replace(long, dataset=checked.dataset, data_dir=checked.data_dir)


# ---- the audit -------------------------------------------------------------------------------------


def run_audit(
    study: optuna.Study,
    config: AuditConfig,
    evaluate: Evaluate,
    progress: Callable[[str], None] | None = None,
) -> record.AuditRecord:
    """Retrain a sample of `study` with a longer schedule, record the audit in the study and return it.

    `evaluate` trains the proposals and returns, in their order, each one's result or its error in one
    line (`gas.search.local.run_in_process`, or `gas.search.ray_tune.run_on_ray` with its address bound).
    `progress` hears what is about to train. One-line GasError for bad input, or when fewer than three long runs finish.

    >>> audit = run_audit(study, AuditConfig(trials=4), run_in_process)  # doctest: +SKIP
    >>> audit.tau, audit.interval, audit.front_order_held  # doctest: +SKIP
    """
    from gas.search.jobs import Proposal

    started = time.perf_counter()
    if config.trials < MIN_TRIALS:
        raise GasError(f"an audit needs at least {MIN_TRIALS} trials to rank, got --trials {config.trials}")
    if config.epoch_factor < 1:
        raise GasError(f"--epoch-factor must be at least 1, got {config.epoch_factor}")
    trained = candidates(study)
    if len(trained) < MIN_TRIALS:
        raise GasError(
            f"study {study.study_name!r} has {len(trained)} fully trained trials; an audit needs at least {MIN_TRIALS}"
        )
    long = long_schedule(study, config)
    chosen = select_trials(study, config.trials)
    front_numbers = {trial.number for trial in front(study)}
    if progress is not None:
        on_front = sum(trial.number in front_numbers for trial in chosen)
        progress(
            f"retraining trials {', '.join(str(t.number) for t in chosen)} ({on_front} on the front) for "
            f"{long.train.epochs} epochs at {long.resolution}px on {long.dataset}"
        )
    proposals = [Proposal(t.number, dict(record.trial_record(t).genome), long.to_dict()) for t in chosen]
    outcomes = evaluate(proposals)
    if len(outcomes) != len(proposals):
        raise GasError(f"the audit's evaluator returned {len(outcomes)} results for {len(proposals)} trials")

    pairs: dict[int, record.AuditPair] = {}
    failed: dict[int, str] = {}
    for trial, outcome in zip(chosen, outcomes, strict=True):
        if isinstance(outcome, str):
            failed[trial.number] = outcome
        else:
            pairs[trial.number] = record.AuditPair(search=float(trial.values[0]), long=float(outcome.accuracy))
    if len(pairs) < MIN_TRIALS:
        first = next(iter(failed.values()), "no result")
        raise GasError(
            f"only {len(pairs)} of {len(chosen)} long runs finished, too few to rank; the first error: {first}"
        )
    search = [pair.search for pair in pairs.values()]
    retrained = [pair.long for pair in pairs.values()]
    tau = kendall_tau(search, retrained)
    low, high = tau_interval(search, retrained)
    audited_front = tuple(number for number in pairs if number in front_numbers)
    audit = record.AuditRecord(
        epochs=long.train.epochs,
        resolution=long.resolution,
        evaluator=long.evaluator,
        epoch_factor=config.epoch_factor,
        search_proxy=recorded_proxy(study),
        pairs=pairs,
        front=audited_front,
        failed=failed,
        # An undefined tau (every accuracy tied) is None: the study stores JSON, which has no nan.
        tau=None if math.isnan(tau) else tau,
        interval=None if math.isnan(low) else (low, high),
        n=len(pairs),
        front_order_held=front_order_held(pairs, audited_front),
        seconds=time.perf_counter() - started,
    )
    return record.write_audit(study, audit)


# ---- showing an audit ------------------------------------------------------------------------------


def print_outcome(proposal: Proposal, outcome: ProxyResult | str) -> None:
    """A `report` for the drivers' fixed jobs that prints each long run's outcome as it finishes."""
    shown = outcome if isinstance(outcome, str) else f"long accuracy {outcome.accuracy:.2%} in {outcome.wall_time:.0f}s"
    print(f"  trial {proposal.number}: {shown}", flush=True)


def _tau_text(audit: record.AuditRecord) -> str:
    if audit.tau is None:
        return "Kendall τ undefined (the accuracies are all tied)"
    if audit.interval:
        within = f" (95% interval {audit.interval[0]:.2f} to {audit.interval[1]:.2f})"
    else:  # an audit too small for an honest interval says so rather than look certain
        within = f" (no interval under {MIN_TAU_INTERVAL_N} trials)"
    return f"Kendall τ {audit.tau:.2f}{within}"


def _front_text(audit: record.AuditRecord) -> str:
    held = audit.front_order_held
    count = len(audit.front)
    if held is None:
        return f"front order not tested ({count} front trial{'s' if count != 1 else ''} audited)"
    return f"the front's order {'held' if held else 'did NOT hold'} ({count} front trials)"


def audit_line(audit: record.AuditRecord) -> str:
    """One line for `gas pareto`: tau, its interval, n, the long schedule and the front's order."""
    return (
        f"audit: {_tau_text(audit)}, n {audit.n}, against {audit.epochs} epochs at "
        f"{audit.resolution}px; {_front_text(audit)}"
    )


def format_audit(audit: record.AuditRecord) -> list[str]:
    """What `gas audit` prints: the schedules compared, tau with its interval, the front's order, and a table."""
    proxy = audit.search_setting
    search = f"{proxy('epochs')} epochs at {proxy('resolution')}px ({proxy('evaluator')})"
    minutes, seconds = divmod(round(audit.seconds), 60)
    lines = [
        f"long schedule: {audit.epochs} epochs at {audit.resolution}px (train) against the "
        f"search's {search} on {proxy('dataset')}; took {minutes}m{seconds:02d}s",
        f"{_tau_text(audit)}, n {audit.n}; {_front_text(audit)}",
    ]
    rows = [("trial", "front", "search", "long", "")]
    search_rank = _ranks({number: pair.search for number, pair in audit.pairs.items()})
    long_rank = _ranks({number: pair.long for number, pair in audit.pairs.items()})
    for number, pair in audit.pairs.items():
        moved = "" if search_rank[number] == long_rank[number] else f"rank {search_rank[number]} -> {long_rank[number]}"
        on_front = "yes" if number in audit.front else ""
        rows.append((str(number), on_front, f"{pair.search:.2%}", f"{pair.long:.2%}", moved))
    for number, error in audit.failed.items():
        rows.append((str(number), "yes" if number in audit.front else "", "", "failed", error))
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    for row in rows:
        cells = [row[0].rjust(widths[0]), row[1].ljust(widths[1]), row[2].rjust(widths[2]), row[3].rjust(widths[3])]
        lines.append("  ".join([*cells, row[4]]).rstrip())
    return lines


def _ranks(accuracies: Mapping[int, float]) -> dict[int, int]:
    """Rank of each trial by accuracy, 1 for the most accurate; equal accuracies share a rank."""
    return {number: 1 + sum(other > value for other in accuracies.values()) for number, value in accuracies.items()}
