"""`gas compare`: what a search found against what people designed, retrained alike and scored on unseen images.

A search picks its winners on its own validation images with one training seed each, so their search
accuracies carry the winner's curse: a pick is partly the network that got the luckiest seed. A comparison
that means something retrains every candidate from scratch on one schedule with several seeds and scores it
on the test split, which no trial, sampler, pick or audit ever reads. Candidates:

    picks       --picks: study picks (best, knee, max-acc-under=FLOPS, fastest-over=ACCURACY, as `gas export
                --pick` takes them) and genome .json files
    baselines   --against: references by name (turbovit, hiera_tiny...), genome .json files, and either of
                these scaled to the study's limits, NAME@width or NAME@depth (`gas.scaling`: the widest or
                deepest copy within the study's FLOPs budget, params cap and latency limit)

The schedule is the study's proxy made longer and larger (`gas.evaluate.proxy.target_schedule`: 4x its
epochs at 64 px where the space allows), with the same data, split sizes and hyper-parameters; `--epochs`
and `--resolution` replace its epochs and resolution. Each candidate trains once per seed 0..N-1 (the
seed fixes initialisation and batch order), and the same seed gives every candidate the same batch order,
which is what makes the paired test meaningful. Each candidate's latency is measured on the study's target
device (its recorded latency settings; else CPU fp32, 1 thread, batch 1), all candidates in turns, before
anything trains.

For each candidate the comparison gives the test accuracy's mean and standard deviation over seeds, and
against each baseline the two-sided p-values of Welch's t-test (unequal variances) and of the paired t-test
by seed (`gas.stats`). With 3 seeds a p-value under 0.05 needs a gap of several seed deviations: few seeds
can show a large difference, never rule out a small one.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna

from gas import record
from gas.defaults import COMPARE_AGAINST, COMPARE_PICKS
from gas.errors import GasError
from gas.front import PICKS, parse_pick, pick_trial
from gas.genome import Genome
from gas.latency import DEFAULT_RUNS, LatencySettings, fingerprint, measure_many
from gas.latency.device import settings_dict
from gas.scaling import SCALINGS, Limit, scale, study_latency_settings, study_limits
from gas.space import get_space, load_genome, reference_names
from gas.stats import paired_p, welch_p

if TYPE_CHECKING:

    from gas.evaluate.proxy import ProxyConfig, ProxyResult
    from gas.search.jobs import Proposal

__all__ = [
    "DEFAULT_LATENCY",
    "Candidate",
    "CompareConfig",
    "baselines",
    "epochs_text",
    "picks",
    "run_compare",
    "schedule",
    "split_list",
]

#: Where latency is measured when the study recorded no target device: one user, one CPU thread.
DEFAULT_LATENCY = LatencySettings(device="cpu", threads=1, batch=1, dtype="fp32")

Report = Callable[["Proposal", "ProxyResult | str"], None]
#: Trains proposals and returns each one's result or error, in order: the drivers' fixed jobs,
#: `gas.search.local.run_in_process` or `gas.search.ray_tune.run_on_ray` with its address bound. `report`
#: hears each outcome as it comes.
Train = Callable[..., "list[ProxyResult | str]"]


@dataclass(frozen=True)
class Candidate:
    """One network in the comparison, at 224 px with 1000 classes (how the study costs genomes)."""

    name: str  # "best (trial 12)", "turbovit", "hiera_tiny@width", "genomes/mine.json"
    kind: str  # "pick", "genome", "reference", "width-scaled" or "depth-scaled"
    baseline: bool  # compared against, rather than compared
    genome: Genome
    origin: str  # where it comes from, in words
    search_accuracy: float | None = None  # a pick's accuracy in the search (its validation split, seed mean)


@dataclass(frozen=True)
class CompareConfig:
    """What `gas compare` retrains and how; see the module docstring."""

    picks: tuple[str, ...] = COMPARE_PICKS
    against: tuple[str, ...] = COMPARE_AGAINST
    seeds: int = 3
    epochs: int | None = None  # None: the target schedule's
    resolution: int | None = None  # None: the target schedule's
    data_dir: str | None = None  # the dataset's folder where it needs one (a study does not record paths)
    latency_runs: int = DEFAULT_RUNS  # timed runs per latency measurement (and per scaling step)


def split_list(text: str | None) -> tuple[str, ...]:
    """'best, knee,,max-acc-under=2G' -> ('best', 'knee', 'max-acc-under=2G'): a comma list, repeats dropped."""
    return tuple(dict.fromkeys(item.strip() for item in (text or "").split(",") if item.strip()))


def _is_genome_file(spec: str) -> bool:
    return spec.lower().endswith(".json")


def _costed(genome: Genome, name: str, space: str, study: optuna.Study) -> Genome:
    """`genome` at 224 px with 1000 classes, refused in one line if it is not of the study's space."""
    if genome.space != space:
        raise GasError(
            f"{name} is a genome of the {genome.space} space, and study {study.study_name!r} searched the "
            f"{space} space; compare genomes of one space"
        )
    costed = dataclasses.replace(genome, resolution=224, num_classes=1000)
    get_space(space).check(costed)
    return costed


def picks(study: optuna.Study, specs: Sequence[str], space: str) -> list[Candidate]:
    """The study's picks and genome files named by `--picks`; two picks of one trial become one candidate."""
    found: list[Candidate] = []
    for spec in specs:
        if _is_genome_file(spec):
            genome = _costed(load_genome(spec), spec, space, study)
            found.append(Candidate(spec, "genome", False, genome, f"genome file {spec}"))
            continue
        if spec.partition("=")[0].strip() not in PICKS:
            raise GasError(
                f"--picks {spec!r} is not a pick (best, knee, max-acc-under=FLOPS, fastest-over=ACCURACY) or a "
                "genome .json file"
            )
        kind, value = parse_pick([spec])
        trial = pick_trial(study, kind, value)
        suffix = f" (trial {trial.number})"
        same = next((index for index, c in enumerate(found) if c.kind == "pick" and c.name.endswith(suffix)), None)
        if same is not None:
            earlier = found[same]
            found[same] = dataclasses.replace(earlier, name=f"{earlier.name.removesuffix(suffix)}/{spec}{suffix}")
            continue
        genome = _costed(record.trial_genome(trial), spec, space, study)
        origin = f"trial {trial.number} of study {study.study_name}"
        found.append(Candidate(f"{spec}{suffix}", "pick", False, genome, origin, float(trial.values[0])))
    return found


def baselines(
    study: optuna.Study, specs: Sequence[str], space: str, limits: Callable[[], Sequence[Limit]]
) -> list[Candidate]:
    """The references, genome files and scaled references named by `--against`.

    `limits` gives the study's limits, asked only when something is to be scaled (it may measure latency).
    """
    references = reference_names()
    found: list[Candidate] = []
    for spec in specs:
        name, at, how = (part.strip() for part in spec.partition("@"))
        if at and how not in SCALINGS:
            raise GasError(f"--against {spec!r}: scale by {' or '.join(SCALINGS)} (e.g. hiera_tiny@width)")
        kind = "reference" if name in references else "genome"
        genome = _costed(load_genome(name), name, space, study)
        origin = f"the {name} reference" if kind == "reference" else f"genome file {name}"
        if at:
            genome = scale(genome, how, limits(), name)
            kind = f"{how}-scaled"
            shape = ", ".join(f"{key} {value}" for key, value in get_space(space).describe(genome).items())
            origin = f"{name} scaled by {how} to the study's limits: {shape}"
        found.append(Candidate(spec, kind, True, genome, origin))
    return found


def schedule(study: optuna.Study, config: CompareConfig) -> ProxyConfig:
    """The schedule every candidate retrains on: the study's target schedule with the config's overrides.

    One-line GasError for settings this version cannot rebuild, a resolution the space refuses or data
    that is not where `config.data_dir` says.
    """
    from gas.evaluate.proxy import check_data, target_schedule
    from gas.search.audit import study_proxy, study_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the resolution check's scratch studies are not news
    space = study_space(study)
    target = target_schedule(study_proxy(study, config.data_dir), space)
    overrides = {"epochs": config.epochs, "resolution": config.resolution}
    target = target.with_overrides(**{name: value for name, value in overrides.items() if value is not None})
    # Checked once here rather than in every run; the device is checked where the runs train.
    checked, _ = check_data(target.with_overrides(device="cpu"), space)
    return dataclasses.replace(target, dataset=checked.dataset, data_dir=checked.data_dir)


# ---- the comparison ----------------------------------------------------------------------------------


def run_compare(
    study: optuna.Study,
    config: CompareConfig,
    train: Train,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Retrain the candidates `config` names with `config.seeds` seeds each and compare them; returns the result.

    `train(proposals, report=...)` trains the runs (in this process or on Ray) and `progress` hears a line
    before training and one per finished run. Nothing is written to the study. One-line GasError for bad
    input, or when no run finishes.

    >>> result = run_compare(study, CompareConfig(seeds=3), run_in_process)  # doctest: +SKIP
    >>> [(c["name"], c["test_accuracy_mean"]) for c in result["candidates"]]  # doctest: +SKIP
    """
    from gas.search.audit import recorded_proxy, study_space

    started = time.perf_counter()
    say = progress or (lambda line: None)
    if config.seeds < 1:
        raise GasError(f"--seeds must be at least 1, got {config.seeds}")
    if config.latency_runs < 1:
        raise GasError(f"--runs must be at least 1, got {config.latency_runs}")
    if not config.picks and not config.against:
        raise GasError("nothing to compare: name candidates with --picks and baselines with --against")
    space = study_space(study)
    target = schedule(study, config)
    settings = study_latency_settings(study) or DEFAULT_LATENCY
    candidates, limits = _candidates(study, config, space)

    say(f"measuring the latency of {len(candidates)} candidates in turns ({settings.describe()})")
    latencies = measure_many({c.name: c.genome for c in candidates}, settings, config.latency_runs)

    seeds = list(range(config.seeds))
    jobs, outcomes = _retrain(candidates, seeds, target, train, say, started)
    runs, failed, test_images = _collect(jobs, outcomes)
    rows = [_candidate_row(c, runs, failed, latencies[c.name].to_dict(), candidates) for c in candidates]
    proxy = recorded_proxy(study)
    latency = record.latency_record(study)
    return {
        "study": study.study_name,
        "space": space,
        "dataset": target.dataset,
        "seeds": seeds,
        "test_images": min(test_images) if len(test_images) == 1 else sorted(test_images),
        "schedule": _schedule_fields(target),
        "search_proxy": {key: proxy.get(key) for key in ("evaluator", "epochs", "resolution", "train_size", "seed")},
        "latency": {
            "settings": settings_dict(settings),
            "fingerprint": fingerprint(settings),
            "runs": config.latency_runs,
            "limit": None if latency is None else latency.limit,
            "describe": settings.describe(),
        },
        "limits": [str(limit) for limit in limits],
        "candidates": rows,
        "seconds": time.perf_counter() - started,
    }


def _candidates(study: optuna.Study, config: CompareConfig, space: str) -> tuple[list[Candidate], list[Limit]]:
    """The picks, then the baselines, each named once; and the study's limits where a baseline was scaled."""
    limits: list[Limit] = []

    def study_limits_once() -> list[Limit]:
        if not limits:
            limits.extend(study_limits(study, config.latency_runs))
        return limits

    candidates = picks(study, config.picks, space) + baselines(study, config.against, space, study_limits_once)
    names = [candidate.name for candidate in candidates]
    if len(set(names)) != len(names):
        repeated = next(name for name in names if names.count(name) > 1)
        raise GasError(f"{repeated} is named twice; name each candidate once")
    return candidates, limits


def _retrain(
    candidates: list[Candidate],
    seeds: list[int],
    target: ProxyConfig,
    train: Train,
    say: Callable[[str], None],
    started: float,
) -> tuple[list[tuple[Candidate, int]], list[ProxyResult | str]]:
    """Every candidate at every seed on the target schedule, scored on the test split: (jobs, outcomes)."""
    from gas.search.jobs import Proposal

    jobs = [(candidate, seed) for seed in seeds for candidate in candidates]
    proposals = [
        Proposal(number, candidate.genome.to_dict(), target.with_overrides(seed=seed, score_test=True).to_dict())
        for number, (candidate, seed) in enumerate(jobs)
    ]
    say(
        f"retraining {len(candidates)} candidates x {len(seeds)} seeds: {epochs_text(target.train.epochs)} at "
        f"{target.resolution}px on {target.dataset}"
    )
    finished = 0

    def report(proposal: Proposal, outcome: ProxyResult | str) -> None:
        nonlocal finished
        finished += 1
        candidate, seed = jobs[proposal.number]
        if isinstance(outcome, str) or outcome.test_accuracy is None:
            shown = f"failed: {outcome}" if isinstance(outcome, str) else "failed: no test accuracy"
        else:
            shown = (
                f"test accuracy {outcome.test_accuracy:.2%} (validation {outcome.accuracy:.2%}) "
                f"in {outcome.wall_time:.0f}s"
            )
        elapsed = time.perf_counter() - started
        say(f"[{finished}/{len(jobs)} {elapsed:.0f}s] {candidate.name}, seed {seed}: {shown}")

    outcomes = train(proposals, report=report)
    if len(outcomes) != len(proposals):
        raise GasError(f"the trainer returned {len(outcomes)} results for {len(proposals)} runs")
    return jobs, outcomes


def _collect(
    jobs: list[tuple[Candidate, int]], outcomes: list[ProxyResult | str]
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, dict[str, str]], set[int]]:
    """Each candidate's finished runs, its failed ones by seed, and the test split sizes the runs scored on."""
    names = list(dict.fromkeys(candidate.name for candidate, _ in jobs))
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    failed: dict[str, dict[str, str]] = {name: {} for name in names}
    test_images: set[int] = set()
    for (candidate, seed), outcome in zip(jobs, outcomes, strict=True):
        if isinstance(outcome, str) or outcome.test_accuracy is None:
            failed[candidate.name][str(seed)] = outcome if isinstance(outcome, str) else "no test accuracy"
            continue
        if outcome.test_images is not None:
            test_images.add(outcome.test_images)
        runs[candidate.name].append(
            {
                "seed": seed,
                "test_accuracy": outcome.test_accuracy,
                "validation_accuracy": outcome.accuracy,
                "wall_time": outcome.wall_time,
                "device": outcome.device,
            }
        )
    if not any(runs.values()):
        first = next(error for errors in failed.values() for error in errors.values())
        raise GasError(f"no run finished; the first error: {first}")
    return runs, failed, test_images


def _schedule_fields(target: ProxyConfig) -> dict[str, Any]:
    """The schedule as flat JSON, without what differs between runs (the seed) or what is this machine's."""
    fields = {key: value for key, value in target.to_dict().items() if key not in ("train", "data_dir", "score_test")}
    train = {key: value for key, value in dataclasses.asdict(target.train).items() if key != "seed"}
    return {**fields, **train}


def _candidate_row(
    candidate: Candidate,
    runs: Mapping[str, Sequence[Mapping[str, Any]]],
    failed: Mapping[str, Mapping[str, str]],
    latency: Mapping[str, Any],
    candidates: Sequence[Candidate],
) -> dict[str, Any]:
    cost = get_space(candidate.genome.space).cost(candidate.genome)
    accuracies = [run["test_accuracy"] for run in runs[candidate.name]]
    by_seed = {run["seed"]: run["test_accuracy"] for run in runs[candidate.name]}
    against: dict[str, dict[str, float | None]] = {}
    for baseline in candidates:
        if not baseline.baseline or baseline.name == candidate.name:
            continue
        theirs = [run["test_accuracy"] for run in runs[baseline.name]]
        their_seeds = {run["seed"]: run["test_accuracy"] for run in runs[baseline.name]}
        shared = sorted(set(by_seed) & set(their_seeds))
        against[baseline.name] = {
            "difference": statistics.fmean(accuracies) - statistics.fmean(theirs) if accuracies and theirs else None,
            "welch_p": welch_p(accuracies, theirs),
            "paired_p": paired_p([by_seed[s] for s in shared], [their_seeds[s] for s in shared]),
        }
    return {
        "name": candidate.name,
        "kind": candidate.kind,
        "baseline": candidate.baseline,
        "origin": candidate.origin,
        "genome": candidate.genome.to_dict(),
        "params": cost.params,
        "flops": cost.flops,
        "latency_s": latency["median_s"],
        "latency_spread_s": latency["spread_s"],
        "search_accuracy": candidate.search_accuracy,
        "runs": list(runs[candidate.name]),
        "failed": dict(failed[candidate.name]),
        "test_accuracy_mean": statistics.fmean(accuracies) if accuracies else None,
        "test_accuracy_sd": statistics.stdev(accuracies) if len(accuracies) >= 2 else None,
        "against": against,
    }


def epochs_text(count: int) -> str:
    return f"{count} epoch{'s' if count != 1 else ''}"
