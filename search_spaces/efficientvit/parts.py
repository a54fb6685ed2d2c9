"""The parts of an EfficientViT network the latency model times: one kind per stage of its forward pass.

Each kind builds its real module from `gas.models.efficientvit` (the stem, a subsample block, a sandwich
block on its grid, the classifier) and states the work figures its timings are regressed on; the space's
`parts` places them along a genome as `EfficientViT.__init__` places its layers.
"""

from __future__ import annotations

import torch
from torch import nn

from gas.models.efficientvit import (
    BlockSpec,
    BNLinear,
    EfficientViT,
    SandwichBlock,
    StemSpec,
    SubsampleBlock,
    SubsampleSpec,
    halve,
    hidden_width,
    se_width,
    window_layout,
)
from gas.space import Key, PartKind


class _MapHead(nn.Module):
    """`EfficientViT`'s classifier on its own: mean over the map → BatchNorm → Linear."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.head = BNLinear(dim, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features.mean(dim=(2, 3)))


def _stem_build(key: Key) -> tuple[nn.Module, tuple[int, ...]]:
    resolution, *widths = key
    model = EfficientViT(StemSpec(widths=tuple(widths)), [], [], resolution, 1)
    return model.stem, (3, resolution, resolution)


def _stem_features(key: Key) -> tuple[float, ...]:
    resolution, *widths = key
    side, dim_in, conv_macs, elements = resolution, 3, 0, 3 * resolution * resolution
    for width in widths:
        side = halve(side)
        conv_macs += side * side * width * dim_in * 9
        elements += 3 * side * side * width  # conv out, BatchNorm, ReLU
        dim_in = width
    return (1.0, conv_macs, elements)


def _block_build(key: Key) -> tuple[nn.Module, tuple[int, ...]]:
    grid, dim, heads, key_dim, window, ffn_ratio, dw_kernel, *q_kernels = key
    spec = BlockSpec(
        heads=heads, key_dim=key_dim, window=window, ffn_ratio=ffn_ratio, dw_kernel=dw_kernel, q_kernels=q_kernels
    )
    return SandwichBlock(dim, spec, grid), (dim, grid, grid)


def _block_features(key: Key) -> tuple[float, ...]:
    grid, dim, heads, key_dim, window, ffn_ratio, dw_kernel, *q_kernels = key
    side, windows = window_layout(grid, window)
    pixels, padded = grid * grid, windows * side * side
    value_dim, hidden = dim // heads, hidden_width(dim, ffn_ratio)
    dense_macs = 4 * pixels * dim * hidden + padded * dim * (2 * key_dim + value_dim) + padded * heads * value_dim * dim
    depthwise_macs = 2 * pixels * dim * dw_kernel * dw_kernel + padded * key_dim * sum(
        kernel * kernel for kernel in q_kernels
    )
    attention_macs = heads * padded * side * side * (key_dim + value_dim)
    scores = heads * padded * side * side
    # BatchNorms, ReLUs and residual adds on the map; the cascade's per-head splits, sums and concatenation.
    elements = 12 * pixels * dim + 4 * pixels * hidden + 4 * padded * dim + 2 * heads * padded * (2 * key_dim)
    # Each head runs its own short chain of small ops (the cascade), so the op count grows with heads.
    return (1.0, dense_macs, depthwise_macs, attention_macs, scores, elements, heads)


def _subsample_build(key: Key) -> tuple[nn.Module, tuple[int, ...]]:
    grid, dim_in, dim_out, expand_ratio, se_ratio, ffn_ratio, dw_kernel = key
    spec = SubsampleSpec(expand_ratio=expand_ratio, se_ratio=se_ratio, ffn_ratio=ffn_ratio, dw_kernel=dw_kernel)
    return SubsampleBlock(dim_in, dim_out, spec), (dim_in, grid, grid)


def _subsample_features(key: Key) -> tuple[float, ...]:
    grid, dim_in, dim_out, expand_ratio, se_ratio, ffn_ratio, kernel = key
    pixels, out_pixels = grid * grid, halve(grid) ** 2
    hidden = hidden_width(dim_in, expand_ratio)
    ffn_in, ffn_out = hidden_width(dim_in, ffn_ratio), hidden_width(dim_out, ffn_ratio)
    dense_macs = 2 * pixels * dim_in * ffn_in + pixels * dim_in * hidden + out_pixels * hidden * dim_out
    dense_macs += 2 * out_pixels * dim_out * ffn_out
    squeeze = 0
    if se_ratio > 0:
        squeeze = 1
        dense_macs += 2 * hidden * se_width(hidden, se_ratio)
    depthwise_macs = (pixels * dim_in + out_pixels * hidden + out_pixels * dim_out) * kernel * kernel
    elements = 6 * pixels * dim_in + 3 * pixels * ffn_in + 3 * pixels * hidden
    elements += 4 * out_pixels * hidden + 6 * out_pixels * dim_out + 3 * out_pixels * ffn_out
    return (1.0, dense_macs, depthwise_macs, elements, squeeze)


def _head_build(key: Key) -> tuple[nn.Module, tuple[int, ...]]:
    grid, dim, num_classes = key
    return _MapHead(dim, num_classes), (dim, grid, grid)


def _head_features(key: Key) -> tuple[float, ...]:
    grid, dim, num_classes = key
    return (1.0, dim * num_classes, grid * grid * dim)


STEM = PartKind(
    "efficientvit.stem",
    ("resolution", "w0", "w1", "w2", "w3"),
    ("calls", "conv_macs", "elements"),
    _stem_features,
    _stem_build,
)
BLOCK = PartKind(
    "efficientvit.block",
    ("grid", "dim", "heads", "key_dim", "window", "ffn_ratio", "dw_kernel", "q_kernels..."),
    ("calls", "dense_macs", "depthwise_macs", "attention_macs", "scores", "elements", "heads"),
    _block_features,
    _block_build,
)
SUBSAMPLE = PartKind(
    "efficientvit.subsample",
    ("grid", "dim_in", "dim_out", "expand_ratio", "se_ratio", "ffn_ratio", "dw_kernel"),
    ("calls", "dense_macs", "depthwise_macs", "elements", "squeeze_excite"),
    _subsample_features,
    _subsample_build,
)
HEAD = PartKind(
    "efficientvit.head",
    ("grid", "dim", "num_classes"),
    ("calls", "dense_macs", "elements"),
    _head_features,
    _head_build,
)
