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
placement still decides at which depth the grid shrinks to 4x4, 2x2 and 1x1. With a GPU, `--resolution
64` or `96` keeps 4 or 9 mask units of 8 per image. The learning rate is low (1e-4 at batch 32, DeiT's
rule gives 3e-5) because Hiera-style networks at 1e-3 did not learn at all in ~130 steps.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
import torch

from gas.defaults import DEFAULT_SPACE
from gas.errors import GasError, GenomeError
from gas.evaluate.data import DEFAULT_DATASET, check_dataset, load_dataset
from gas.evaluate.train import TrainConfig, TrialFailed, device_name, resolve_device, train
from gas.evaluate.zero_cost import normalised_primary, zero_cost_scores
from gas.genome import Genome
from gas.space import get_space

__all__ = ["DEFAULT_DATASET", "EVALUATORS", "ProxyConfig", "TrialFailed", "check_data", "evaluate"]

EVALUATORS = ("train", "zero-cost")
DEFAULT_ZERO_COST_BATCH = 64


@dataclass(frozen=True)
class ProxyConfig:
    """Everything that decides a proxy result; the study records it so any trial can be reproduced.

    The defaults are the CPU proxy described in this module's docstring; `gas search` options override
    dataset, data_dir, resolution, epochs, evaluator, seed, device and compile.
    """

    dataset: str = DEFAULT_DATASET
    data_dir: str | None = None
    resolution: int = 32
    epochs: int = 4
    evaluator: str = "train"  # "train" or "zero-cost"
    seed: int = 0
    batch_size: int = 32
    device: str = "auto"  # "auto" -> cuda if available else cpu
    compile: bool = False
    lr: float = 1e-4
    weight_decay: float = 0.05
    warmup_fraction: float = 0.1
    label_smoothing: float = 0.1
    pos_embed_lr_scale: float = 10.0
    train_size: int | None = 1024  # caps every dataset's training split (None: all of it)
    val_size: int | None = 512
    zero_cost_batch: int = DEFAULT_ZERO_COST_BATCH  # images for the zero-cost scores; 0 skips them when training

    def train_config(self) -> TrainConfig:
        return TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            weight_decay=self.weight_decay,
            warmup_fraction=self.warmup_fraction,
            label_smoothing=self.label_smoothing,
            pos_embed_lr_scale=self.pos_embed_lr_scale,
            seed=self.seed,
            device=self.device,
            compile=self.compile,
        )


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


def check_data(config: ProxyConfig, space: str = DEFAULT_SPACE) -> None:
    """Driver-side, before any worker starts: one-line GasError for an unusable dataset or resolution."""
    if config.evaluator not in EVALUATORS:
        raise GasError(f"unknown evaluator {config.evaluator!r}; use one of {', '.join(EVALUATORS)}")
    if config.epochs < 1:
        raise GasError(f"epochs must be at least 1, got {config.epochs}")
    if config.batch_size < 1:
        raise GasError(f"batch size must be at least 1, got {config.batch_size}")
    check_dataset(config.dataset, config.data_dir)
    check_resolution(config.resolution, space)
    resolve_device(config.device)


def evaluate(
    genome: Genome, config: ProxyConfig, report: Callable[[dict[str, float]], None] | None = None
) -> dict[str, Any]:
    """Train (or score without training) `genome` at the proxy resolution and return its numbers.

    Returns {"accuracy", "wall_time", "images_per_second", "device", "epochs", "zero_cost", "mfu"}.
    For evaluator "zero-cost", "accuracy" is the naswot score mapped monotonically into [0, 1]
    (see `gas.evaluate.zero_cost.normalised_primary`), not a trained accuracy. Raises TrialFailed if training
    diverges or runs out of memory, GasError if the data or resolution is unusable.
    """
    started = time.perf_counter()
    if config.evaluator not in EVALUATORS:
        raise GasError(f"unknown evaluator {config.evaluator!r}; use one of {', '.join(EVALUATORS)}")
    splits = load_dataset(config.dataset, config.resolution, config.data_dir, config.train_size, config.val_size)
    trained_genome = proxy_genome(genome, config.resolution, splits.num_classes)
    forward_flops = get_space(genome.space).cost(trained_genome).flops
    device = resolve_device(config.device)
    model = build_proxy_model(genome, config.resolution, splits.num_classes, config.seed)

    scores: dict[str, float] = {}
    wanted = config.zero_cost_batch or (DEFAULT_ZERO_COST_BATCH if config.evaluator == "zero-cost" else 0)
    batch = min(wanted, len(splits.train_labels))
    if config.evaluator == "zero-cost" or batch > 0:
        scores = zero_cost_scores(model, splits.train_images[:batch], splits.train_labels[:batch])

    if config.evaluator == "zero-cost":
        accuracy = normalised_primary(scores, batch)
        wall_time = time.perf_counter() - started
        entry = {
            "epoch": 0.0,
            "accuracy": accuracy,
            "loss": math.nan,
            **{f"zero_cost/{k}": v for k, v in scores.items()},
        }
        if report is not None:
            report(entry)
        return {
            "accuracy": accuracy,
            "wall_time": wall_time,
            "images_per_second": batch / wall_time if wall_time > 0 else 0.0,
            "device": "cpu",
            "epochs": 0,
            "zero_cost": scores,
            "mfu": None,
        }

    result = train(model, splits, config.train_config(), report=report, forward_flops=forward_flops)
    mfu_values = [entry["mfu"] for entry in result.history if "mfu" in entry]
    return {
        "accuracy": result.accuracy,
        "wall_time": time.perf_counter() - started,
        "images_per_second": result.images_per_second,
        "device": device_name(device),
        "epochs": config.epochs,
        "zero_cost": scores,
        "mfu": sum(mfu_values) / len(mfu_values) if mfu_values else None,
        "loss": result.loss,
        "batch_size": result.batch_size,
        "forward_flops": forward_flops,
    }
