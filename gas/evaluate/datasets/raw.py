"""What every dataset source produces: uint8 splits, before normalisation, and the helpers they share."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Splits never depend on a trial's seed: every trial of a search must be scored on the same images.
SPLIT_SEED = 20240601


@dataclass(frozen=True)
class RawSplits:
    """uint8 images [N, 3, R, R] and int64 labels; what sources return and the disk cache stores."""

    num_classes: int
    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor


@dataclass(frozen=True)
class RawTest:
    """The held-out test split as uint8 images [N, 3, R, R] and int64 labels; kept in a file of its own.

    Only `gas compare` and the benchmarks load it. A search never does, so the test images cannot steer
    which genome it picks, and a test-split file in the cache means something read it.
    """

    num_classes: int
    images: torch.Tensor
    labels: torch.Tensor


def resize_uint8(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """Bilinear resize of uint8 [N, 3, H, W] to a square side; antialiased when shrinking."""
    if images.shape[-1] == resolution and images.shape[-2] == resolution:
        return images.contiguous()
    chunks = []
    for start in range(0, len(images), 1024):  # bounded float memory for big archives
        chunk = images[start : start + 1024].float()
        shrinking = resolution < max(images.shape[-2:])
        chunk = F.interpolate(
            chunk, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=shrinking
        )
        chunks.append(chunk.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(chunks)


def take(size: int | None, available: int) -> int:
    """How many of `available` images a split capped at `size` (None: no cap) holds."""
    return available if size is None else min(size, available)
