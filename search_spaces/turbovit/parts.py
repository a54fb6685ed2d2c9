"""The parts of a TurboViT network the latency model times: one kind per stage of `Hiera`'s forward pass.

Each kind builds its real module from `gas.models.hiera` (the stem, a block on the token count it
receives, the classifier) and states the work figures its timings are regressed on; the space's
`parts` places them along a genome as `Hiera.__init__` places its layers.
"""

from __future__ import annotations

import torch
from torch import nn

from gas.models.hiera import LAYER_NORM_EPS, BlockSpec, Hiera, HieraBlock, stem_grid
from gas.space import Key, PartKind


class _Features(nn.Module):
    """Runs a model's `forward_features` only: the stem of a network built with no blocks."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(images)


class _TokenHead(nn.Module):
    """`Hiera`'s classifier on its own: mean over tokens → LayerNorm → Linear (as `Hiera.forward` ends)."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(tokens.mean(dim=1)))


def _stem_build(key: Key) -> tuple[nn.Module, tuple[int, ...]]:
    resolution, dim, kernel, stride, padding, mask_unit, pool_steps = key
    model = Hiera(
        [], dim, resolution, mask_unit, num_classes=1, stem_kernel=kernel, stem_stride=stride, stem_padding=padding
    )
    # The reordering after the stem depends on how often the network pools; with no blocks the model
    # would count none, so it is told the genome's count. Its classifier is another part's.
    model.pool_steps = pool_steps
    model.norm, model.head = nn.Identity(), nn.Identity()
    return _Features(model), (3, resolution, resolution)


def _stem_features(key: Key) -> tuple[float, ...]:
    resolution, dim, kernel, stride, padding, _, pool_steps = key
    tokens = stem_grid(resolution, kernel, stride, padding) ** 2
    conv_macs = tokens * dim * 3 * kernel * kernel
    # The position embedding's add and every reordering round read and write all tokens once.
    elements = 3 * resolution * resolution + tokens * dim * (2 + pool_steps)
    return (1.0, conv_macs, elements)


def _block_build(key: Key) -> tuple[nn.Module, tuple[int, ...]]:
    tokens, dim_in, dim, heads, mlp_ratio, windows, q_pool = key
    attention = "mask_unit" if windows > 1 else "global"
    spec = BlockSpec(dim, heads, mlp_ratio, attention, q_pool)
    return HieraBlock(dim_in, spec, windows), (tokens, dim_in)


def _block_features(key: Key) -> tuple[float, ...]:
    tokens, dim_in, dim, heads, mlp_ratio, windows, q_pool = key
    queries = tokens // 4 if q_pool else tokens
    hidden = int(dim * mlp_ratio)
    keys_per_window = tokens // windows
    dense_macs = tokens * dim_in * 3 * dim + queries * dim * dim + 2 * queries * dim * hidden
    if dim_in != dim:
        dense_macs += tokens * dim_in * dim
    attention_macs = 2 * queries * keys_per_window * dim
    scores = heads * queries * keys_per_window
    # Activations written and read again by the memory-bound ops between the matmuls: norms, the qkv
    # split and permutes, residual adds, GELU, the pooled shortcut.
    elements = 2 * tokens * dim_in + 6 * tokens * dim + 6 * queries * dim + 3 * queries * hidden
    return (1.0, dense_macs, attention_macs, scores, elements, heads * windows)


def _head_build(key: Key) -> tuple[nn.Module, tuple[int, ...]]:
    tokens, dim, num_classes = key
    return _TokenHead(dim, num_classes), (tokens, dim)


def _head_features(key: Key) -> tuple[float, ...]:
    tokens, dim, num_classes = key
    return (1.0, dim * num_classes, tokens * dim)


STEM = PartKind(
    "hiera.stem",
    ("resolution", "dim", "kernel", "stride", "padding", "mask_unit", "pool_steps"),
    ("calls", "conv_macs", "elements"),
    _stem_features,
    _stem_build,
)
BLOCK = PartKind(
    "hiera.block",
    ("tokens", "dim_in", "dim", "heads", "mlp_ratio", "windows", "q_pool"),
    ("calls", "dense_macs", "attention_macs", "scores", "elements", "attention_groups"),
    _block_features,
    _block_build,
)
HEAD = PartKind(
    "hiera.head", ("tokens", "dim", "num_classes"), ("calls", "dense_macs", "elements"), _head_features, _head_build
)
