"""The EfficientViT cost model: params and FLOPs of each module of gas.models.efficientvit, analytically."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gas import cost as count
from gas.models.efficientvit import BlockSpec, SubsampleSpec, halve, hidden_width, se_width, stem_grid, window_layout

if TYPE_CHECKING:
    from search_spaces.efficientvit.genome import EfficientViTGenome

# Each takes `fused`: with it, a conv and its BatchNorm count as one conv with a bias, as after `fuse()`.


def rows(genome: EfficientViTGenome, fused: bool) -> list[count.Row]:
    side, dim, parts = genome.resolution, 3, []
    for width in genome.stem.widths:
        side = halve(side)
        parts.append(_conv_bn(dim, width, 3, side * side, fused=fused))
        dim = width
    grid = stem_grid(genome.resolution)
    widths = "→".join(str(width) for width in genome.stem.widths)
    rows = [count.Row("stem", f"4 x conv 3x3/2 {widths}, {grid}x{grid} tokens", count.total(parts))]
    for index, stage in enumerate(genome.stages):
        if index:
            spec = genome.subsamples[index - 1]
            detail = f"{dim}→{stage.dim} {grid}x{grid}→{halve(grid)}x{halve(grid)}, expand {spec.expand_ratio:g}"
            rows.append(count.Row(f"subsample {index - 1}", detail, _subsample(dim, stage.dim, spec, grid, fused)))
            grid = halve(grid)
        dim = stage.dim
        for position, block in enumerate(stage.blocks):
            window, windows = window_layout(grid, block.window)
            detail = (
                f"{dim} heads {block.heads} key {block.key_dim} ffn {block.ffn_ratio:g}, "
                f"{windows} window{'s' if windows > 1 else ''} of {window}x{window} on {grid}x{grid}"
            )
            rows.append(count.Row(f"stage {index} block {position}", detail, _sandwich(dim, block, grid, fused)))
    classifier = count.linear(1, dim, genome.num_classes)
    head = classifier if fused else count.batch_norm(dim, dim) + classifier
    rows.append(count.Row("head", f"mean → batch norm → linear {dim}→{genome.num_classes}", head))
    return rows


def _conv_bn(dim_in: int, dim_out: int, kernel: int, pixels: int, groups: int = 1, *, fused: bool) -> count.Count:
    if fused:
        return count.conv2d(dim_in, dim_out, kernel, pixels, groups, bias=True)
    conv = count.conv2d(dim_in, dim_out, kernel, pixels, groups, bias=False)
    return conv + count.batch_norm(pixels * dim_out, dim_out)


def _ffn(dim: int, hidden: int, pixels: int, fused: bool) -> count.Count:
    return _conv_bn(dim, hidden, 1, pixels, fused=fused) + _conv_bn(hidden, dim, 1, pixels, fused=fused)


def _window_attention(dim: int, block: BlockSpec, grid: int, fused: bool) -> count.Count:
    """Cascaded group attention runs on the padded map, so its convs see every padded pixel."""
    side, windows = window_layout(grid, block.window)
    tokens = side * side
    pixels = windows * tokens
    heads, key_dim, value_dim = block.heads, block.key_dim, dim // block.heads
    qkv = _conv_bn(dim // heads, 2 * key_dim + value_dim, 1, pixels, fused=fused)
    q_convs = [_conv_bn(key_dim, key_dim, kernel, pixels, groups=key_dim, fused=fused) for kernel in block.q_kernels]
    return count.total(
        [
            *[qkv] * heads,
            *q_convs,
            count.attention(pixels, tokens, heads * key_dim, heads * value_dim),
            _conv_bn(heads * value_dim, dim, 1, pixels, fused=fused),
            count.parameter(heads * tokens),  # one bias per head and (|dy|, |dx|) offset
        ]
    )


def _sandwich(dim: int, block: BlockSpec, grid: int, fused: bool) -> count.Count:
    pixels = grid * grid
    token_mixer = _conv_bn(dim, dim, block.dw_kernel, pixels, groups=dim, fused=fused)
    ffn = _ffn(dim, hidden_width(dim, block.ffn_ratio), pixels, fused)
    return count.total([token_mixer, ffn, _window_attention(dim, block, grid, fused), token_mixer, ffn])


def _subsample(dim_in: int, dim_out: int, spec: SubsampleSpec, grid: int, fused: bool) -> count.Count:
    pixels, out_pixels = grid * grid, halve(grid) ** 2
    hidden = hidden_width(dim_in, spec.expand_ratio)
    kernel = spec.dw_kernel
    parts = [
        _conv_bn(dim_in, dim_in, kernel, pixels, groups=dim_in, fused=fused),
        _ffn(dim_in, hidden_width(dim_in, spec.ffn_ratio), pixels, fused),
        _conv_bn(dim_in, hidden, 1, pixels, fused=fused),
        _conv_bn(hidden, hidden, kernel, out_pixels, groups=hidden, fused=fused),
        _conv_bn(hidden, dim_out, 1, out_pixels, fused=fused),
        _conv_bn(dim_out, dim_out, kernel, out_pixels, groups=dim_out, fused=fused),
        _ffn(dim_out, hidden_width(dim_out, spec.ffn_ratio), out_pixels, fused),
    ]
    if spec.se_ratio > 0:  # squeeze-excite convs act on one pixel (the mean) and have their own biases
        reduced = se_width(hidden, spec.se_ratio)
        parts += [count.conv2d(hidden, reduced, 1, 1), count.conv2d(reduced, hidden, 1, 1)]
    return count.total(parts)
