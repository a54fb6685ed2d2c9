"""A genome as the parts its network runs one after another (stem, blocks, head), each keyed by its shapes.

A part's key holds everything its latency depends on once the device is fixed: its layer widths and
options and the token grid it runs on. Two parts with equal keys run the same computation, so one timing
serves both, in any genome. Each kind of part knows how to build its real module from `gas.models` (the
module the network runs, not a stand-in), the shape of one input, and a few work figures (multiply-adds,
elements moved, attention problems) that the latency model regresses a kind's timings on, which is what
lets it predict a part it has never timed.

The decomposition reads the genome's fields and mirrors the model constructors (`Hiera`, `EfficientViT`);
it does not call into the search spaces, so a space can change its sampling freely.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gas.errors import GasError
from gas.genome import Genome
from gas.models import efficientvit as evit
from gas.models import hiera

#: A part's key: plain numbers and flags, so it is hashable and round-trips through JSON.
Key = tuple[int | float | bool, ...]


@dataclass(frozen=True)
class Part:
    """One stage of a network's forward pass: its kind (e.g. 'hiera.block') and the key of its shapes."""

    kind: str
    key: Key


@dataclass(frozen=True)
class PartKind:
    """What the latency model knows about one kind of part."""

    name: str
    #: Names of the key's entries, in order (for reading a cache file); "name..." takes all the rest.
    fields: tuple[str, ...]
    #: Names of the work figures `features` returns, in order; the first is always 'calls' (= 1).
    feature_names: tuple[str, ...]
    #: key → work figures of one example (one image), the regression's inputs.
    features: Callable[[Key], tuple[float, ...]]
    #: key → (the real module, the shape of one example's input without the batch axis).
    build: Callable[[Key], tuple[nn.Module, tuple[int, ...]]]


# ---- hierarchical ViTs (gas.models.hiera; the turbovit space) ------------------------------------


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
        self.norm = nn.LayerNorm(dim, eps=hiera.LAYER_NORM_EPS)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(tokens.mean(dim=1)))


def _hiera_stem_build(key: Key) -> tuple[nn.Module, tuple[int, ...]]:
    resolution, dim, kernel, stride, padding, mask_unit, pool_steps = key
    model = hiera.Hiera(
        [], dim, resolution, mask_unit, num_classes=1, stem_kernel=kernel, stem_stride=stride, stem_padding=padding
    )
    # The reordering after the stem depends on how often the network pools; with no blocks the model
    # would count none, so it is told the genome's count. Its classifier is another part's.
    model.pool_steps = pool_steps
    model.norm, model.head = nn.Identity(), nn.Identity()
    return _Features(model), (3, resolution, resolution)


def _hiera_stem_features(key: Key) -> tuple[float, ...]:
    resolution, dim, kernel, stride, padding, _, pool_steps = key
    tokens = hiera.stem_grid(resolution, kernel, stride, padding) ** 2
    conv_macs = tokens * dim * 3 * kernel * kernel
    # The position embedding's add and every reordering round read and write all tokens once.
    elements = 3 * resolution * resolution + tokens * dim * (2 + pool_steps)
    return (1.0, conv_macs, elements)


def _hiera_block_build(key: Key) -> tuple[nn.Module, tuple[int, ...]]:
    tokens, dim_in, dim, heads, mlp_ratio, windows, q_pool = key
    attention = "mask_unit" if windows > 1 else "global"
    spec = hiera.BlockSpec(dim, heads, mlp_ratio, attention, q_pool)
    return hiera.HieraBlock(dim_in, spec, windows), (tokens, dim_in)


def _hiera_block_features(key: Key) -> tuple[float, ...]:
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


def _hiera_head_build(key: Key) -> tuple[nn.Module, tuple[int, ...]]:
    tokens, dim, num_classes = key
    return _TokenHead(dim, num_classes), (tokens, dim)


def _hiera_head_features(key: Key) -> tuple[float, ...]:
    tokens, dim, num_classes = key
    return (1.0, dim * num_classes, tokens * dim)


# ---- EfficientViT (gas.models.efficientvit; the efficientvit space) ------------------------------


class _MapHead(nn.Module):
    """`EfficientViT`'s classifier on its own: mean over the map → BatchNorm → Linear."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.head = evit.BNLinear(dim, num_classes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features.mean(dim=(2, 3)))


def _evit_stem_build(key: Key) -> tuple[nn.Module, tuple[int, ...]]:
    resolution, *widths = key
    model = evit.EfficientViT(evit.StemSpec(widths=tuple(widths)), [], [], resolution, 1)
    return model.stem, (3, resolution, resolution)


def _evit_stem_features(key: Key) -> tuple[float, ...]:
    resolution, *widths = key
    side, dim_in, conv_macs, elements = resolution, 3, 0, 3 * resolution * resolution
    for width in widths:
        side = evit.halve(side)
        conv_macs += side * side * width * dim_in * 9
        elements += 3 * side * side * width  # conv out, BatchNorm, ReLU
        dim_in = width
    return (1.0, conv_macs, elements)


def _evit_block_build(key: Key) -> tuple[nn.Module, tuple[int, ...]]:
    grid, dim, heads, key_dim, window, ffn_ratio, dw_kernel, *q_kernels = key
    spec = evit.BlockSpec(
        heads=heads, key_dim=key_dim, window=window, ffn_ratio=ffn_ratio, dw_kernel=dw_kernel, q_kernels=q_kernels
    )
    return evit.SandwichBlock(dim, spec, grid), (dim, grid, grid)


def _evit_block_features(key: Key) -> tuple[float, ...]:
    grid, dim, heads, key_dim, window, ffn_ratio, dw_kernel, *q_kernels = key
    side, windows = evit.window_layout(grid, window)
    pixels, padded = grid * grid, windows * side * side
    value_dim, hidden = dim // heads, evit.hidden_width(dim, ffn_ratio)
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


def _evit_subsample_build(key: Key) -> tuple[nn.Module, tuple[int, ...]]:
    grid, dim_in, dim_out, expand_ratio, se_ratio, ffn_ratio, dw_kernel = key
    spec = evit.SubsampleSpec(expand_ratio=expand_ratio, se_ratio=se_ratio, ffn_ratio=ffn_ratio, dw_kernel=dw_kernel)
    return evit.SubsampleBlock(dim_in, dim_out, spec), (dim_in, grid, grid)


def _evit_subsample_features(key: Key) -> tuple[float, ...]:
    grid, dim_in, dim_out, expand_ratio, se_ratio, ffn_ratio, kernel = key
    pixels, out_pixels = grid * grid, evit.halve(grid) ** 2
    hidden = evit.hidden_width(dim_in, expand_ratio)
    ffn_in, ffn_out = evit.hidden_width(dim_in, ffn_ratio), evit.hidden_width(dim_out, ffn_ratio)
    dense_macs = 2 * pixels * dim_in * ffn_in + pixels * dim_in * hidden + out_pixels * hidden * dim_out
    dense_macs += 2 * out_pixels * dim_out * ffn_out
    squeeze = 0
    if se_ratio > 0:
        squeeze = 1
        dense_macs += 2 * hidden * evit.se_width(hidden, se_ratio)
    depthwise_macs = (pixels * dim_in + out_pixels * hidden + out_pixels * dim_out) * kernel * kernel
    elements = 6 * pixels * dim_in + 3 * pixels * ffn_in + 3 * pixels * hidden
    elements += 4 * out_pixels * hidden + 6 * out_pixels * dim_out + 3 * out_pixels * ffn_out
    return (1.0, dense_macs, depthwise_macs, elements, squeeze)


def _evit_head_build(key: Key) -> tuple[nn.Module, tuple[int, ...]]:
    grid, dim, num_classes = key
    return _MapHead(dim, num_classes), (dim, grid, grid)


def _evit_head_features(key: Key) -> tuple[float, ...]:
    grid, dim, num_classes = key
    return (1.0, dim * num_classes, grid * grid * dim)


_CONV = ("calls", "conv_macs", "elements")
_HEAD = ("calls", "dense_macs", "elements")

KINDS: dict[str, PartKind] = {
    kind.name: kind
    for kind in (
        PartKind(
            "hiera.stem",
            ("resolution", "dim", "kernel", "stride", "padding", "mask_unit", "pool_steps"),
            _CONV,
            _hiera_stem_features,
            _hiera_stem_build,
        ),
        PartKind(
            "hiera.block",
            ("tokens", "dim_in", "dim", "heads", "mlp_ratio", "windows", "q_pool"),
            ("calls", "dense_macs", "attention_macs", "scores", "elements", "attention_groups"),
            _hiera_block_features,
            _hiera_block_build,
        ),
        PartKind("hiera.head", ("tokens", "dim", "num_classes"), _HEAD, _hiera_head_features, _hiera_head_build),
        PartKind(
            "efficientvit.stem", ("resolution", "w0", "w1", "w2", "w3"), _CONV, _evit_stem_features, _evit_stem_build
        ),
        PartKind(
            "efficientvit.block",
            ("grid", "dim", "heads", "key_dim", "window", "ffn_ratio", "dw_kernel", "q_kernels..."),
            ("calls", "dense_macs", "depthwise_macs", "attention_macs", "scores", "elements", "heads"),
            _evit_block_features,
            _evit_block_build,
        ),
        PartKind(
            "efficientvit.subsample",
            ("grid", "dim_in", "dim_out", "expand_ratio", "se_ratio", "ffn_ratio", "dw_kernel"),
            ("calls", "dense_macs", "depthwise_macs", "elements", "squeeze_excite"),
            _evit_subsample_features,
            _evit_subsample_build,
        ),
        PartKind("efficientvit.head", ("grid", "dim", "num_classes"), _HEAD, _evit_head_features, _evit_head_build),
    )
}


# ---- genomes → parts ------------------------------------------------------------------------------


def _hiera_parts(genome: Any) -> list[Part]:
    """Mirrors `Hiera.__init__`: the stem, one part per block on the token count it receives, the head."""
    stem = genome.stem
    grid = hiera.stem_grid(genome.resolution, stem.kernel, stem.stride, stem.padding)
    pool_steps = sum(block.q_pool for block in genome.blocks)
    parts = [
        Part(
            "hiera.stem",
            (genome.resolution, stem.dim, stem.kernel, stem.stride, stem.padding, genome.mask_unit, pool_steps),
        )
    ]
    mask_units = (grid // genome.mask_unit) ** 2
    tokens, dim = grid * grid, stem.dim
    for block in genome.blocks:
        windows = mask_units if block.attention == "mask_unit" else 1
        key = (tokens, dim, block.dim, block.heads, float(block.mlp_ratio), windows, bool(block.q_pool))
        parts.append(Part("hiera.block", key))
        tokens, dim = (tokens // 4 if block.q_pool else tokens), block.dim
    parts.append(Part("hiera.head", (tokens, dim, genome.num_classes)))
    return parts


def _efficientvit_parts(genome: Any) -> list[Part]:
    """Mirrors `EfficientViT.__init__`: the stem, each stage's subsample block and blocks, the head."""
    parts = [Part("efficientvit.stem", (genome.resolution, *genome.stem.widths))]
    grid, dim = evit.stem_grid(genome.resolution), genome.stem.widths[-1]
    for index, stage in enumerate(genome.stages):
        if index:
            spec = genome.subsamples[index - 1]
            key = (grid, dim, stage.dim, float(spec.expand_ratio), float(spec.se_ratio), float(spec.ffn_ratio))
            parts.append(Part("efficientvit.subsample", (*key, spec.dw_kernel)))
            grid = evit.halve(grid)
        dim = stage.dim
        for block in stage.blocks:
            # A window at least as large as the grid is the grid itself: one key for all such windows.
            window = min(block.window, grid)
            key = (grid, dim, block.heads, block.key_dim, window, float(block.ffn_ratio))
            # One query kernel per head, last: the key's length follows the head count.
            parts.append(Part("efficientvit.block", (*key, block.dw_kernel, *block.q_kernels)))
    parts.append(Part("efficientvit.head", (grid, dim, genome.num_classes)))
    return parts


_FAMILIES: dict[str, Callable[[Any], list[Part]]] = {"turbovit": _hiera_parts, "efficientvit": _efficientvit_parts}


def family(genome: Genome) -> str:
    """The space a genome belongs to, without options ('turbovit:q_pools=2' → 'turbovit')."""
    return genome.space.partition(":")[0]


def decompose(genome: Genome) -> list[Part]:
    """The parts `genome`'s network runs, in order; GasError for a space the latency model does not know.

    >>> from gas.space import load_genome
    >>> [part.kind for part in decompose(load_genome("hiera_tiny"))][:2]
    ['hiera.stem', 'hiera.block']
    """
    parts_of = _FAMILIES.get(family(genome))
    if parts_of is None:
        known = ", ".join(sorted(_FAMILIES))
        raise GasError(f"the latency model does not know the {genome.space} space's networks; it knows {known}")
    return parts_of(genome)


def features(part: Part) -> tuple[float, ...]:
    """The work figures of one example of `part`, in its kind's `feature_names` order."""
    return KINDS[part.kind].features(part.key)


def build(part: Part) -> tuple[nn.Module, tuple[int, ...]]:
    """The real module of `part` and the shape of one example's input."""
    return KINDS[part.kind].build(part.key)
