"""EfficientViT-M0…M5 as gas builds them, held module by module to the published configs by arithmetic.

Nothing here reads a count gas prints: every expected number is worked out below from the configs of
microsoft/Cream `EfficientViT/classification/model/build.py` (the same as timm `efficientvit_msra.py`) and
the layer layout of Cream's `model/efficientvit.py`, then compared with gas's built model, its analytic
cost and the file `gas export` writes. The totals are anchored to the paper's Table 1 (ImageNet-1K).
"""

import itertools
import math
from dataclasses import dataclass, field

import pytest
import torch

from gas.export import load_exported
from gas.space import get_space, load_genome

# Shared by all six networks (Cream's EfficientViT defaults): key width 16, 7x7 windows, FFN ratio 2,
# inverted residual x4 with a quarter-width squeeze-excite in PatchMerging, 3x3 depthwise token mixers.
KEY_DIM = 16
WINDOW = 7
FFN_RATIO = 2
EXPAND_RATIO = 4
SE_RATIO = 0.25
NUM_CLASSES = 1000
RESOLUTION = 224

CONFIGS = {  # embed_dim, depth, num_heads, kernels (Cream build.py)
    "efficientvit_m0": ((64, 128, 192), (1, 2, 3), (4, 4, 4), (5, 5, 5, 5)),
    "efficientvit_m1": ((128, 144, 192), (1, 2, 3), (2, 3, 3), (7, 5, 3, 3)),
    "efficientvit_m2": ((128, 192, 224), (1, 2, 3), (4, 3, 2), (7, 5, 3, 3)),
    "efficientvit_m3": ((128, 240, 320), (1, 2, 3), (4, 3, 4), (5, 5, 5, 5)),
    "efficientvit_m4": ((128, 256, 384), (1, 2, 3), (4, 4, 4), (7, 5, 3, 3)),
    "efficientvit_m5": ((192, 288, 384), (1, 3, 4), (3, 3, 4), (7, 5, 3, 3)),
}

PUBLISHED_TOTALS = {  # params in millions (one decimal), FLOPs in millions: arXiv 2305.07027 Table 1
    "efficientvit_m0": (2.3, 79),
    "efficientvit_m1": (3.0, 167),
    "efficientvit_m2": (4.2, 201),
    "efficientvit_m3": (6.9, 263),
    "efficientvit_m4": (8.8, 299),
    "efficientvit_m5": (12.4, 522),
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@dataclass
class Tally:
    """What one published module holds and costs.

    `state` lists its state_dict entries in Cream's order as (shape, is a parameter); `macs` counts conv,
    linear and attention multiply-adds; `norm_elements` the outputs of eval-mode BatchNorms (fvcore counts
    2 FLOPs each); `fused_away` the parameters that folding every BatchNorm into its conv or linear removes.
    """

    state: list[tuple[tuple[int, ...], bool]] = field(default_factory=list)
    macs: int = 0
    norm_elements: int = 0
    fused_away: int = 0

    def __add__(self, other: "Tally") -> "Tally":
        return Tally(
            self.state + other.state,
            self.macs + other.macs,
            self.norm_elements + other.norm_elements,
            self.fused_away + other.fused_away,
        )

    @property
    def params(self) -> int:
        return sum(math.prod(shape) for shape, is_parameter in self.state if is_parameter)

    @property
    def flops(self) -> int:
        return self.macs + 2 * self.norm_elements

    @property
    def fused_params(self) -> int:
        return self.params - self.fused_away


def total(tallies: list[Tally]) -> Tally:
    return sum(tallies, Tally())


def conv_bn(dim_in: int, dim_out: int, pixels: int, kernel: int = 1, groups: int = 1) -> Tally:
    """Cream's Conv2d_BN: a bias-free conv, then BatchNorm2d (weight, bias, running mean, running var, count).

    Fused, the norm's two per-channel parameters become the conv's one bias per channel.
    """
    weight = (dim_out, dim_in // groups, kernel, kernel)
    norm = [((dim_out,), True), ((dim_out,), True), ((dim_out,), False), ((dim_out,), False), ((), False)]
    return Tally([(weight, True), *norm], math.prod(weight) * pixels, dim_out * pixels, dim_out)


def ffn(dim: int, pixels: int) -> Tally:
    return conv_bn(dim, FFN_RATIO * dim, pixels) + conv_bn(FFN_RATIO * dim, dim, pixels)


def token_mixer(dim: int, pixels: int) -> Tally:
    return conv_bn(dim, dim, pixels, kernel=3, groups=dim)


def sandwich_block(dim: int, heads: int, kernels: tuple[int, ...], grid: int) -> Tally:
    """EfficientViTBlock: dw0, ffn0, the window attention, dw1, ffn1."""
    side = min(WINDOW, grid)
    assert grid % side == 0  # 14, 7 and 4 at 224px: whole windows, so no padding enters the counts
    windows, tokens, pixels = (grid // side) ** 2, side * side, grid * grid
    value_dim = dim // heads  # Cream: attn_ratio = dim / (key_dim * heads), value width attn_ratio * key_dim
    # CascadedGroupAttention's own parameter comes first in its state_dict. Cream also saves the bias index
    # (`attention_bias_idxs`) as a buffer; gas rebuilds it from the window side instead, so it is left out.
    attention = Tally([((heads, tokens), True)])
    attention += total([conv_bn(dim // heads, 2 * KEY_DIM + value_dim, pixels) for _ in range(heads)])
    # Head i's query conv has kernel kernels[i]: a block with fewer heads than kernels uses the first ones.
    attention += total([conv_bn(KEY_DIM, KEY_DIM, pixels, kernel, groups=KEY_DIM) for kernel in kernels[:heads]])
    attention += conv_bn(value_dim * heads, dim, pixels)
    attention.macs += windows * heads * tokens * tokens * (KEY_DIM + value_dim)  # q·kᵀ and attention·v
    return token_mixer(dim, pixels) + ffn(dim, pixels) + attention + token_mixer(dim, pixels) + ffn(dim, pixels)


def squeeze_excite_width(channels: int) -> int:
    """timm's SqueezeExcite width: make_divisible(channels * 0.25, 8) with round_limit 0 (never bumped up)."""
    return max(8, int(channels * SE_RATIO + 4) // 8 * 8)


def subsample_block(dim_in: int, dim_out: int, grid: int) -> Tally:
    """Cream's blocks between stages: (DWConv, FFN), PatchMerging, (DWConv, FFN); the merge halves the grid."""
    out_grid = (grid - 1) // 2 + 1
    pixels, out_pixels = grid * grid, out_grid * out_grid
    hidden = EXPAND_RATIO * dim_in
    reduced = squeeze_excite_width(hidden)
    # The squeeze-excite's two 1x1 convs have biases and see one pixel each: the mean over the map.
    squeeze = Tally(
        [((reduced, hidden, 1, 1), True), ((reduced,), True), ((hidden, reduced, 1, 1), True), ((hidden,), True)],
        macs=2 * hidden * reduced,
    )
    merge = (
        conv_bn(dim_in, hidden, pixels)
        + conv_bn(hidden, hidden, out_pixels, kernel=3, groups=hidden)
        + squeeze
        + conv_bn(hidden, dim_out, out_pixels)
    )
    before = token_mixer(dim_in, pixels) + ffn(dim_in, pixels)
    return before + merge + token_mixer(dim_out, out_pixels) + ffn(dim_out, out_pixels)


def stem(dim: int) -> tuple[Tally, int]:
    """Four 3x3 stride-2 Conv2d_BN widening 3 → dim/8 → dim/4 → dim/2 → dim; returns the grid it leaves."""
    side, widths, tally = RESOLUTION, (3, dim // 8, dim // 4, dim // 2, dim), Tally()
    for dim_in, dim_out in itertools.pairwise(widths):
        side = (side - 1) // 2 + 1
        tally += conv_bn(dim_in, dim_out, side * side, kernel=3)
    return tally, side


def head(dim: int) -> Tally:
    """BN_Linear: BatchNorm1d then Linear with a bias; fused, the norm's 2·dim parameters disappear."""
    norm = [((dim,), True), ((dim,), True), ((dim,), False), ((dim,), False), ((), False)]
    linear = [((NUM_CLASSES, dim), True), ((NUM_CLASSES,), True)]
    return Tally(norm + linear, macs=dim * NUM_CLASSES, norm_elements=dim, fused_away=2 * dim)


def published_modules(name: str) -> list[tuple[str, Tally]]:
    """Each module of the published network, in its order, named as gas's cost rows name them."""
    dims, depths, heads, kernels = CONFIGS[name]
    tally, grid = stem(dims[0])
    modules = [("stem", tally)]
    for stage, (dim, depth, head_count) in enumerate(zip(dims, depths, heads, strict=True)):
        if stage:
            modules.append((f"subsample {stage - 1}", subsample_block(dims[stage - 1], dim, grid)))
            grid = (grid - 1) // 2 + 1
        for position in range(depth):
            modules.append((f"stage {stage} block {position}", sandwich_block(dim, head_count, kernels, grid)))
    modules.append(("head", head(dims[-1])))
    return modules


def _gas_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """gas's modules in the same order as `published_modules`."""
    modules = [model.stem]
    for stage in model.stages:
        if stage.subsample is not None:
            modules.append(stage.subsample)
        modules.extend(stage.blocks)
    return [*modules, model.head]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_each_module_has_the_published_parameter_count(name):
    expected = published_modules(name)
    genome = load_genome(name)
    space = get_space(genome.space)
    rows = space.cost(genome).rows
    assert [row.name for row in rows] == [module for module, _ in expected]
    assert [row.count.params for row in rows] == [tally.params for _, tally in expected]
    assert [row.count.flops for row in rows] == [tally.flops for _, tally in expected]
    model = space.build(genome)
    built = [sum(p.numel() for p in module.parameters()) for module in _gas_modules(model)]
    assert built == [tally.params for _, tally in expected]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_totals_are_the_published_ones(name):
    """Table 1 reports the BatchNorm-fused network; the arithmetic lands on its rounded figures."""
    expected = total([tally for _, tally in published_modules(name)])
    params, flops = PUBLISHED_TOTALS[name]
    assert round(expected.fused_params / 1e6, 1) == params
    assert round(expected.macs / 1e6) == flops
    fused = get_space("efficientvit").cost(load_genome(name)).fused
    assert (fused.params, fused.flops) == (expected.fused_params, expected.macs)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_state_dict_follows_the_published_layout(name):
    """Entry for entry, the shapes of the published state_dict (names may differ), so weights map by order."""
    model = get_space("efficientvit").build(load_genome(name))
    expected = total([tally for _, tally in published_modules(name)]).state
    assert [tuple(tensor.shape) for tensor in model.state_dict().values()] == [shape for shape, _ in expected]
    parameters = [shape for shape, is_parameter in expected if is_parameter]
    assert [tuple(parameter.shape) for parameter in model.parameters()] == parameters


def test_query_kernels_are_per_head_as_published():
    """M5 (heads 3/3/4, kernels 7/5/3/3): three-head stages use the first three kernels, the last stage all four."""
    model = get_space("efficientvit").build(load_genome("efficientvit_m5"))
    sizes = [
        [[conv.conv.kernel_size[0] for conv in block.attn.attn.q_convs] for block in stage.blocks]
        for stage in model.stages
    ]
    assert sizes == [[[7, 5, 3]], [[7, 5, 3]] * 3, [[7, 5, 3, 3]] * 4]


def _cream_bias_index(side: int) -> torch.Tensor:
    """Cream's attention_bias_idxs: each new (|dy|, |dx|) offset gets the next index, in the order met."""
    points = list(itertools.product(range(side), range(side)))
    offsets: dict[tuple[int, int], int] = {}
    index = []
    for (y1, x1), (y2, x2) in itertools.product(points, points):
        index.append(offsets.setdefault((abs(y1 - y2), abs(x1 - x2)), len(offsets)))
    return torch.tensor(index).view(len(points), len(points))


def test_attention_biases_mean_what_the_published_ones_mean():
    """The bias tables line up entry for entry, so published biases load into the same offsets."""
    model = get_space("efficientvit").build(load_genome("efficientvit_m0"))
    for stage, side in zip(model.stages, (7, 7, 4), strict=True):
        attention = stage.blocks[0].attn.attn
        assert torch.equal(attention.bias_index, _cream_bias_index(side))


def test_exported_m5_follows_the_published_layout(gas_cli, tmp_path):
    """`gas export efficientvit_m5` writes a file whose model has the published state_dict layout."""
    path = tmp_path / "m5.py"
    result = gas_cli("export", "efficientvit_m5", "--out", str(path))
    assert result.returncode == 0, result.stderr
    exported = load_exported(path.read_text(), "m5").build_model()
    expected = total([tally for _, tally in published_modules("efficientvit_m5")]).state
    assert [tuple(tensor.shape) for tensor in exported.state_dict().values()] == [shape for shape, _ in expected]
    ours = get_space("efficientvit").build(load_genome("efficientvit_m5"))
    exported.load_state_dict(ours.state_dict(), strict=True)
    exported.eval()
    ours.eval()
    images = torch.randn(1, 3, RESOLUTION, RESOLUTION)
    with torch.no_grad():
        torch.testing.assert_close(exported(images), ours(images), atol=1e-6, rtol=0)
