"""EfficientViT (MSRA, arXiv 2305.07027): sandwich blocks and cascaded group attention, built from plain specs.

This module imports only torch and the standard library, so `gas export` can copy it verbatim into a
standalone file. A network is a stride-16 conv stem, stages of sandwich blocks (token-interaction DWConv →
FFN → attention → DWConv → FFN, each residual) joined by subsample blocks, and a BatchNorm + Linear head.
Every norm is a BatchNorm that sits right before or after a conv or linear layer, which is what lets
`EfficientViT.fuse()` fold them all away for inference.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

STEM_CONVS = 4  # 3x3 stride-2 convs: a total stride of 16


@dataclass(frozen=True, kw_only=True)
class BlockSpec:
    """One sandwich block: attention heads, query/key width, window side, FFN ratio and conv kernels.

    Values are `dim // heads` wide per head, so heads must divide the stage's width. `dw_kernel` is the
    depthwise token-interaction conv before each FFN; `q_kernels` holds one kernel per head for the
    depthwise conv on that head's queries (EfficientViT-M1/M2/M4/M5 give their heads 7, 5, 3, 3).
    """

    heads: int
    key_dim: int = 16
    window: int = 7
    ffn_ratio: float = 2.0
    dw_kernel: int = 3
    q_kernels: tuple[int, ...]

    def __post_init__(self) -> None:
        # Rows of an exported table may hold a list here; a tuple keeps the frozen spec hashable.
        object.__setattr__(self, "q_kernels", tuple(self.q_kernels))


@dataclass(frozen=True, kw_only=True)
class StageSpec:
    """A run of sandwich blocks at one width and one token grid."""

    dim: int
    blocks: tuple[BlockSpec, ...]

    item_names: ClassVar[Mapping[str, str]] = {"blocks": "block"}


@dataclass(frozen=True, kw_only=True)
class SubsampleSpec:
    """The block between two stages: DWConv + FFN, a stride-2 inverted residual, DWConv + FFN.

    `expand_ratio` widens the inverted residual, `se_ratio` sizes its squeeze-excite (0 leaves it out),
    `ffn_ratio` sizes both FFNs and `dw_kernel` is the kernel of all three depthwise convs.
    """

    expand_ratio: float = 4.0
    se_ratio: float = 0.25
    ffn_ratio: float = 2.0
    dw_kernel: int = 3


@dataclass(frozen=True, kw_only=True)
class StemSpec:
    """Output widths of the four 3x3 stride-2 convs; the last is the first stage's width."""

    widths: tuple[int, ...]


def from_row(spec_type: type, row: Sequence) -> object:
    """A spec from its field values in declaration order: how the tables of an exported file become specs."""
    return spec_type(**{field.name: value for field, value in zip(fields(spec_type), row, strict=True)})


def stages_from_table(dims: Sequence[int], blocks: Sequence[Sequence]) -> list[StageSpec]:
    """Stage specs from their widths and a table of blocks, one row per block: (stage index, *BlockSpec fields)."""
    return [
        StageSpec(dim=dim, blocks=tuple(from_row(BlockSpec, row[1:]) for row in blocks if row[0] == index))
        for index, dim in enumerate(dims)
    ]


def halve(side: int) -> int:
    """Grid side after a stride-2 conv with 'same' padding (odd kernel, padding kernel // 2)."""
    return (side - 1) // 2 + 1


def stem_grid(resolution: int) -> int:
    """Side of the token grid after the stride-16 stem."""
    for _ in range(STEM_CONVS):
        resolution = halve(resolution)
    return resolution


def hidden_width(dim: int, ratio: float) -> int:
    """Width of an FFN or inverted residual; one rule everywhere so builder and cost model agree."""
    return int(dim * ratio)


def se_width(channels: int, ratio: float) -> int:
    """Squeeze-excite bottleneck: `channels * ratio` rounded to a multiple of 8, at least 8."""
    return max(8, int(channels * ratio + 4) // 8 * 8)


def window_layout(grid: int, window: int) -> tuple[int, int]:
    """(side, count) of the attention windows on a `grid`x`grid` map, padding it to whole windows.

    A grid no larger than the window is attended as one window of the grid's own size.
    """
    side = min(window, grid)
    return side, math.ceil(grid / side) ** 2


class ConvBN(nn.Sequential):
    """Conv (no bias) followed by BatchNorm; `bn_weight=0` starts a residual branch at zero."""

    def __init__(
        self, dim_in: int, dim_out: int, kernel: int = 1, stride: int = 1, groups: int = 1, bn_weight: float = 1.0
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim_in, dim_out, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(dim_out)
        nn.init.constant_(self.bn.weight, bn_weight)
        nn.init.zeros_(self.bn.bias)

    @torch.no_grad()
    def fused(self) -> nn.Conv2d:
        """One conv with a bias computing what conv → BatchNorm computes in eval mode."""
        conv, bn = self.conv, self.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        fused = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            groups=conv.groups,
            bias=True,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        )
        fused.weight.copy_(conv.weight * scale[:, None, None, None])
        fused.bias.copy_(bn.bias - bn.running_mean * scale)
        return fused


class BNLinear(nn.Sequential):
    """BatchNorm followed by Linear: the classifier head."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(dim_in)
        self.linear = nn.Linear(dim_in, dim_out)
        nn.init.trunc_normal_(self.linear.weight, std=0.02)
        nn.init.zeros_(self.linear.bias)

    @torch.no_grad()
    def fused(self) -> nn.Linear:
        """One linear layer computing what BatchNorm → Linear computes in eval mode."""
        bn, linear = self.bn, self.linear
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        shift = bn.bias - bn.running_mean * scale
        fused = nn.Linear(
            linear.in_features, linear.out_features, device=linear.weight.device, dtype=linear.weight.dtype
        )
        fused.weight.copy_(linear.weight * scale[None, :])
        fused.bias.copy_(linear.weight @ shift + linear.bias)
        return fused


class FFN(nn.Module):
    """Pointwise conv → ReLU → pointwise conv; the second norm starts at zero so the residual is identity."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.expand = ConvBN(dim, hidden)
        self.act = nn.ReLU()
        self.project = ConvBN(hidden, dim, bn_weight=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.act(self.expand(x)))


def relative_position_index(side: int) -> torch.Tensor:
    """[side², side²] index into a per-head table of side² biases, one per (|dy|, |dx|) offset."""
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()
    return (rows[:, None] - rows[None, :]).abs() * side + (cols[:, None] - cols[None, :]).abs()


class CascadedGroupAttention(nn.Module):
    """Attention over one window, [B, C, side, side] → same shape, with each head on its own channel split.

    Head i sees split i plus the output of head i-1 (the cascade), so later heads refine earlier ones while
    each projection is only C/heads wide. Head i's queries pass a depthwise conv of kernel `q_kernels[i]`;
    scores get a learned bias per (|dy|, |dx|) offset. Attention is written as explicit matmuls, which
    fvcore counts as they are.
    """

    def __init__(self, dim: int, heads: int, key_dim: int, q_kernels: Sequence[int], side: int) -> None:
        super().__init__()
        if len(q_kernels) != heads:
            raise ValueError(f"{heads} heads need one query kernel each, got {list(q_kernels)}")
        self.heads = heads
        self.key_dim = key_dim
        self.value_dim = dim // heads
        self.scale = key_dim**-0.5
        self.qkvs = nn.ModuleList(ConvBN(dim // heads, 2 * key_dim + self.value_dim) for _ in range(heads))
        self.q_convs = nn.ModuleList(ConvBN(key_dim, key_dim, kernel, groups=key_dim) for kernel in q_kernels)
        self.act = nn.ReLU()
        self.proj = ConvBN(self.value_dim * heads, dim, bn_weight=0.0)
        self.attention_biases = nn.Parameter(torch.zeros(heads, side * side))
        # Derived from `side` alone, so it is rebuilt rather than saved with the weights.
        self.register_buffer("bias_index", relative_position_index(side), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        biases = self.attention_biases[:, self.bias_index]  # [heads, N, N]
        splits = x.chunk(self.heads, dim=1)
        outputs = []
        feature = splits[0]
        for head, (qkv, q_conv) in enumerate(zip(self.qkvs, self.q_convs, strict=True)):
            if head > 0:
                feature = feature + splits[head]
            q, k, v = qkv(feature).split([self.key_dim, self.key_dim, self.value_dim], dim=1)
            q = q_conv(q)
            q, k, v = q.flatten(2), k.flatten(2), v.flatten(2)  # [B, width, N]
            scores = (q.transpose(-2, -1) @ k) * self.scale + biases[head]
            attention = scores.softmax(dim=-1)
            feature = (v @ attention.transpose(-2, -1)).reshape(batch, self.value_dim, height, width)
            outputs.append(feature)
        return self.proj(self.act(torch.cat(outputs, dim=1)))


class WindowAttention(nn.Module):
    """Cascaded group attention inside non-overlapping windows; the map is zero-padded to whole windows."""

    def __init__(self, dim: int, spec: BlockSpec, grid: int) -> None:
        super().__init__()
        self.side, _ = window_layout(grid, spec.window)
        self.attn = CascadedGroupAttention(dim, spec.heads, spec.key_dim, spec.q_kernels, self.side)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        side = self.side
        if height <= side and width <= side:
            return self.attn(x)
        pad_bottom, pad_right = -height % side, -width % side
        x = F.pad(x, (0, pad_right, 0, pad_bottom))
        rows, cols = (height + pad_bottom) // side, (width + pad_right) // side
        windows = x.reshape(batch, channels, rows, side, cols, side).permute(0, 2, 4, 1, 3, 5)
        windows = self.attn(windows.reshape(batch * rows * cols, channels, side, side))
        x = windows.reshape(batch, rows, cols, channels, side, side).permute(0, 3, 1, 4, 2, 5)
        x = x.reshape(batch, channels, rows * side, cols * side)
        return x[:, :, :height, :width].contiguous()


class SandwichBlock(nn.Module):
    """DWConv → FFN → window attention → DWConv → FFN, each a residual: one memory-bound attention per block."""

    def __init__(self, dim: int, spec: BlockSpec, grid: int) -> None:
        super().__init__()
        hidden = hidden_width(dim, spec.ffn_ratio)
        self.token0 = ConvBN(dim, dim, spec.dw_kernel, groups=dim, bn_weight=0.0)
        self.ffn0 = FFN(dim, hidden)
        self.attn = WindowAttention(dim, spec, grid)
        self.token1 = ConvBN(dim, dim, spec.dw_kernel, groups=dim, bn_weight=0.0)
        self.ffn1 = FFN(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.token0(x)
        x = x + self.ffn0(x)
        x = x + self.attn(x)
        x = x + self.token1(x)
        return x + self.ffn1(x)


class SqueezeExcite(nn.Module):
    """Channel gates from the mean over the map: 1x1 conv → ReLU → 1x1 conv → sigmoid."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, 1)
        self.act = nn.ReLU()
        self.expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gates = self.expand(self.act(self.reduce(x.mean(dim=(2, 3), keepdim=True))))
        return x * gates.sigmoid()


class PatchMerging(nn.Module):
    """Inverted residual that halves the grid: 1x1 expand → ReLU → stride-2 DWConv → ReLU → SE → 1x1 project."""

    def __init__(self, dim_in: int, dim_out: int, spec: SubsampleSpec) -> None:
        super().__init__()
        hidden = hidden_width(dim_in, spec.expand_ratio)
        self.expand = ConvBN(dim_in, hidden)
        self.act = nn.ReLU()
        self.down = ConvBN(hidden, hidden, spec.dw_kernel, stride=2, groups=hidden)
        self.se = SqueezeExcite(hidden, se_width(hidden, spec.se_ratio)) if spec.se_ratio > 0 else nn.Identity()
        self.project = ConvBN(hidden, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.se(self.act(self.down(self.act(self.expand(x))))))


class SubsampleBlock(nn.Module):
    """Sandwich layout with the attention replaced by a stride-2 inverted residual, which loses less on the way down."""

    def __init__(self, dim_in: int, dim_out: int, spec: SubsampleSpec) -> None:
        super().__init__()
        kernel = spec.dw_kernel
        self.token0 = ConvBN(dim_in, dim_in, kernel, groups=dim_in)
        self.ffn0 = FFN(dim_in, hidden_width(dim_in, spec.ffn_ratio))
        self.merge = PatchMerging(dim_in, dim_out, spec)
        self.token1 = ConvBN(dim_out, dim_out, kernel, groups=dim_out)
        self.ffn1 = FFN(dim_out, hidden_width(dim_out, spec.ffn_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.token0(x)
        x = x + self.ffn0(x)
        x = self.merge(x)
        x = x + self.token1(x)
        return x + self.ffn1(x)


class Stage(nn.Module):
    """An optional subsample block (every stage but the first) and a run of sandwich blocks."""

    def __init__(self, subsample: SubsampleBlock | None, blocks: list[SandwichBlock]) -> None:
        super().__init__()
        self.subsample = subsample
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.subsample is not None:
            x = self.subsample(x)
        return self.blocks(x)


class EfficientViT(nn.Module):
    """Stride-16 conv stem → stages (subsample blocks between them) → mean over the map → BatchNorm → Linear.

    Attention windows and bias tables are sized for `resolution`, so a model runs at the resolution it
    was built for.
    """

    def __init__(
        self,
        stem: StemSpec,
        stages: Sequence[StageSpec],
        subsamples: Sequence[SubsampleSpec],
        resolution: int,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        dim = 3
        for index, width in enumerate(stem.widths):
            if index:
                layers.append(nn.ReLU())
            layers.append(ConvBN(dim, width, 3, stride=2))
            dim = width
        self.stem = nn.Sequential(*layers)
        grid = stem_grid(resolution)
        built = []
        for index, stage in enumerate(stages):
            subsample = None
            if index:
                subsample = SubsampleBlock(dim, stage.dim, subsamples[index - 1])
                grid = halve(grid)
            built.append(Stage(subsample, [SandwichBlock(stage.dim, spec, grid) for spec in stage.blocks]))
            dim = stage.dim
        self.stages = nn.Sequential(*built)
        self.head = BNLinear(dim, num_classes)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """The last stage's feature map, [B, C, side, side]."""
        return self.stages(self.stem(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(images).mean(dim=(2, 3)))

    def no_weight_decay(self) -> set[str]:
        """Parameters a trainer should not decay: the attention's relative-position biases (as Cream's recipe)."""
        return {name for name, _ in self.named_parameters() if name.endswith("attention_biases")}

    def position_embeddings(self) -> set[str]:
        """No absolute position embedding: position enters through the convolutions and attention biases."""
        return set()

    def fuse(self) -> EfficientViT:
        """Fold every BatchNorm into its conv or linear layer, in place, and switch to eval mode.

        The outputs stay the same (to float rounding); the model is for inference from then on.
        """
        _fuse_children(self)
        return self.eval()


def _fuse_children(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, ConvBN | BNLinear):
            setattr(module, name, child.fused())
        else:
            _fuse_children(child)
