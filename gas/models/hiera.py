"""Hierarchical vision transformers with mask unit attention and Q-pooling, built from a block list.

This module imports only torch and the standard library, so `gas export` can copy it verbatim into a
standalone file. Every block is described by plain data (a `BlockSpec`), which is what lets a search give
each block its own width, heads, MLP ratio, attention kind and pooling.

The one trick, as in Hiera: tokens are reordered once after the stem (`unroll`) so that every 2x2 Q-pool
is a reshape + max over the slowest axis, and every mask unit is a strided slice with the window index
as the fastest axis. No gather or scatter is ever needed; features are not in raster order in between.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

LAYER_NORM_EPS = 1e-6


@dataclass(frozen=True)
class BlockSpec:
    """One transformer block: output width, heads, MLP ratio, attention kind and whether it Q-pools."""

    dim: int
    heads: int
    mlp_ratio: float
    attention: Literal["mask_unit", "global"]
    q_pool: bool


def stem_grid(resolution: int, kernel: int, stride: int, padding: int) -> int:
    """Side of the token grid the conv stem produces."""
    return (resolution + 2 * padding - kernel) // stride + 1


def unroll(x: torch.Tensor, grid: int, pool_steps: int, mask_unit: int) -> torch.Tensor:
    """Reorder raster tokens [B, grid*grid, C] so pooling and mask units become plain reshapes.

    Each of the `pool_steps` rounds moves the 2x2 offsets within a cell to the slowest axis, so the
    next Q-pool is a max over the slowest 4-way split. When a mask unit spans more than the grid left
    after those rounds, one last round moves the offset inside the unit ahead of the unit's position,
    which leaves the mask-unit index as the fastest axis everywhere. A grid the rounds do not divide is
    refused (ValueError) rather than reshaped across images.
    """
    batch, tokens, channels = x.shape
    strides = [2] * pool_steps
    leftover = mask_unit // 2**pool_steps
    if leftover > 1:
        strides.append(leftover)
    if tokens != grid * grid or grid % math.prod(strides):
        raise ValueError(f"cannot unroll {tokens} tokens as a {grid}x{grid} grid split by {strides} per side")
    size, lead = grid, batch
    x = x.reshape(lead, size, size, channels)
    for stride in strides:
        size //= stride
        # Sizes are spelled out, never -1: a wrong one must fail here, not move tokens between images.
        x = x.reshape(lead, size, stride, size, stride, channels).permute(0, 2, 4, 1, 3, 5)
        lead = lead * stride * stride  # not *=: under tracing, `lead` starts as the batch tensor itself
        x = x.reshape(lead, size, size, channels)
    # The leading axis is now (batch, offsets of the first round, ..., offsets of the last round).
    return x.reshape(batch, tokens, channels)


def q_pool(x: torch.Tensor) -> torch.Tensor:
    """2x2 max-pool of unrolled tokens [..., N, C]: a max over the slowest 4-way split of N."""
    return x.reshape(*x.shape[:-2], 4, x.shape[-2] // 4, x.shape[-1]).amax(dim=-3)


class MaskUnitAttention(nn.Module):
    """Multi-head attention inside mask units (or over all tokens), with queries optionally Q-pooled.

    Keys and values keep every token; only the queries are max-pooled 2x2, which is how the block
    halves the grid without a separate downsampling layer.
    """

    def __init__(self, dim: int, dim_out: int, heads: int, windows: int, pool: bool) -> None:
        super().__init__()
        self.heads = heads
        self.windows = windows
        self.pool = pool
        self.qkv = nn.Linear(dim, 3 * dim_out)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        # Window index is the fastest axis after unroll, so windows are a reshape away. They are folded into
        # the batch: scaled_dot_product_attention runs its fused kernels on 4-D inputs only.
        qkv = self.qkv(x).reshape(batch, tokens // self.windows, self.windows, 3, self.heads, -1)
        qkv = qkv.permute(3, 0, 2, 4, 1, 5).reshape(3, batch * self.windows, self.heads, tokens // self.windows, -1)
        q, k, v = qkv.unbind(0)  # each [B * windows, heads, T, head_dim]
        if self.pool:
            q = q_pool(q)
        x = F.scaled_dot_product_attention(q, k, v)
        x = x.reshape(batch, self.windows, self.heads, x.shape[-2], x.shape[-1])
        x = x.permute(0, 3, 1, 2, 4).reshape(batch, -1, self.heads * x.shape[-1])
        return self.proj(x)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class HieraBlock(nn.Module):
    """Pre-norm transformer block; a width change projects the shortcut, a Q-pool pools it."""

    def __init__(self, dim: int, spec: BlockSpec, windows: int) -> None:
        super().__init__()
        self.pool = spec.q_pool
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = MaskUnitAttention(dim, spec.dim, spec.heads, windows, spec.q_pool)
        self.norm2 = nn.LayerNorm(spec.dim, eps=LAYER_NORM_EPS)
        self.mlp = Mlp(spec.dim, int(spec.dim * spec.mlp_ratio))
        self.proj = nn.Linear(dim, spec.dim) if dim != spec.dim else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_norm = self.norm1(x)
        shortcut = x if self.proj is None else self.proj(x_norm)
        if self.pool:
            shortcut = q_pool(shortcut)
        x = shortcut + self.attn(x_norm)
        return x + self.mlp(self.norm2(x))


class Hiera(nn.Module):
    """Conv stem → learned position embedding → unroll → blocks → mean → LayerNorm → Linear."""

    def __init__(
        self,
        blocks: list[BlockSpec],
        embed_dim: int,
        resolution: int,
        mask_unit: int,
        num_classes: int = 1000,
        stem_kernel: int = 7,
        stem_stride: int = 4,
        stem_padding: int = 3,
    ) -> None:
        super().__init__()
        self.grid = stem_grid(resolution, stem_kernel, stem_stride, stem_padding)
        self.pool_steps = sum(spec.q_pool for spec in blocks)
        self.mask_unit = mask_unit
        # Only mask-unit attention needs each unit contiguous. A network of global blocks alone unrolls for
        # its pools only, so a mask unit that does not divide the grid (unused there) cannot break it.
        uses_mask_units = any(spec.attention == "mask_unit" for spec in blocks)
        self.unroll_unit = mask_unit if uses_mask_units else 1
        self.patch_embed = nn.Conv2d(3, embed_dim, stem_kernel, stem_stride, stem_padding)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid * self.grid, embed_dim))
        # Mask units cover fixed image regions, so their count is the same in every block.
        mask_units = (self.grid // mask_unit) ** 2
        layers, dim = [], embed_dim
        for spec in blocks:
            layers.append(HieraBlock(dim, spec, mask_units if spec.attention == "mask_unit" else 1))
            dim = spec.dim
        self.blocks = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.head = nn.Linear(dim, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def no_weight_decay(self) -> set[str]:
        """Parameters a trainer should not decay (Hiera's official recipe: the position embedding)."""
        return {"pos_embed"}

    def position_embeddings(self) -> set[str]:
        """Parameters that hold absolute position, for trainers that give them their own learning rate."""
        return {"pos_embed"}

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """Tokens after the last block, [B, N, C], in unrolled (not raster) order."""
        x = self.patch_embed(images).flatten(2).transpose(1, 2) + self.pos_embed
        x = unroll(x, self.grid, self.pool_steps, self.unroll_unit)
        return self.blocks(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # Token order does not matter to a mean, so the classifier never re-rolls to raster order.
        return self.head(self.norm(self.forward_features(images).mean(dim=1)))
