"""The proxy trainer: a short, seeded AdamW run with warm-up + cosine, timed, failing loudly on divergence.

One call trains one freshly built model on in-memory tensors and returns its validation accuracy per
epoch. On CPU it is deterministic: the seed fixes initialisation and batch order, and nothing else draws
random numbers. On CUDA it trains in bf16 autocast with channels-last inputs, can compile the model, and
measures model-FLOPs utilisation (MFU). The batch and learning rate are the configured ones on every
device: a result must not depend on how much memory the device (or its neighbours) left free.

MFU = achieved training FLOP/s / the device's peak dense bf16 FLOP/s, where one training image costs
3 x the forward multiply-accumulates (forward, plus backward ≈ 2 x forward) x 2 FLOP per multiply-accumulate.
The forward count is the analytic one from the cost model at the training resolution (fvcore convention,
attention matmuls included), so MFU compares architectures on the same footing as the search's budget.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gas.errors import GasError
from gas.evaluate.datasets import Splits

Report = Callable[[dict[str, Any]], bool | None]

# Peak dense bf16 tensor-core FLOP/s (vendor data sheets, which print twice these figures "with sparsity"),
# by the words of the device's name as CUDA reports it ("NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB").
# A name matches an entry when it holds each of the entry's words as a whole word: "L4" is not in "NVIDIA L40",
# nor "H200" in "NVIDIA GH200 480GB". The entry with most words wins, so a part named by its form factor
# ("NVIDIA H100 NVL", "NVIDIA H100 PCIe") takes its own figure, and the plain name is the SXM part's.
# Override with GAS_PEAK_FLOPS for a device not listed.
PEAK_BF16_FLOPS = {
    ("H100",): 989.4e12,  # SXM5; CUDA names it "NVIDIA H100 80GB HBM3"
    ("H100", "PCIE"): 756.0e12,
    ("H100", "NVL"): 835.5e12,
    ("H200",): 989.4e12,
    ("H200", "NVL"): 835.5e12,
    ("GH200",): 989.4e12,
    ("A100",): 312.0e12,  # SXM4 and PCIe alike
    ("L40S",): 362.05e12,
    ("L40",): 181.05e12,
    ("L4",): 121.0e12,
    ("A10G",): 70.0e12,
    ("A10",): 125.0e12,
    ("RTX", "A6000"): 154.8e12,
}


def _name_words(name: str) -> set[str]:
    return set(re.split(r"[\s\-_/]+", name.upper()))


def listed_peak_flops(name: str) -> float | None:
    """The table's peak for a CUDA device name, from its most specific entry; None if no entry matches.

    >>> listed_peak_flops("NVIDIA H100 NVL") == PEAK_BF16_FLOPS[("H100", "NVL")]
    True
    """
    words = _name_words(name)
    matches = [entry for entry in PEAK_BF16_FLOPS if words.issuperset(entry)]
    return PEAK_BF16_FLOPS[max(matches, key=len)] if matches else None


class TrialFailed(GasError):
    """A trial that cannot produce a result (diverged, out of memory); the message says why in one line."""


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one proxy training run; the defaults are the CPU proxy's (see gas.evaluate.proxy)."""

    epochs: int = 4
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.05
    warmup_fraction: float = 0.1  # share of all steps spent warming up linearly from 0
    label_smoothing: float = 0.1
    grad_clip: float = 1.0  # max global gradient norm; short schedules at a high lr need it
    pos_embed_lr_scale: float = 10.0  # learning-rate multiplier for position embeddings (see param_groups)
    seed: int = 0
    device: str = "auto"  # "auto" -> cuda if available else cpu
    compile: bool = False
    eval_batch_size: int = 256


@dataclass
class TrainResult:
    accuracy: float  # validation accuracy after the last epoch
    loss: float  # mean training loss of the last epoch
    history: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0  # time inside training steps only
    images_per_second: float = 0.0  # training images / train_seconds
    batch_size: int = 0
    lr: float = 0.0


def resolve_device(device: str) -> torch.device:
    """'auto' → cuda if available else cpu; anything else is checked and passed to torch."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise GasError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise GasError(f"device {device!r} requested but CUDA is not available here")
    return resolved


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def peak_flops(device: torch.device) -> float | None:
    """Peak dense bf16 FLOP/s of a CUDA device, or None if unknown (then MFU is not reported)."""
    if device.type != "cuda":
        return None
    if os.environ.get("GAS_PEAK_FLOPS"):
        return float(os.environ["GAS_PEAK_FLOPS"])
    return listed_peak_flops(torch.cuda.get_device_name(device))


def warmup_cosine(step: int, total_steps: int, warmup_steps: int) -> float:
    """lr multiplier: linear from ~0 to 1 over the warm-up, then cosine down to 0 at the last step."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def param_groups(model: nn.Module, lr: float, weight_decay: float, pos_embed_lr_scale: float) -> list[dict]:
    """Parameter groups as the model family asks: what it names gets no decay, its position embeddings a larger rate.

    A model family says which of its parameters take no weight decay with `no_weight_decay()` (as
    Hiera's official code and timm do: position embeddings, relative-position biases) and which are
    position embeddings with `position_embeddings()`; both return parameter names. Vectors (norms,
    biases) never decay.

    Why the larger rate: position embeddings start tiny (std 0.02, as in Hiera) next to the patch
    embeddings (std ~0.5), and Adam moves a weight by about lr per step, so in a proxy's hundred-odd steps
    they would stay too small for the network to use where things are. Scaling their rate lets a short run
    learn position as a long run would.
    """
    no_decay_names = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    position_names = set(model.position_embeddings()) if hasattr(model, "position_embeddings") else set()
    decay, no_decay, position = [], [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if name in position_names:
            position.append(parameter)
        elif parameter.ndim >= 2 and name not in no_decay_names:
            decay.append(parameter)
        else:
            no_decay.append(parameter)
    return [
        {"params": decay, "weight_decay": weight_decay, "lr": lr},
        {"params": no_decay, "weight_decay": 0.0, "lr": lr},
        {"params": position, "weight_decay": 0.0, "lr": lr * pos_embed_lr_scale},
    ]


def _batches(count: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Shuffled index batches; the last partial batch is dropped so every step sees the same batch size."""
    order = torch.randperm(count, generator=generator)
    for start in range(0, count - batch_size + 1, batch_size):
        yield order[start : start + batch_size]


def _is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and says_out_of_memory(str(error))


def says_out_of_memory(error: str) -> bool:
    """Whether an error's text reports memory running out (CUDA's allocator, the CPU's, or TrialFailed's line)."""
    return "out of memory" in error.lower() or "can't allocate memory" in error


# What CUDA errors say that leave the process's CUDA context unusable ("sticky" errors: an illegal address, a
# failed device-side assert, a launch that died): every later CUDA call in the process fails too, whatever it
# runs. Any other "CUDA error" is taken as one as well: a process replaced for nothing costs a restart, a
# broken one kept costs every trial after it.
STICKY_CUDA_ERRORS = (
    "CUDA error",
    "illegal memory access",
    "device-side assert",
    "unspecified launch failure",
    "CUBLAS_STATUS_EXECUTION_FAILED",
    "CUDNN_STATUS_EXECUTION_FAILED",
)


def breaks_cuda_context(error: str) -> bool:
    """Whether an error's text is a CUDA error after which this process can run nothing more on its GPU.

    Running out of memory is not one, even when CUDA words it "CUDA error: out of memory": the process
    recovers once memory is freed.
    """
    return not says_out_of_memory(error) and any(sign in error for sign in STICKY_CUDA_ERRORS)


def hold_to_share(share: float) -> bool:
    """Cap this process's CUDA allocations at `share` of its GPU's memory; True if a cap was set.

    Trials packed onto one GPU (`share` below 1) have no memory isolation of their own: without a cap, one
    trial's growth runs its neighbours out of memory. With it, a trial over its share fails alone. The cap
    holds for torch's caching allocator; CUDA's own context and libraries' workspaces sit outside it.
    """
    if not 0 < share < 1 or not torch.cuda.is_available():
        return False
    torch.cuda.set_per_process_memory_fraction(share)
    return True


@contextlib.contextmanager
def _failures_as_trial_failed(device: torch.device, batch_size: int) -> Iterator[None]:
    """Turn out-of-memory into TrialFailed with one line; everything else propagates unchanged."""
    try:
        yield
    except (RuntimeError, torch.OutOfMemoryError) as error:
        if not _is_out_of_memory(error):
            raise
        if device.type == "cuda":
            torch.cuda.empty_cache()
        raise TrialFailed(f"out of memory on {device_name(device)} at batch size {batch_size}") from None


def evaluate_accuracy(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, device: torch.device, batch_size: int = 256
) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of `model` on a labelled set, in eval mode, without gradients."""
    model.eval()
    correct, loss_sum = 0, 0.0
    autocast = _autocast(device)
    with torch.no_grad():
        for start in range(0, len(labels), batch_size):
            batch = _to_device(images[start : start + batch_size], device)
            target = labels[start : start + batch_size].to(device, non_blocking=True)
            with autocast:
                logits = model(batch)
            logits = logits.float()
            loss_sum += F.cross_entropy(logits, target, reduction="sum").item()
            correct += (logits.argmax(dim=1) == target).sum().item()
    model.train()
    return correct / max(1, len(labels)), loss_sum / max(1, len(labels))


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# Device copies of proxy datasets, kept for the life of the process. A Ray worker serves one trial after
# another (Tune's reuse_actors), and every trial of a search trains on the same images: one copy per worker
# process instead of one per trial saves each trial the transfer and the allocation. Two entries cover a
# worker that alternates between two datasets (a search's proxy and an audit's long run); an evicted copy
# is freed once no running trial holds it.
DEVICE_DATA_ENTRIES = 2
_device_data: OrderedDict[tuple[Hashable, str], Splits] = OrderedDict()


def data_on_device(splits: Splits, device: torch.device, key: Hashable | None = None) -> Splits:
    """`splits` with its four tensors on `device`; with a `key`, the copy this process made for it before.

    The key must name the data exactly (the proxy passes dataset, data dir, resolution and split sizes):
    a later call with the same key and device returns the first call's tensors and ignores `splits`.
    """
    if key is None:
        return _moved(splits, device)
    entry = (key, str(device))
    cached = _device_data.get(entry)
    if cached is None:
        cached = _moved(splits, device)
        _device_data[entry] = cached
        while len(_device_data) > DEVICE_DATA_ENTRIES:
            _device_data.popitem(last=False)
    _device_data.move_to_end(entry)
    return cached


def _moved(splits: Splits, device: torch.device) -> Splits:
    return dataclasses.replace(
        splits,
        train_images=splits.train_images.to(device),
        train_labels=splits.train_labels.to(device),
        val_images=splits.val_images.to(device),
        val_labels=splits.val_labels.to(device),
    )


def _to_device(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    images = images.to(device, non_blocking=True)
    # Channels-last lets cuDNN run the stem conv without layout transposes; CPU gains nothing from it.
    return images.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else images


@dataclass
class _Run:
    """One training run's moving parts: the model as stepped, its optimiser, schedule and batch order."""

    model: nn.Module
    step_model: nn.Module  # the model, compiled where the config says so
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LambdaLR
    generator: torch.Generator
    device: torch.device
    config: TrainConfig
    batch_size: int
    total_steps: int
    step: int = 0


def _start(model: nn.Module, config: TrainConfig, device: torch.device, train_images: int) -> _Run:
    batch_size = min(config.batch_size, train_images)
    total_steps = train_images // batch_size * config.epochs
    warmup_steps = round(config.warmup_fraction * total_steps)
    optimizer = torch.optim.AdamW(
        param_groups(model, config.lr, config.weight_decay, config.pos_embed_lr_scale), lr=config.lr, betas=(0.9, 0.999)
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, total_steps, warmup_steps))
    step_model = torch.compile(model) if config.compile else model
    generator = torch.Generator().manual_seed(config.seed)
    return _Run(model, step_model, optimizer, schedule, generator, device, config, batch_size, total_steps)


def _epoch(run: _Run, epoch: int, train_images: torch.Tensor, train_labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """One pass over the training images in the run's batch order: (the summed loss, images seen)."""
    device, config = run.device, run.config
    loss_sum = torch.zeros((), device=device)
    seen = 0
    with _failures_as_trial_failed(device, run.batch_size):
        for index in _batches(len(train_labels), run.batch_size, run.generator):
            index = index.to(device)
            images = _to_device(train_images[index], device)
            with _autocast(device):
                logits = run.step_model(images)
            loss = F.cross_entropy(logits.float(), train_labels[index], label_smoothing=config.label_smoothing)
            # On CPU the check is free; on CUDA it would sync every step, so the check runs on the
            # running sum a few times per epoch (a NaN stays NaN in a sum).
            loss_sum += loss.detach()
            if (device.type != "cuda" or run.step % 16 == 0) and not torch.isfinite(loss_sum):
                raise TrialFailed(
                    f"loss became {loss.item()} at epoch {epoch} step {run.step + 1}/{run.total_steps} "
                    f"(lr {run.schedule.get_last_lr()[0]:.3g}); the model diverged"
                )
            run.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip:
                nn.utils.clip_grad_norm_(run.model.parameters(), config.grad_clip)
            run.optimizer.step()
            run.schedule.step()
            run.step += 1
            seen += len(index)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return loss_sum, seen


def train(
    model: nn.Module,
    splits: Splits,
    config: TrainConfig,
    report: Report | None = None,
    forward_flops: int | None = None,
    data_key: Hashable | None = None,
) -> TrainResult:
    """Train `model` on `splits.train_*`, report validation accuracy after every epoch, return the last.

    `report` receives each epoch's entry; if it returns False, training stops after that epoch (the
    learning-rate schedule stays the full run's, as successive halving compares partial runs of it).

    `forward_flops` (multiply-accumulates of one forward pass at the training resolution) enables MFU in
    the per-epoch reports on CUDA. `data_key` names `splits` exactly; on CUDA, trials in this process that
    pass the same key share one device copy of the images (`data_on_device`). Raises TrialFailed if the
    loss stops being finite or memory runs out.
    """
    device = resolve_device(config.device)
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    run = _start(model, config, device, len(splits.train_labels))
    steps_per_epoch = len(splits.train_labels) // run.batch_size
    peak = peak_flops(device)
    if device.type == "cuda":  # the whole (small) proxy set lives on the device, not a batch at a time
        with _failures_as_trial_failed(device, run.batch_size):
            splits = data_on_device(splits, device, data_key)

    result = TrainResult(accuracy=0.0, loss=math.nan, batch_size=run.batch_size, lr=config.lr)
    model.train()
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        loss_sum, seen = _epoch(run, epoch, splits.train_images, splits.train_labels)
        elapsed = time.perf_counter() - started
        mean_loss = (loss_sum / max(1, steps_per_epoch)).item()
        if not math.isfinite(mean_loss):
            raise TrialFailed(f"loss became {mean_loss} during epoch {epoch}; the model diverged")
        result.train_seconds += elapsed
        with _failures_as_trial_failed(device, config.eval_batch_size):
            accuracy, val_loss = evaluate_accuracy(
                model, splits.val_images, splits.val_labels, device, config.eval_batch_size
            )
        images_per_second = seen / elapsed if elapsed > 0 else 0.0
        entry = {
            "epoch": float(epoch),
            "accuracy": accuracy,
            "loss": mean_loss,
            "val_loss": val_loss,
            "images_per_second": images_per_second,
            "lr": run.schedule.get_last_lr()[0],
        }
        if peak and forward_flops:
            entry["mfu"] = images_per_second * 3 * forward_flops * 2 / peak
        result.history.append(entry)
        result.accuracy, result.loss = accuracy, mean_loss
        # A report that returns False stops training here: early stopping on the driver said so.
        if report is not None and report(dict(entry)) is False:
            break
    total_images = steps_per_epoch * run.batch_size * len(result.history)
    result.images_per_second = total_images / result.train_seconds if result.train_seconds > 0 else 0.0
    return result
