"""A study's own record: what its search ran under, the data it found, and what was learnt about it since
(the latency model's accuracy, the fidelity audit); each written here and read as a typed value."""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import optuna

from gas.errors import GasError
from gas.units import parse_count

OBJECTIVES = ("accuracy", "flops")
DIRECTIONS = ("maximize", "minimize")


class StudyKey:
    """Study user attributes: what the search ran under."""

    SETTINGS = "settings"  # everything that decides a result; a resumed search must match it
    SPACE = "space"
    BUDGET = "budget"
    MAX_PARAMS = "max_params"
    SEED = "seed"
    SAMPLER = "sampler"
    DATA = "data"  # what the dataset check found: classes, images, files skipped as unreadable
    OBJECTIVE = "objective"  # the front's cost axis: flops, params or latency
    LATENCY = "latency"  # the target device, the limit, and how well the latency model predicted
    # The fidelity audit (gas.search.audit): a sample retrained longer, both accuracies of each, Kendall's
    # tau; a study attribute because finished trials take no new attributes.
    AUDIT = "audit"
    # The proxy's seed noise, from every trial trained with more than one seed (gas.search.replicates):
    # seed standard deviation, between-genome spread, intraclass correlation, test-retest tau and interval.
    NOISE = "proxy_noise"


# Proxy settings earlier versions did not record, at the only values those versions could run with: a
# study they wrote resumes only under the same ones.
LEGACY_PROXY_SETTINGS = {
    "batch_size": 32,
    "lr": 1e-4,
    "weight_decay": 0.05,
    "warmup_fraction": 0.1,
    "label_smoothing": 0.1,
    "grad_clip": 1.0,
    "pos_embed_lr_scale": 10.0,
    "train_size": 1024,
    "val_size": 512,
    "zero_cost_batch": 64,
    "compile": False,
    "eval_batch_size": 256,
    "test_size": None,
    "splits": 1,
}


def _number(value: Any) -> float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _mapping(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


# ---- what the search ran under ---------------------------------------------------------------------


@dataclass(frozen=True)
class DataRecord:
    """What the dataset check found before the search: classes, images, files skipped as unreadable."""

    num_classes: int | None
    images: int | None  # None for datasets of a fixed size
    unreadable: tuple[str, ...]


@dataclass(frozen=True)
class StudyRecord:
    """What a search ran under, as its study records it; None where the version that wrote it recorded nothing."""

    space: str | None
    budget: int | None  # the FLOPs budget at 224px
    max_params: int | None
    seed: int | None  # the sampler's; earlier versions trained every trial with it too
    sampler: str | None
    objective: str  # the front's cost axis: flops (what every earlier version searched), params or latency
    settings: dict[str, Any] | None  # everything that decides a result (see gas.search.engine.Engine.settings)
    data: DataRecord | None

    @property
    def searched_space(self) -> str | None:
        """The space searched, as the settings record it, else as the study's space attribute does."""
        return (self.settings or {}).get("space") or self.space

    def proxy_settings(self) -> dict[str, Any] | None:
        """The proxy settings the trials trained under (`ProxyConfig.settings()`, flat), None if unrecorded.

        Settings earlier versions left out are filled in at the only values they could run with; those
        versions ran on the CPU, with the study's seed for every trial.
        """
        proxy = (self.settings or {}).get("proxy")
        if not isinstance(proxy, Mapping):
            return None
        return {**LEGACY_PROXY_SETTINGS, "device": "cpu", "seed": self.seed or 0, **proxy}


def _budget(value: Any) -> int | None:
    """A positive FLOPs budget, as a number or as it was typed ('2.5G'); None for anything else."""
    if _number(value) is not None:
        return int(value) if value > 0 else None
    if isinstance(value, str):  # the budget as it was typed
        try:
            return parse_count(value)
        except GasError:
            return None
    return None


def study_record(study: optuna.Study) -> StudyRecord:
    """What the study's search ran under, as whichever version of gas wrote it records it."""
    attrs = study.user_attrs
    settings, data, max_params = attrs.get(StudyKey.SETTINGS), attrs.get(StudyKey.DATA), attrs.get(StudyKey.MAX_PARAMS)
    return StudyRecord(
        space=attrs.get(StudyKey.SPACE),
        budget=_budget(attrs.get(StudyKey.BUDGET)),
        max_params=None if _number(max_params) is None else int(max_params),
        seed=attrs.get(StudyKey.SEED),
        sampler=attrs.get(StudyKey.SAMPLER),
        objective=str(attrs.get(StudyKey.OBJECTIVE) or "flops"),
        settings=dict(settings) if isinstance(settings, Mapping) else None,
        data=None
        if not isinstance(data, Mapping)
        else DataRecord(data.get("num_classes"), data.get("images"), tuple(data.get("unreadable") or ())),
    )


def _with_legacy_defaults(settings: Mapping[str, Any], seed: int | None) -> dict[str, Any]:
    """Settings as recorded, with the settings earlier versions left out filled in at their values.

    Those versions trained every trial with the study's seed, on the CPU, and measured latency in torch.
    """
    filled = dict(settings)
    if isinstance(filled.get("proxy"), Mapping):
        filled["proxy"] = {**LEGACY_PROXY_SETTINGS, "device": "cpu", "seed": seed, **filled["proxy"]}
    latency = filled.get("latency")
    if isinstance(latency, Mapping):
        from gas.latency.device import LEGACY_FINGERPRINT

        latency = dict(latency)
        if isinstance(latency.get("settings"), Mapping):
            latency["settings"] = {"runtime": LEGACY_FINGERPRINT["runtime"], **latency["settings"]}
        if isinstance(latency.get("fingerprint"), Mapping):
            latency["fingerprint"] = {**LEGACY_FINGERPRINT, **latency["fingerprint"]}
        filled["latency"] = latency
    return filled


def settings_differences(
    recorded: Mapping[str, Any], wanted: Mapping[str, Any], study_seed: int | None = None
) -> list[str]:
    """Each setting whose recorded value differs from `wanted`, as 'proxy.lr 0.0001 (now 0.001)'.

    `study_seed` is the study's recorded seed, which earlier versions used as every trial's seed.
    """
    recorded = _with_legacy_defaults(recorded, study_seed)

    def walk(old: Any, new: Any, path: str) -> list[str]:
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            keys = list(new) + [key for key in old if key not in new]
            return [line for key in keys for line in walk(old.get(key), new.get(key), f"{path}{key}.")]
        if old == new:
            return []
        return [f"{path.rstrip('.')} {json.dumps(old)} (now {json.dumps(new)})"]

    return walk(recorded, wanted, "")


def write_search(
    study: optuna.Study, settings: Mapping[str, Any], attributes: Mapping[str, Any], objective: str
) -> None:
    """A new search's study: its settings, its other attributes (keyed by `StudyKey`) and its values' names."""
    study.set_user_attr(StudyKey.SETTINGS, dict(settings))
    for key, value in attributes.items():
        study.set_user_attr(key, value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([OBJECTIVES[0], objective])


# ---- the latency target ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LatencyAccuracy:
    """How well the latency model predicted the study's trained trials (gas.search.latency_limit)."""

    n: int
    median_abs_error: float | None
    within_10: float | None  # the share predicted within ±10%
    kendall_tau: float | None
    # The machine's own repeatability beside it: the share of consecutive measurements of the reference network
    # that agree within ±10%, over `repeat_pairs` pairs; None for studies from before the reference was measured.
    repeatability: float | None = None
    repeat_pairs: int = 0


@dataclass(frozen=True)
class LatencyRecord:
    """The device a study measured latency on, its limit there, and how well its latency model predicted."""

    limit: float | None  # seconds; None when latency was the objective alone
    settings: dict[str, Any]  # `LatencySettings` as recorded: device, threads, batch, dtype, compile
    fingerprint: dict[str, Any]  # what else the figures hold for: the CPU or GPU model, torch's version
    accuracy: LatencyAccuracy | None  # None until a run of the search ends
    stored: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)  # as written, for JSON

    @property
    def device(self) -> str:
        return str(self.settings.get("device", "?"))

    @property
    def dtype(self) -> str:
        return str(self.settings.get("dtype", ""))

    @property
    def threads(self) -> int | None:
        return self.settings.get("threads")

    @property
    def batch(self) -> int:
        return self.settings.get("batch", 1)

    @property
    def runtime(self) -> str:
        """'torch' or 'onnxruntime'; records from before the runtime was recorded were measured in torch."""
        return str(self.settings.get("runtime", "torch"))

    @property
    def measured_in(self) -> str:
        """'PyTorch 2.13.0 (eager)' or 'ONNX Runtime 1.32.0': what the latency figures were measured in."""
        if self.runtime == "onnxruntime":
            version = self.fingerprint.get("runtime_version")
            return " ".join(["ONNX Runtime", *([str(version)] if version else [])])
        version = [str(self.fingerprint["torch"])] if self.fingerprint.get("torch") else []
        return " ".join(["PyTorch", *version, "(torch.compile)" if self.settings.get("compile") else "(eager)"])

    @property
    def hardware(self) -> str:
        """The GPU or CPU model the figures were measured on."""
        return self.fingerprint.get("gpu") or self.fingerprint.get("cpu") or self.settings.get("device", "?")


def latency_record(study: optuna.Study) -> LatencyRecord | None:
    """The study's latency target and its model's accuracy, or None for a study that measured no latency."""
    value = study.user_attrs.get(StudyKey.LATENCY)
    if not isinstance(value, Mapping):
        return None
    accuracy = value.get("accuracy")
    return LatencyRecord(
        limit=_number(value.get("limit")),
        settings=_mapping(value.get("settings")),
        fingerprint=_mapping(value.get("fingerprint")),
        accuracy=None
        if not isinstance(accuracy, Mapping)
        else LatencyAccuracy(
            int(accuracy.get("n") or 0),
            accuracy.get("median_abs_error"),
            accuracy.get("within_10"),
            accuracy.get("kendall_tau"),
            accuracy.get("repeatability"),
            int(accuracy.get("repeat_pairs") or 0),
        ),
        stored=dict(value),
    )


def write_latency(study: optuna.Study, target: Mapping[str, Any], accuracy: Mapping[str, Any] | None) -> None:
    """The latency target (`LatencyTarget.to_dict()`) and how well the model predicted, at the end of a run."""
    study.set_user_attr(StudyKey.LATENCY, {**target, "accuracy": accuracy})


# ---- the fidelity audit ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditPair:
    """One audited trial's accuracy in the search and after the long schedule."""

    search: float
    long: float


@dataclass(frozen=True)
class AuditRecord:
    """The study's latest fidelity audit (see gas.search.audit); trials by number."""

    epochs: int | None  # the long schedule
    resolution: int | None
    evaluator: str | None
    epoch_factor: int | None
    search_proxy: dict[str, Any]  # the settings the search trained under, which the long schedule extends
    pairs: dict[int, AuditPair]  # in the order the audit chose them
    front: tuple[int, ...]  # the audited trials that are on the front
    failed: dict[int, str]  # long runs that failed, with their errors
    tau: float | None  # None when every accuracy tied
    interval: tuple[float, float] | None  # None under gas.stats.MIN_TAU_INTERVAL_N trials
    n: int | None
    front_order_held: bool | None
    seconds: float
    stored: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)  # as written, for JSON

    def search_setting(self, name: str) -> Any:
        """One of the proxy settings the search trained under; None if the audit does not record it."""
        return self.search_proxy.get(name)


def _audit(value: Mapping[str, Any]) -> AuditRecord:
    settings, pairs = _mapping(value.get("settings")), _mapping(value.get("pairs"))
    interval = value.get("interval")
    return AuditRecord(
        epochs=settings.get("epochs"),
        resolution=settings.get("resolution"),
        evaluator=settings.get("evaluator"),
        epoch_factor=settings.get("epoch_factor"),
        search_proxy=_mapping(settings.get("proxy")),
        # Trial numbers are strings in the study: it stores JSON, whose keys are strings.
        pairs={int(number): AuditPair(pair["search"], pair["long"]) for number, pair in pairs.items()},
        front=tuple(int(number) for number in value.get("front", [])),
        failed={int(number): str(error) for number, error in _mapping(value.get("failed")).items()},
        tau=value.get("tau"),
        interval=tuple(interval) if interval else None,
        n=value.get("n"),
        front_order_held=value.get("front_order_held"),
        seconds=value.get("seconds", 0.0),
        stored=dict(value),
    )


def audit_record(study: optuna.Study) -> AuditRecord | None:
    """The study's latest fidelity audit, or None if it has not been audited."""
    value = study.user_attrs.get(StudyKey.AUDIT)
    return _audit(value) if isinstance(value, Mapping) else None


def write_audit(study: optuna.Study, audit: AuditRecord) -> AuditRecord:
    """Record `audit` in the study, replacing any earlier one; returns it as the study now reads it."""
    value = {
        "settings": {
            "epochs": audit.epochs,
            "resolution": audit.resolution,
            "evaluator": audit.evaluator,
            "epoch_factor": audit.epoch_factor,
            "proxy": audit.search_proxy,
        },
        "pairs": {str(number): asdict(pair) for number, pair in audit.pairs.items()},
        "front": [str(number) for number in audit.front],
        "failed": {str(number): error for number, error in audit.failed.items()},
        "tau": audit.tau,
        "interval": None if audit.interval is None else list(audit.interval),
        "n": audit.n,
        "front_order_held": audit.front_order_held,
        "seconds": audit.seconds,
    }
    study.set_user_attr(StudyKey.AUDIT, value)
    return _audit(json.loads(json.dumps(value)))


# ---- the proxy's noise -----------------------------------------------------------------------------


@dataclass(frozen=True)
class NoiseRecord:
    """How much the study's proxy accuracy moved with the training seed (`gas.stats.seed_noise`'s figures)."""

    genomes: int  # trained genomes the figures cover
    replicated: int  # of which trained with two seeds or more
    seed_sd: float | None  # one evaluation's noise: pooled within-genome standard deviation
    between_sd: float | None  # standard deviation of the genomes' seed means
    icc: float | None  # intraclass correlation ICC(1): the share of an evaluation's variance that is the genome's
    retest_tau: float | None  # Kendall tau between first and second seeds over the replicated genomes
    retest_interval: tuple[float, float] | None  # its 95% interval; None under gas.stats.MIN_TAU_INTERVAL_N


def noise_record(study: optuna.Study) -> NoiseRecord | None:
    """The study's proxy noise as its last run measured it, or None for a study that measured none."""
    value = study.user_attrs.get(StudyKey.NOISE)
    if not isinstance(value, Mapping):
        return None
    low, high = value.get("retest_low"), value.get("retest_high")
    return NoiseRecord(
        genomes=int(value.get("genomes") or 0),
        replicated=int(value.get("replicated") or 0),
        seed_sd=_number(value.get("seed_sd")),
        between_sd=_number(value.get("between_sd")),
        icc=_number(value.get("icc")),
        retest_tau=_number(value.get("retest_tau")),
        retest_interval=None if low is None or high is None else (float(low), float(high)),
    )


def write_noise(study: optuna.Study, noise: Mapping[str, Any]) -> None:
    """Record the proxy's noise (`gas.stats.seed_noise`'s dict), replacing the figures of an earlier run."""
    study.set_user_attr(StudyKey.NOISE, dict(noise))
