"""Analytic parameter and FLOP counts in fvcore's convention (one multiply-add = one FLOP).

Spaces cost a genome by adding up the layer formulas below, block by block, without building a model.
What fvcore counts, and so what these count: conv and linear weights (bias excluded), matmuls,
attention's Q·Kᵀ and A·V, and norms (LayerNorm 5 per element; eval-mode BatchNorm 2 per element).
Softmax, activations, adds, pooling and means are free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Count:
    """Parameters and FLOPs of one layer or a group of layers."""

    params: int = 0
    flops: int = 0

    def __add__(self, other: Count) -> Count:
        return Count(self.params + other.params, self.flops + other.flops)


def total(counts: list[Count]) -> Count:
    return sum(counts, Count())


def linear(tokens: int, dim_in: int, dim_out: int, bias: bool = True) -> Count:
    return Count(dim_in * dim_out + (dim_out if bias else 0), tokens * dim_in * dim_out)


def conv2d(dim_in: int, dim_out: int, kernel: int, out_pixels: int, groups: int = 1, bias: bool = True) -> Count:
    weights = dim_out * (dim_in // groups) * kernel * kernel
    return Count(weights + (dim_out if bias else 0), weights * out_pixels)


def layer_norm(tokens: int, dim: int) -> Count:
    return Count(2 * dim, 5 * tokens * dim)


def batch_norm(elements: int, dim: int) -> Count:
    """Eval-mode BatchNorm as fvcore counts it: scale and shift, 2 per element."""
    return Count(2 * dim, 2 * elements)


def attention(queries: int, keys: int, qk_dim: int, v_dim: int) -> Count:
    """Q·Kᵀ and A·V for `queries` x `keys` pairs, with head widths summed over heads."""
    return Count(0, queries * keys * (qk_dim + v_dim))


def parameter(elements: int) -> Count:
    """A bare parameter tensor (e.g. a position embedding): params only."""
    return Count(elements, 0)


@dataclass(frozen=True)
class Row:
    """One line of a cost breakdown: the stem, a block, or the head."""

    name: str
    detail: str
    count: Count


@dataclass(frozen=True)
class Cost:
    """Per-part and total parameters and FLOPs of one genome at one resolution."""

    resolution: int
    rows: tuple[Row, ...]
    #: Totals of the inference form, for spaces whose models fold every norm into a conv or linear layer
    #: (EfficientViT's `fuse()`): published figures of such networks are of that form. None elsewhere.
    fused: Count | None = None

    @property
    def params(self) -> int:
        return sum(row.count.params for row in self.rows)

    @property
    def flops(self) -> int:
        return sum(row.count.flops for row in self.rows)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"resolution": self.resolution, "params": self.params, "flops": self.flops}
        if self.fused is not None:
            data["fused"] = {"params": self.fused.params, "flops": self.fused.flops}
        data["parts"] = [
            {"name": row.name, "detail": row.detail, "params": row.count.params, "flops": row.count.flops}
            for row in self.rows
        ]
        return data
