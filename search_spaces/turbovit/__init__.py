"""The TurboViT space: hierarchical ViTs generated around mask unit attention and Q-pooling.

A genome is a conv stem plus an ordered list of blocks, each with its own width, heads, MLP ratio,
attention kind and Q-pool flag, so the "condensation" TurboViT is known for (a wide early block, a much
narrower next one, then growing) is expressible. The design rules are TurboViT's: Q-pooling at exactly
three blocks (configurable), mask unit attention first and global attention after, never the reverse.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Mapping
from typing import ClassVar

import optuna
from torch import nn

from gas import cost as count
from gas.errors import GasError, GenomeError
from gas.genome import Genome
from gas.models.hiera import BlockSpec, Hiera, stem_grid
from gas.space import ExportConstant, ExportRecipe, Part, SearchSpace
from search_spaces.turbovit.parts import BLOCK, HEAD, STEM
from search_spaces.turbovit.scaling import deepest_within, widest_within


@dataclasses.dataclass(frozen=True, kw_only=True)
class Stem:
    """Conv patch embedding: `dim` channels out, so tokens are `dim` wide going into block 0."""

    dim: int
    kernel: int = 7
    stride: int = 4
    padding: int = 3


@dataclasses.dataclass(frozen=True, kw_only=True)
class TurboViTGenome(Genome):
    """One architecture: stem, blocks, and the mask unit size in stem-grid tokens per side."""

    space: str = "turbovit"
    mask_unit: int = 8
    stem: Stem
    blocks: tuple[BlockSpec, ...]

    item_names: ClassVar[Mapping[str, str]] = {"blocks": "block"}


# What the space admits. Wide enough for Hiera-B; the sampler draws from the narrower ranges below.
DEPTH_RANGE = (2, 32)
DIM_RANGE = (8, 1024)
MLP_RATIO_RANGE = (0.5, 8.0)

# What the sampler draws. Stage s works on 4**s times fewer tokens than stage 0, so its widths are
# 2**s times larger: every stage then costs roughly the same, and random genomes cluster near a
# few GFLOPs at 224px instead of spreading over orders of magnitude.
STAGE0_WIDTHS = (16, 128, 8)  # low, high, step; stage s multiplies all three by 2**s
MIDDLE_DEPTH, DEEP_DEPTH, EDGE_DEPTH = (1, 4), (1, 8), (1, 3)
MLP_RATIOS = (1.0, 4.0, 0.5)  # low, high, step
HEAD_WIDTHS = (16, 32, 64)
STEM_KERNELS = (3, 5, 7)
MASK_UNITS = (4, 8)


def most_q_pools(resolution: int = 224) -> int:
    """The most Q-pools the sampler can place at `resolution`: the `q_pools` option's upper bound at 224px.

    Two limits, whichever binds first: every pool needs an even token grid (the sampler's stride-4 stems
    make 56x56 at 224px, odd after three pools), and stage s draws widths up to 2**s times stage 0's, which
    must stay inside the space's width range (128 · 2**3 = 1024).
    """
    grids = {stem_grid(resolution, kernel, Stem.stride, kernel // 2) for kernel in STEM_KERNELS}
    by_grid = min((grid & -grid).bit_length() - 1 for grid in grids)  # times each grid halves evenly
    by_width = (DIM_RANGE[1] // STAGE0_WIDTHS[1]).bit_length() - 1
    return min(by_grid, by_width)


MAX_Q_POOLS = most_q_pools(224)


class TurboViTSpace(SearchSpace):
    """The `turbovit` space; `q_pools` sets how many blocks Q-pool (TurboViT and Hiera use 3)."""

    genome_type = TurboViTGenome

    def __init__(self, q_pools: int = 3) -> None:
        if isinstance(q_pools, bool) or not isinstance(q_pools, int) or not 1 <= q_pools <= MAX_Q_POOLS:
            raise GasError(
                f"turbovit: q_pools must be an integer from 1 to {MAX_Q_POOLS} ({MAX_Q_POOLS} is the most that "
                f"samples at 224px), got {q_pools!r}"
            )
        self.q_pools = q_pools
        self.name = "turbovit" if q_pools == 3 else f"turbovit:q_pools={q_pools}"

    # ---- rules -------------------------------------------------------------------------------

    def check(self, genome: Genome) -> None:
        if not isinstance(genome, TurboViTGenome):
            raise GenomeError(f"a {type(genome).__name__} is not a turbovit genome")
        _check_structure(genome)
        self._check_design(genome)

    def _check_design(self, genome: TurboViTGenome) -> None:
        first_global = None
        for index, block in enumerate(genome.blocks):
            if block.attention == "global" and first_global is None:
                first_global = index
            if block.attention == "mask_unit" and first_global is not None:
                raise GenomeError(
                    f"block {index}: mask-unit attention after global attention in block {first_global}; "
                    "the turbovit space puts every mask-unit block before the global ones"
                )
        pools = [index for index, block in enumerate(genome.blocks) if block.q_pool]
        if len(pools) != self.q_pools:
            where = f" (blocks {', '.join(map(str, pools))})" if pools else ""
            raise GenomeError(
                f"the {self.name} space needs exactly {self.q_pools} Q-pool blocks, found {len(pools)}{where}"
            )

    # ---- sampling ----------------------------------------------------------------------------

    def sample(self, trial: optuna.Trial, resolution: int = 224, num_classes: int = 1000) -> TurboViTGenome:
        """Draw a genome define-by-run; parameter names are stable per stage position, which TPE needs."""
        stages = self.q_pools + 1
        kernel = trial.suggest_categorical("stem.kernel", STEM_KERNELS)
        low, high, step = STAGE0_WIDTHS
        stem = Stem(dim=trial.suggest_int("stem.dim", low, high, step=step), kernel=kernel, padding=kernel // 2)
        mask_unit = trial.suggest_categorical("mask_unit", MASK_UNITS)
        global_from = trial.suggest_int("global_from_stage", 1, stages - 1)
        blocks = []
        for stage in range(stages):
            depth = trial.suggest_int(f"stage{stage}.depth", *self._depth_range(stage))
            scale = 2**stage
            for position in range(depth):
                name = f"stage{stage}.block{position}"
                dim = trial.suggest_int(f"{name}.dim", low * scale, high * scale, step=step * scale)
                head_width = math.gcd(dim, trial.suggest_categorical(f"{name}.head_dim", HEAD_WIDTHS))
                mlp_ratio = trial.suggest_float(f"{name}.mlp_ratio", *MLP_RATIOS[:2], step=MLP_RATIOS[2])
                pools = stage > 0 and position == 0
                # As in Hiera, a stage's pooling block keeps the previous stage's attention kind; a mask
                # unit too small to hold 2x2 tokens by then turns the rest of the network global.
                pools_before = stage - 1 if pools else stage
                local = (stage < global_from or (stage == global_from and pools)) and (mask_unit >> pools_before >= 2)
                if blocks and blocks[-1].attention == "global":
                    local = False
                attention = "mask_unit" if local else "global"
                blocks.append(BlockSpec(dim, dim // head_width, mlp_ratio, attention, pools))
        genome = TurboViTGenome(
            space=self.name,
            resolution=resolution,
            num_classes=num_classes,
            mask_unit=mask_unit,
            stem=stem,
            blocks=tuple(blocks),
        )
        self.check(genome)
        return genome

    def _depth_range(self, stage: int) -> tuple[int, int]:
        stages = self.q_pools + 1
        if stage == stages - 2:
            return DEEP_DEPTH
        return EDGE_DEPTH if stage in (0, stages - 1) else MIDDLE_DEPTH

    def least_cost(self, resolution: int = 224) -> count.Count:
        """Every block, stage and MLP ratio costs more the deeper or wider it is, so the cheapest genomes are
        the shallowest and narrowest; the choices that are not sizes (stem kernel, mask unit, where global
        attention starts, head width) are tried in every combination."""
        stages = self.q_pools + 1
        counts = []
        for kernel, mask_unit, global_from, head_width in itertools.product(
            STEM_KERNELS, MASK_UNITS, range(1, stages), HEAD_WIDTHS
        ):
            choices: dict[str, object] = {
                "stem.kernel": kernel,
                "stem.dim": STAGE0_WIDTHS[0],
                "mask_unit": mask_unit,
                "global_from_stage": global_from,
            }
            for stage in range(stages):
                depth = self._depth_range(stage)[0]
                choices[f"stage{stage}.depth"] = depth
                for position in range(depth):
                    name = f"stage{stage}.block{position}"
                    choices[f"{name}.dim"] = STAGE0_WIDTHS[0] * 2**stage
                    choices[f"{name}.head_dim"] = head_width
                    choices[f"{name}.mlp_ratio"] = MLP_RATIOS[0]
            cost = self.cost(self.sample(optuna.trial.FixedTrial(choices), resolution=resolution))
            counts.append(count.Count(cost.params, cost.flops))
        return count.Count(min(c.params for c in counts), min(c.flops for c in counts))

    # ---- references, building, costing -----------------------------------------------------

    @property
    def references(self) -> Mapping[str, TurboViTGenome]:
        if self.q_pools != 3:
            return {}
        return {
            "hiera_tiny": _hiera(96, (1, 2, 7, 2)),
            "hiera_small": _hiera(96, (1, 2, 11, 2)),
            "hiera_base": _hiera(96, (2, 3, 16, 3)),
            "turbovit": TURBOVIT,
        }

    def build(self, genome: Genome) -> nn.Module:
        self.check(genome)
        assert isinstance(genome, TurboViTGenome)
        return Hiera(
            blocks=list(genome.blocks),
            embed_dim=genome.stem.dim,
            resolution=genome.resolution,
            mask_unit=genome.mask_unit,
            num_classes=genome.num_classes,
            stem_kernel=genome.stem.kernel,
            stem_stride=genome.stem.stride,
            stem_padding=genome.stem.padding,
        )

    def export_recipe(self, genome: Genome) -> ExportRecipe:
        """The block list as a table at the top of the file; the same `Hiera(...)` call as `build`."""
        self.check(genome)
        assert isinstance(genome, TurboViTGenome)
        columns = ", ".join(spec.name for spec in dataclasses.fields(BlockSpec))
        return ExportRecipe(
            model_module=Hiera.__module__,
            constants=(
                ExportConstant(
                    "RESOLUTION", genome.resolution, "Input side in pixels; the position embedding is sized for it."
                ),
                ExportConstant(
                    "STEM",
                    dataclasses.asdict(genome.stem),
                    "Conv patch embedding: `dim` channels out of a kernel x kernel conv with this stride and padding.",
                ),
                ExportConstant(
                    "MASK_UNIT",
                    genome.mask_unit,
                    "Side of a mask unit in tokens of the stem's grid; it halves with every Q-pool.",
                ),
                ExportConstant(
                    "BLOCKS",
                    [dataclasses.astuple(block) for block in genome.blocks],
                    f"One row per block, in order: {columns}.",
                ),
            ),
            constructor=Hiera.__name__,
            arguments={
                "blocks": f"[{BlockSpec.__name__}(*row) for row in BLOCKS]",
                "embed_dim": 'STEM["dim"]',
                "resolution": "RESOLUTION",
                "mask_unit": "MASK_UNIT",
                "num_classes": "num_classes",
                "stem_kernel": 'STEM["kernel"]',
                "stem_stride": 'STEM["stride"]',
                "stem_padding": 'STEM["padding"]',
            },
        )

    def cost(self, genome: Genome) -> count.Cost:
        """Mirrors `Hiera` layer by layer; tests hold it to fvcore's count of the built module."""
        self.check(genome)
        assert isinstance(genome, TurboViTGenome)
        stem = genome.stem
        grid = stem_grid(genome.resolution, stem.kernel, stem.stride, stem.padding)
        tokens = grid * grid
        rows = [
            count.Row(
                "stem",
                f"conv {stem.kernel}x{stem.kernel}/{stem.stride} 3→{stem.dim}, {grid}x{grid} tokens",
                count.conv2d(3, stem.dim, stem.kernel, tokens) + count.parameter(tokens * stem.dim),
            )
        ]
        mask_units = (grid // genome.mask_unit) ** 2
        dim = stem.dim
        for index, block in enumerate(genome.blocks):
            out_tokens = tokens // 4 if block.q_pool else tokens
            windows = mask_units if block.attention == "mask_unit" else 1
            hidden = int(block.dim * block.mlp_ratio)
            parts = [
                count.layer_norm(tokens, dim),
                count.linear(tokens, dim, 3 * block.dim),
                count.attention(out_tokens, tokens // windows, block.dim, block.dim),
                count.linear(out_tokens, block.dim, block.dim),
                count.layer_norm(out_tokens, block.dim),
                count.linear(out_tokens, block.dim, hidden),
                count.linear(out_tokens, hidden, block.dim),
            ]
            if dim != block.dim:
                parts.append(count.linear(tokens, dim, block.dim))
            kind = block.attention.replace("_", "-")
            detail = (
                f"{dim}→{block.dim} {kind}{' q-pool' if block.q_pool else ''} heads {block.heads} "
                f"mlp {block.mlp_ratio:g}, {tokens}→{out_tokens} tokens"
            )
            rows.append(count.Row(f"block {index}", detail, count.total(parts)))
            tokens, dim = out_tokens, block.dim
        head = count.layer_norm(1, dim) + count.linear(1, dim, genome.num_classes)
        rows.append(count.Row("head", f"mean → norm → linear {dim}→{genome.num_classes}", head))
        return count.Cost(genome.resolution, tuple(rows))

    def parts(self, genome: Genome) -> list[Part]:
        """Mirrors `Hiera.__init__`: the stem, one part per block on the token count it receives, the head."""
        assert isinstance(genome, TurboViTGenome)
        stem = genome.stem
        grid = stem_grid(genome.resolution, stem.kernel, stem.stride, stem.padding)
        pool_steps = sum(block.q_pool for block in genome.blocks)
        parts = [
            Part(
                STEM,
                (genome.resolution, stem.dim, stem.kernel, stem.stride, stem.padding, genome.mask_unit, pool_steps),
            )
        ]
        mask_units = (grid // genome.mask_unit) ** 2
        tokens, dim = grid * grid, stem.dim
        for block in genome.blocks:
            windows = mask_units if block.attention == "mask_unit" else 1
            key = (tokens, dim, block.dim, block.heads, float(block.mlp_ratio), windows, bool(block.q_pool))
            parts.append(Part(BLOCK, key))
            tokens, dim = (tokens // 4 if block.q_pool else tokens), block.dim
        parts.append(Part(HEAD, (tokens, dim, genome.num_classes)))
        return parts

    # ---- scaling a reference to a limit -----------------------------------------------------

    def scale(self, genome: Genome, how: str, fits: Callable[[Genome], bool]) -> TurboViTGenome | None:
        self.check(genome)
        assert isinstance(genome, TurboViTGenome)
        if how == "width":
            return widest_within(genome, lambda candidate: self._valid(candidate) and fits(candidate))
        if how == "depth":
            return deepest_within(genome, fits, DEPTH_RANGE[1])
        raise GasError(f"the {self.name} space scales by width or depth, not {how!r}")

    def _valid(self, genome: TurboViTGenome) -> bool:
        try:
            self.check(genome)
        except GenomeError:
            return False
        return True

    def describe(self, genome: Genome) -> dict[str, str]:
        assert isinstance(genome, TurboViTGenome)
        blocks = genome.blocks
        local = sum(block.attention == "mask_unit" for block in blocks)
        return {
            "depth": str(len(blocks)),
            "widths": "-".join(str(block.dim) for block in blocks),
            "attention": f"{local} mask-unit ({genome.mask_unit}x{genome.mask_unit}) + {len(blocks) - local} global",
            "q_pool": ",".join(str(index) for index, block in enumerate(blocks) if block.q_pool),
        }


def _check_structure(genome: TurboViTGenome) -> None:
    """Rules any genome must meet to build at its resolution, in the order a reader would check them."""
    if genome.resolution < 1:
        raise GenomeError(f"resolution must be positive, got {genome.resolution}")
    if genome.num_classes < 1:
        raise GenomeError(f"num_classes must be positive, got {genome.num_classes}")
    stem = genome.stem
    if stem.dim < 1 or stem.kernel < 1 or stem.stride < 1 or stem.padding < 0:
        raise GenomeError(
            "stem: dim, kernel and stride must be positive and padding non-negative, got "
            f"dim={stem.dim} kernel={stem.kernel} stride={stem.stride} padding={stem.padding}"
        )
    grid = stem_grid(genome.resolution, stem.kernel, stem.stride, stem.padding)
    if grid < 1:
        raise GenomeError(
            f"stem: a {stem.kernel}x{stem.kernel}/{stem.stride} conv leaves no tokens at {genome.resolution}px"
        )
    if genome.mask_unit < 1 or genome.mask_unit & (genome.mask_unit - 1):
        raise GenomeError(f"mask_unit={genome.mask_unit} must be a power of two (it halves with every Q-pool)")
    if not DEPTH_RANGE[0] <= len(genome.blocks) <= DEPTH_RANGE[1]:
        raise GenomeError(f"the space admits {DEPTH_RANGE[0]} to {DEPTH_RANGE[1]} blocks, got {len(genome.blocks)}")
    uses_mask_units = any(block.attention == "mask_unit" for block in genome.blocks)
    if uses_mask_units and grid % genome.mask_unit:
        raise GenomeError(
            f"mask_unit={genome.mask_unit} does not divide the {grid}x{grid} token grid at {genome.resolution}px"
        )
    pools_before = 0
    for index, block in enumerate(genome.blocks):
        where = f"block {index}"
        if not DIM_RANGE[0] <= block.dim <= DIM_RANGE[1]:
            raise GenomeError(f"{where}: dim={block.dim} is outside the space's range {DIM_RANGE[0]}..{DIM_RANGE[1]}")
        if block.heads < 1 or block.dim % block.heads:
            raise GenomeError(f"{where}: heads={block.heads} does not divide dim={block.dim}")
        if not MLP_RATIO_RANGE[0] <= block.mlp_ratio <= MLP_RATIO_RANGE[1]:
            raise GenomeError(
                f"{where}: mlp_ratio={block.mlp_ratio:g} is outside the space's range "
                f"{MLP_RATIO_RANGE[0]:g}..{MLP_RATIO_RANGE[1]:g}"
            )
        side = grid >> pools_before
        if block.q_pool and (side % 2 or side < 2):
            raise GenomeError(
                f"{where}: Q-pool needs an even token grid, but it is {side}x{side} here "
                f"({grid}x{grid} after the stem at {genome.resolution}px, pooled {pools_before} times before)"
            )
        if block.attention == "mask_unit" and genome.mask_unit >> pools_before < 2:
            unit = max(genome.mask_unit >> pools_before, 1)
            raise GenomeError(
                f"{where}: after {pools_before} Q-pool{'' if pools_before == 1 else 's'} a mask unit is "
                f"{unit}x{unit} token; mask-unit "
                "attention needs at least 2x2 (use global attention here or a larger mask_unit)"
            )
        pools_before += block.q_pool


def _hiera(embed_dim: int, stages: tuple[int, ...]) -> TurboViTGenome:
    """Hiera's exact structure: widths and heads double at each Q-pool; stages 1-2 use mask units.

    The pooling block of a stage keeps the previous stage's attention, so the first block of stage 3
    is still mask-unit attention (as in the official code).
    """
    blocks, dim, heads = [], embed_dim, 1
    for stage, depth in enumerate(stages):
        for position in range(depth):
            pools = stage > 0 and position == 0
            if pools:
                dim, heads = dim * 2, heads * 2
            local = stage < 2 or (stage == 2 and pools)
            blocks.append(BlockSpec(dim, heads, 4.0, "mask_unit" if local else "global", pools))
    return TurboViTGenome(stem=Stem(dim=embed_dim), blocks=tuple(blocks))


def _turbovit() -> TurboViTGenome:
    """A TurboViT-scale genome following the paper's description, as its block dims are unpublished.

    From the paper: a wide first block and a much narrower second one (the "condensation"), then
    widths that grow; Q-pooling at three blocks; mask unit attention early and limited global attention
    late; nine blocks in the order 2 | 3 | 2 | 2 between the pools. Widths and MLP ratios were then set
    so the totals land on the published 12.7M parameters with FLOPs under the 2.5G ceiling (about the
    published 2.2G), using `gas cost turbovit`.
    """
    layout = [  # dim, heads, mlp_ratio, attention, q_pool
        (128, 4, 3.0, "mask_unit", False),
        (48, 1, 3.0, "mask_unit", False),  # the condensation: 128 → 48
        (128, 4, 3.0, "mask_unit", True),
        (128, 4, 3.0, "mask_unit", False),
        (128, 4, 3.0, "mask_unit", False),
        (320, 5, 3.5, "mask_unit", True),
        (320, 5, 3.5, "global", False),
        (640, 10, 3.75, "global", True),
        (640, 10, 3.75, "global", False),
    ]
    return TurboViTGenome(stem=Stem(dim=64), blocks=tuple(BlockSpec(*row) for row in layout))


TURBOVIT = _turbovit()
SPACE = TurboViTSpace
