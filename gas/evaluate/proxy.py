"""The proxy evaluation a search trial runs: build a genome at the proxy resolution, train or score it.

Proxy mapping. A genome is costed at 224 px (its budget) but trained at `ProxyConfig.resolution`. The
architecture stays the same network: the stem keeps its stride 4, so the token grid is resolution / 4;
the mask unit keeps its size in tokens (8x8 tokens = 32x32 px at any resolution) and still halves with
every Q-pool. What shrinks is the number of tokens and of mask units: at 224 px a mask unit of 8 covers
1/7 of the image side (49 units), at 64 px 1/2 (4 units), at 32 px the whole image. Q-pooling needs the
grid to halve evenly at every pool and mask-unit attention needs the grid to divide by the unit, so for
the turbovit space (mask units 4 or 8, three Q-pools) the resolution must be a multiple of
4 x max(8, 2**3) = 32 px: 32, 64, 96, 128, ... `check_data` applies each space's own rules to probe genomes.

Defaults. One default evaluation of a ~2.5 GFLOP@224 genome must fit in about half a minute on one CPU
thread (the default search runs two such trials side by side on a 2-core machine). At 32 px the turbovit
reference trains at ~120-160 images/s on one thread, so 4 epochs of 1024 images is ~130 AdamW steps; at
64 px the same time buys a quarter of the steps, and in that budget the networks barely leave chance.
The price of 32 px: the grid is 8x8 tokens, so a mask unit of 8 spans the whole image (mask-unit
attention then equals global attention) and only mask_unit=4 genomes attend within 4 units; Q-pool
placement still decides at which depth the grid shrinks to 4x4, 2x2 and 1x1. The learning rate is low
(1e-4 at batch 32, DeiT's rule gives 3e-5) because Hiera-style networks at 1e-3 did not learn at all in
~130 steps.

The GPU proxy. Where trials get GPUs, `gas search` trains `GPU_PROXY` instead (`default_proxy` decides).
At 64 px the grid is 16x16 tokens, so an image holds 4 mask units of 8 (16 of 4) and mask-unit attention
is no longer global attention: the proxy sees the design choice the search is about. It trains on 4096
generated images (`shapes` draws as many as asked) and validates on 1024, so one image moves the accuracy
by 0.1%, not 0.2%; 8 epochs at batch 64 are 512 AdamW steps, four times the CPU proxy's. The learning
rate stays at the CPU proxy's tried 1e-4 rather than scaling with the batch: with four times the steps a
network should get at least as far as there, and a higher rate is untried on these networks. Each step
is small for a GPU, which is why several trials share one (`gas.defaults.TRIALS_PER_GPU`);
experiments/gpu_check measures its speed and its ranking fidelity.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna
import torch

from gas.defaults import DEFAULT_SPACE, EVALUATORS
from gas.errors import GasError, GenomeError
from gas.evaluate.datasets import (
    DEFAULT_DATASET,
    DatasetCheck,
    check_dataset,
    load_dataset,
    load_test_split,
    resolve_dataset,
    split_version,
)
from gas.evaluate.train import (
    Report,
    TrainConfig,
    TrialFailed,
    device_name,
    evaluate_accuracy,
    resolve_device,
    train,
)
from gas.evaluate.zero_cost import normalised_primary, zero_cost_scores
from gas.genome import Genome
from gas.space import get_space

__all__ = [
    "DEFAULT_DATASET",
    "EVALUATORS",
    "GPU_PROXY",
    "ProxyConfig",
    "ProxyResult",
    "TrialFailed",
    "check_data",
    "default_proxy",
    "evaluate",
    "target_schedule",
]

DEFAULT_ZERO_COST_BATCH = 64


@dataclass(frozen=True)
class ProxyConfig:
    """Everything that decides a proxy result; the study records it so any trial can be reproduced.

    The defaults are the CPU proxy described in this module's docstring. `train` holds the training
    hyper-parameters (epochs, batch, learning rate, seed, device...), whose defaults are the proxy's.
    """

    dataset: str = DEFAULT_DATASET
    data_dir: str | None = None
    resolution: int = 32
    evaluator: str = "train"  # "train" or "zero-cost"
    train_size: int | None = 1024  # caps every dataset's training split (None: all of it)
    val_size: int | None = 512
    # Caps the test split (None: all of it; shapes draws 1024), which only `gas compare` and the benchmarks
    # score on. No trial reads it, but a study records its size, so a comparison scores what it says.
    test_size: int | None = None
    # Also score the trained model on the test split (`ProxyResult.test_accuracy`). Only `gas compare` and
    # the benchmarks set it; a study refuses it (`settings`), so no trial, pick or audit reads the test split.
    score_test: bool = False
    zero_cost_batch: int = DEFAULT_ZERO_COST_BATCH  # images for the zero-cost scores; 0 skips them when training
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProxyConfig:
        return cls(**{**data, "train": TrainConfig(**data["train"])})

    def with_overrides(self, **overrides: Any) -> ProxyConfig:
        """A copy with the given fields replaced; names of `TrainConfig` fields go to `train`."""
        train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
        train = {name: value for name, value in overrides.items() if name in train_fields}
        own = {name: value for name, value in overrides.items() if name not in train_fields}
        return dataclasses.replace(self, **own, train=dataclasses.replace(self.train, **train))

    def settings(self) -> dict[str, Any]:
        """What a study records and checks on resume: every field that changes a result.

        The data location is left out (the same data may live elsewhere on another machine), and the
        device is its kind: trials on any CPU, or on any CUDA GPU, are trained alike. Scoring the test split
        changes no trained model, and a search must never see that score: a proxy that asks for it is refused.
        """
        if self.score_test:
            raise GasError("a search's proxy never scores the test split: only gas compare and the benchmarks do")
        train = dataclasses.asdict(self.train)
        kind = self.train.device.partition(":")[0]
        train["device"] = resolve_device("auto").type if kind == "auto" else kind
        left_out = ("data_dir", "score_test", "train")
        own = {key: value for key, value in dataclasses.asdict(self).items() if key not in left_out}
        return {**own, "splits": split_version(self.dataset), **train}


#: The proxy `gas search` trains where its trials get GPUs (see the module docstring for why these values).
GPU_PROXY = ProxyConfig(resolution=64, train_size=4096, val_size=1024, train=TrainConfig(epochs=8, batch_size=64))


def _fields(config: ProxyConfig) -> dict[str, Any]:
    """Every setting of a proxy by name, its training hyper-parameters alongside its own fields."""
    own = {key: value for key, value in dataclasses.asdict(config).items() if key != "train"}
    return {**own, **dataclasses.asdict(config.train)}


# What makes the GPU proxy: a user who sets any of these describes a proxy of their own.
GPU_PROXY_FIELDS = frozenset(
    name for name, value in _fields(GPU_PROXY).items() if _fields(ProxyConfig())[name] != value
)


def default_proxy(has_gpus: bool, overrides: Mapping[str, Any] | None = None) -> ProxyConfig:
    """The embedded proxy with the user's `overrides` (ProxyConfig or TrainConfig field names) applied.

    GPU_PROXY where the trials get GPUs, unless the overrides ask for CPU training (device "cpu"), the
    zero-cost evaluator (nothing to train) or set a field in which GPU_PROXY differs from the CPU proxy
    (resolution, epochs, split sizes, batch...): whoever shapes the proxy gets the CPU proxy's documented
    defaults under their settings, the same on any machine.

    >>> default_proxy(True).resolution, default_proxy(True, {"device": "cpu"}).resolution
    (64, 32)
    """
    overrides = dict(overrides or {})
    on_gpus = (
        has_gpus
        and overrides.get("device", "auto") != "cpu"
        and overrides.get("evaluator", "train") == "train"
        and not GPU_PROXY_FIELDS & overrides.keys()
    )
    return (GPU_PROXY if on_gpus else ProxyConfig()).with_overrides(**overrides)


@dataclass(frozen=True)
class ProxyResult:
    """What one proxy evaluation measured; the same fields whichever evaluator produced it."""

    accuracy: float  # validation accuracy after the last epoch (zero-cost: the mapped naswot score)
    accuracy_history: tuple[float, ...]  # after each epoch (zero-cost: the one score)
    wall_time: float  # seconds for the whole evaluation, data loading included
    images_per_second: float  # training images per second (zero-cost: images scored per second)
    device: str  # "cpu" or the GPU's name
    epochs: int  # epochs trained: fewer than configured when early stopping ended it (0 for zero-cost)
    zero_cost: dict[str, float]  # scores at initialisation (empty when skipped)
    mfu: float | None  # model-FLOPs utilisation on CUDA, when the device's peak is known
    loss: float | None  # mean training loss of the last epoch (None for zero-cost)
    batch_size: int
    forward_flops: int  # multiply-adds of one forward pass at the proxy resolution
    test_accuracy: float | None = None  # accuracy on the test split after training, when the proxy asked for it
    test_images: int | None = None  # the test split's size it was scored on

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProxyResult:
        return cls(**{**data, "accuracy_history": tuple(data["accuracy_history"])})


def proxy_genome(genome: Genome, resolution: int, num_classes: int) -> Genome:
    """`genome` as the proxy trains it: same architecture, at `resolution`, with the dataset's classes."""
    proxy = dataclasses.replace(genome.at_resolution(resolution), num_classes=num_classes)
    get_space(genome.space).check(proxy)
    return proxy


def build_proxy_model(genome: Genome, resolution: int, num_classes: int, seed: int = 0) -> torch.nn.Module:
    """The freshly initialised model the proxy trains, seeded without touching the caller's random state."""
    proxy = proxy_genome(genome, resolution, num_classes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_space(genome.space).build(proxy)


# Random genomes whose proxies `check_resolution` builds on paper; a few dozen cover a space's variety.
RESOLUTION_PROBES = 32


def check_resolution(resolution: int, space: str = DEFAULT_SPACE) -> None:
    """Raise GasError unless the space's references and random genomes (drawn at 224 px) fit `resolution`.

    Each space's own rules decide: the probe genomes are checked at the proxy resolution exactly as
    `evaluate` will check them, so no space's particular rules need repeating here.
    """
    if not isinstance(resolution, int) or isinstance(resolution, bool) or resolution < 8:
        raise GasError(f"proxy resolution must be an integer of at least 8 px, got {resolution!r}")
    search_space = get_space(space)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # a scratch study: its creation is not news
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    probes = dict(search_space.references)
    for index in range(RESOLUTION_PROBES):
        probes[f"random genome {index}"] = search_space.sample(study.ask())
    for name, genome in probes.items():
        try:
            search_space.check(genome.at_resolution(resolution))
        except GenomeError as error:
            raise GasError(
                f"proxy resolution {resolution}px does not fit the {search_space.name} space ({name}: {error})"
            ) from None


def check_data(config: ProxyConfig, space: str = DEFAULT_SPACE) -> tuple[ProxyConfig, DatasetCheck]:
    """Driver-side, before any worker starts: one-line GasError for an unusable dataset or resolution.

    Returns the config with its data paths made absolute (a worker runs in another directory) and what
    the dataset check found (classes, images, files skipped as unreadable), for the study to record.
    """
    if config.evaluator not in EVALUATORS:
        raise GasError(f"unknown evaluator {config.evaluator!r}; use one of {', '.join(EVALUATORS)}")
    if config.train.epochs < 1:
        raise GasError(f"epochs must be at least 1, got {config.train.epochs}")
    if config.train.batch_size < 1:
        raise GasError(f"batch size must be at least 1, got {config.train.batch_size}")
    dataset, data_dir = resolve_dataset(config.dataset, config.data_dir)
    found = check_dataset(dataset, data_dir)
    check_resolution(config.resolution, space)
    resolve_device(config.train.device)
    return dataclasses.replace(config, dataset=dataset, data_dir=data_dir), found


# The target schedule: what a proxy's ranking is judged against and what `gas compare` retrains on.
TARGET_RESOLUTION = 64  # at 64 px a mask unit of 8 no longer covers the whole image (see the module docstring)
TARGET_EPOCH_FACTOR = 4  # times the proxy's epochs, on the same images and batch: 4x its training steps


def target_schedule(proxy: ProxyConfig, space: str = DEFAULT_SPACE) -> ProxyConfig:
    """`proxy` trained longer and larger: TARGET_EPOCH_FACTOR times its epochs at TARGET_RESOLUTION px.

    Where the space refuses TARGET_RESOLUTION, the highest resolution it admits between the proxy's and
    that; a proxy already at TARGET_RESOLUTION or above keeps its own. Always trained (a zero-cost proxy
    has nothing to retrain), with no scores at initialisation; data, seed and every other setting stay.

    >>> target = target_schedule(ProxyConfig())
    >>> target.resolution, target.train.epochs
    (64, 16)
    """
    resolution = proxy.resolution
    for candidate in range(TARGET_RESOLUTION, proxy.resolution, -1):
        try:
            check_resolution(candidate, space)
        except GasError:
            continue
        resolution = candidate
        break
    return proxy.with_overrides(
        evaluator="train",
        epochs=proxy.train.epochs * TARGET_EPOCH_FACTOR,
        resolution=resolution,
        zero_cost_batch=0,
    )


def evaluate(genome: Genome, config: ProxyConfig, report: Report | None = None) -> ProxyResult:
    """Train (or score without training) `genome` at the proxy resolution and return what was measured.

    For evaluator "zero-cost", the accuracy is the naswot score mapped monotonically into [0, 1]
    (see `gas.evaluate.zero_cost.normalised_primary`), not a trained accuracy. Raises TrialFailed if
    training diverges or runs out of memory, GasError if the data or resolution is unusable. `report`
    receives each epoch's validation accuracy and may return False to stop training there.
    """
    started = time.perf_counter()
    if config.evaluator not in EVALUATORS:
        raise GasError(f"unknown evaluator {config.evaluator!r}; use one of {', '.join(EVALUATORS)}")
    splits = load_dataset(config.dataset, config.resolution, config.data_dir, config.train_size, config.val_size)
    trained_genome = proxy_genome(genome, config.resolution, splits.num_classes)
    forward_flops = get_space(genome.space).cost(trained_genome).flops
    device = resolve_device(config.train.device)
    model = build_proxy_model(genome, config.resolution, splits.num_classes, config.train.seed)

    scores: dict[str, float] = {}
    wanted = config.zero_cost_batch or (DEFAULT_ZERO_COST_BATCH if config.evaluator == "zero-cost" else 0)
    batch = min(wanted, len(splits.train_labels))
    if config.evaluator == "zero-cost" or batch > 0:
        scores = zero_cost_scores(model, splits.train_images[:batch], splits.train_labels[:batch])

    if config.evaluator == "zero-cost":
        accuracy = normalised_primary(scores, batch)
        wall_time = time.perf_counter() - started
        if report is not None:
            report({"epoch": 0.0, "accuracy": accuracy})
        return ProxyResult(
            accuracy=accuracy,
            accuracy_history=(accuracy,),
            wall_time=wall_time,
            images_per_second=batch / wall_time if wall_time > 0 else 0.0,
            device="cpu",
            epochs=0,
            zero_cost=scores,
            mfu=None,
            loss=None,
            batch_size=batch,
            forward_flops=forward_flops,
        )

    def report_with_device(entry: dict[str, Any]) -> bool | None:
        # A driver that stops this trial early records its device from the last report.
        return None if report is None else report({**entry, "device": device_name(device)})

    # The key names the images exactly: trials in one worker process share their device copy.
    data_key = (config.dataset, config.data_dir, config.resolution, config.train_size, config.val_size)
    result = train(
        model, splits, config.train, report=report_with_device, forward_flops=forward_flops, data_key=data_key
    )
    test_accuracy, test_images = None, None
    if config.score_test:
        test = load_test_split(config.dataset, config.resolution, config.data_dir, config.train_size, config.test_size)
        test_accuracy, _ = evaluate_accuracy(model, test.images, test.labels, device, config.train.eval_batch_size)
        test_images = len(test.labels)
    mfu_values = [entry["mfu"] for entry in result.history if "mfu" in entry]
    return ProxyResult(
        accuracy=result.accuracy,
        accuracy_history=tuple(entry["accuracy"] for entry in result.history),
        wall_time=time.perf_counter() - started,
        images_per_second=result.images_per_second,
        device=device_name(device),
        epochs=len(result.history),
        zero_cost=scores,
        mfu=sum(mfu_values) / len(mfu_values) if mfu_values else None,
        loss=result.loss,
        batch_size=result.batch_size,
        forward_flops=forward_flops,
        test_accuracy=test_accuracy,
        test_images=test_images,
    )
