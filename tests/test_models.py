"""The hierarchical ViT: shapes, gradients, and the unrolled layout against a naive raster version."""

import math

import pytest
import torch
import torch.nn.functional as F

from gas.models.hiera import BlockSpec, MaskUnitAttention, q_pool, unroll
from gas.space import get_space, load_genome


@pytest.mark.parametrize("name", ["turbovit", "hiera_tiny"])
@pytest.mark.parametrize("resolution", [224, 64])
def test_reference_trains_one_step_at_224_and_64(name, resolution):
    space = get_space("turbovit")
    genome = load_genome(name).at_resolution(resolution)
    model = space.build(genome)
    images = torch.randn(2, 3, resolution, resolution)
    logits = model(images)
    assert logits.shape == (2, 1000)
    F.cross_entropy(logits, torch.tensor([1, 2])).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def _raster_pool(x: torch.Tensor, side: int) -> torch.Tensor:
    """2x2 max-pool of raster tokens [B, side*side, C]."""
    batch, _, channels = x.shape
    x = x.reshape(batch, side // 2, 2, side // 2, 2, channels).amax(dim=(2, 4))
    return x.reshape(batch, -1, channels)


def _naive_attention(attn: MaskUnitAttention, x: torch.Tensor, side: int, unit: int) -> torch.Tensor:
    """Windowed attention written directly on raster tokens, one window at a time."""
    batch = x.shape[0]
    qkv = attn.qkv(x).reshape(batch, side, side, 3, attn.heads, -1)
    out_side = side // 2 if attn.pool else side
    out_unit = unit // 2 if attn.pool else unit
    out = torch.zeros(batch, out_side, out_side, qkv.shape[-2] * qkv.shape[-1])
    for wy in range(side // unit):
        for wx in range(side // unit):
            window = qkv[:, wy * unit : (wy + 1) * unit, wx * unit : (wx + 1) * unit]
            q, k, v = (window[..., i, :, :] for i in range(3))  # [B, u, u, heads, hd]
            if attn.pool:
                q = q.reshape(batch, unit // 2, 2, unit // 2, 2, *q.shape[-2:]).amax(dim=(2, 4))
            q, k, v = (t.reshape(batch, -1, *t.shape[-2:]).transpose(1, 2) for t in (q, k, v))
            weights = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).softmax(-1)
            o = (weights @ v).transpose(1, 2).reshape(batch, out_unit, out_unit, -1)
            out[:, wy * out_unit : (wy + 1) * out_unit, wx * out_unit : (wx + 1) * out_unit] = o
    return attn.proj(out.reshape(batch, out_side * out_side, -1))


@pytest.mark.parametrize(("grid", "mask_unit", "pool_steps"), [(16, 8, 3), (16, 4, 3), (32, 16, 3), (16, 8, 2)])
@pytest.mark.parametrize("pool", [False, True])
def test_unrolled_mask_unit_attention_equals_windowed_attention_on_raster_tokens(grid, mask_unit, pool_steps, pool):
    torch.manual_seed(0)
    dim = 16
    raster = torch.randn(2, grid * grid, dim)
    windows = (grid // mask_unit) ** 2
    attn = MaskUnitAttention(dim, 24, heads=3, windows=windows, pool=pool)
    with torch.no_grad():
        fast = attn(unroll(raster, grid, pool_steps, mask_unit))
        naive = _naive_attention(attn, raster, grid, mask_unit)
        out_grid, steps_left = (grid // 2, pool_steps - 1) if pool else (grid, pool_steps)
        expected = unroll(naive, out_grid, steps_left, mask_unit // 2 if pool else mask_unit)
    torch.testing.assert_close(fast, expected, atol=1e-5, rtol=1e-5)


def test_q_pool_of_unrolled_tokens_is_a_raster_max_pool():
    raster = torch.randn(1, 8 * 8, 5)
    pooled = q_pool(unroll(raster, 8, 3, 8))
    torch.testing.assert_close(pooled, unroll(_raster_pool(raster, 8), 4, 2, 4))


def test_global_attention_block_is_a_single_window():
    attn = MaskUnitAttention(8, 8, heads=2, windows=1, pool=False)
    x = torch.randn(1, 16, 8)
    with torch.no_grad():
        torch.testing.assert_close(attn(x), _naive_attention(attn, x, 4, 4))


@pytest.mark.parametrize("name", ["turbovit", "hiera_tiny"])
def test_attention_runs_the_fused_kernel_on_the_cpu(name):
    """scaled_dot_product_attention has fused kernels for 4-D inputs only; 5-D ones fall back to its math path."""
    genome = load_genome(name).at_resolution(64)
    model = get_space(genome.space).build(genome).eval()
    with torch.inference_mode(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as run:
        model(torch.randn(1, 3, 64, 64))
    kernels = [event.name for event in run.events() if event.name.startswith("aten::_scaled_dot_product")]
    blocks = len(model.blocks)
    assert kernels.count("aten::_scaled_dot_product_flash_attention_for_cpu") == blocks, sorted(set(kernels))


def test_width_change_without_pooling_projects_the_shortcut():
    space = get_space("turbovit")
    genome = load_genome("turbovit")
    assert genome.blocks[1].dim != genome.blocks[0].dim and not genome.blocks[1].q_pool
    model = space.build(genome.at_resolution(64))
    assert model.blocks[1].proj is not None and model.blocks[3].proj is None
    assert isinstance(genome.blocks[0], BlockSpec)


def _all_global(space: str, resolution: int, mask_unit: int) -> dict:
    """A small network of global blocks only, one per stage, with a mask unit its token grid does not hold."""
    pools = get_space(space).q_pools
    blocks = [
        {"dim": 16 * 2**stage, "heads": 2**stage, "mlp_ratio": 2.0, "attention": "global", "q_pool": stage > 0}
        for stage in range(pools + 1)
    ]
    stem = {"dim": 16, "kernel": 7, "stride": 4, "padding": 3}
    return {"space": space, "resolution": resolution, "mask_unit": mask_unit, "stem": stem, "blocks": blocks}


# Unrolled for a unit the grid does not hold, the 56x56 grid at 224px (16x16 units) failed at batches 1-8
# and at batch 9 let the last image's tokens into the attention of the one before it; the 10x10 grid at
# 40px (8x8 units, one pool) failed at batches 1-3.
@pytest.mark.parametrize(
    ("space", "resolution", "mask_unit", "batch"),
    [
        *[("turbovit", 224, 16, batch) for batch in (1, 2, 3, 9)],
        *[("turbovit:q_pools=1", 40, 8, batch) for batch in (1, 2, 3)],
    ],
)
def test_an_accepted_global_genome_never_mixes_images(space, resolution, mask_unit, batch):
    genome = load_genome(_all_global(space, resolution, mask_unit))  # accepted: no block uses the mask unit
    torch.manual_seed(0)
    model = get_space(space).build(genome).eval()
    images = torch.randn(batch, 3, resolution, resolution)
    perturbed = images.clone()
    perturbed[-1] = torch.randn(3, resolution, resolution)
    with torch.no_grad():
        together, after = model(images), model(perturbed)
        alone = torch.cat([model(images[index : index + 1]) for index in range(batch)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(after[:-1], together[:-1], atol=0, rtol=0)
    assert not torch.allclose(after[-1], together[-1])  # the perturbation reached its own image's output


def test_unroll_refuses_a_grid_it_cannot_split():
    """A 6x6 grid with 4x4 units: refused, where a reshape with -1 would have mixed the four images."""
    with pytest.raises(ValueError, match=r"cannot unroll 36 tokens as a 6x6 grid split by \[4\] per side"):
        unroll(torch.randn(4, 36, 8), grid=6, pool_steps=0, mask_unit=4)
    with pytest.raises(ValueError, match="cannot unroll 35 tokens as a 6x6 grid"):
        unroll(torch.randn(1, 35, 8), grid=6, pool_steps=1, mask_unit=2)
