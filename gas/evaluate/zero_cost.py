"""Training-free scores of a freshly initialised model from one mini-batch (zero-cost proxies).

    naswot     log-determinant of the Hamming-similarity kernel of the images' activation patterns
               (Mellor et al., "Neural Architecture Search without Training", 2021): the more distinct the
               on/off patterns the network gives different images, the higher. Patterns are the signs of
               every GELU/ReLU input (the MLP hidden units here), each image's pattern concatenated over
               all its tokens and blocks.
    synflow    log of the summed |θ · ∂R/∂θ| with R the sum of the outputs of the network with absolute
               weights on an all-ones input (Tanaka et al., "Pruning neural networks without any data by
               iteratively conserving synaptic flow", 2020), in float64 so deep nets do not overflow.
    grad_norm  log of the L2 norm of the cross-entropy gradient of the batch at initialisation
               (Abdelfattah et al., "Zero-Cost Proxies for Lightweight NAS", 2021).

All three are reported as logarithms: the raw values span many orders of magnitude across genomes, and a
log keeps them finite and comparable in one table.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

SCORES = ("naswot", "synflow", "grad_norm")
PRIMARY = "naswot"
# naswot's per-image log-determinant is at most ln(number of activation units) (Hadamard's inequality on
# a kernel whose diagonal is that number); 2**32 units is beyond any proxy model, so this maps it into [0, 1].
NASWOT_PER_IMAGE_CEILING = math.log(2.0**32)


def naswot(model: nn.Module, images: torch.Tensor) -> float:
    """Log-determinant of K[i, j] = number of activation units on which images i and j agree."""
    kernel = torch.zeros(len(images), len(images), dtype=torch.float64)

    def record(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        codes = (inputs[0].detach() > 0).flatten(1).float()
        # Agreements = both on + both off; sums of 0/1 stay exact in float32 far beyond these sizes.
        agree = codes @ codes.T + (1 - codes) @ (1 - codes).T
        kernel.add_(agree.double())

    hooks = [
        module.register_forward_pre_hook(record) for module in model.modules() if isinstance(module, nn.GELU | nn.ReLU)
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(images)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    sign, logdet = torch.linalg.slogdet(kernel)
    # Two images with identical patterns make K singular: the network cannot tell them apart at all.
    return float(logdet) if sign > 0 else -math.inf


def synflow(model: nn.Module, resolution: int) -> float:
    """Log synaptic flow of a float64 copy of `model` with every parameter replaced by its magnitude."""
    probe = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for parameter in probe.parameters():
            parameter.abs_()
    probe.zero_grad(set_to_none=True)
    output = probe(torch.ones(1, 3, resolution, resolution, dtype=torch.float64))
    output.sum().backward()
    total = sum(
        (parameter * parameter.grad).abs().sum().item()
        for parameter in probe.parameters()
        if parameter.grad is not None
    )
    return math.log(total) if total > 0 else -math.inf


def grad_norm(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Log L2 norm of the loss gradient over all parameters, on a copy so `model` keeps no gradients."""
    probe = copy.deepcopy(model).train()
    loss = F.cross_entropy(probe(images), labels)
    loss.backward()
    squares = sum(
        parameter.grad.double().pow(2).sum().item() for parameter in probe.parameters() if parameter.grad is not None
    )
    return 0.5 * math.log(squares) if squares > 0 else -math.inf


def zero_cost_scores(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Every score in SCORES for an untrained `model` on one CPU mini-batch; `model` is left unchanged."""
    return {
        "naswot": naswot(model, images),
        "synflow": synflow(model, images.shape[-1]),
        "grad_norm": grad_norm(model, images, labels),
    }


def normalised_primary(scores: dict[str, float], batch_size: int) -> float:
    """The primary score as a number in [0, 1] that grows with it, for a search that maximises accuracy.

    naswot's log-determinant grows with the batch, so it is divided by the batch size (per-image
    log-determinant) and then by its ceiling: the ordering of genomes is exactly that of the raw score.
    """
    value = scores[PRIMARY] / max(1, batch_size) / NASWOT_PER_IMAGE_CEILING
    return min(1.0, max(0.0, value)) if math.isfinite(value) else 0.0
