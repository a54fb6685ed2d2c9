"""The EfficientViT space: sandwich blocks and cascaded group attention (MSRA, arXiv 2305.07027).

A genome is the stride-16 conv stem, a list of stages (a width and its blocks, each block with its own
heads, key width, attention window, FFN ratio, token-interaction kernel and one query kernel per head)
and the subsample blocks that join the stages. The design rules are EfficientViT's: three stages
(configurable), and a width that never shrinks from one stage to the next. References `efficientvit_m0`
… `efficientvit_m5` are the published networks, layer for layer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import optuna
from torch import nn

from gas import cost as count
from gas.errors import GasError, GenomeError
from gas.genome import Genome
from gas.models.efficientvit import (
    STEM_CONVS,
    BlockSpec,
    EfficientViT,
    StageSpec,
    StemSpec,
    SubsampleSpec,
    from_row,
    halve,
    stages_from_table,
    stem_grid,
)
from gas.space import ExportConstant, ExportRecipe, Part, SearchSpace
from search_spaces.efficientvit.cost import rows as cost_rows
from search_spaces.efficientvit.genome import (
    BLOCKS_PER_STAGE,
    DEPTHS,
    DIM_RANGE,
    DW_KERNELS,
    EXPAND_RATIO_RANGE,
    EXPAND_RATIOS,
    FFN_RATIO_RANGE,
    FFN_RATIOS,
    FIRST_DIM,
    KERNEL_RANGE,
    KEY_DIM_RANGE,
    KEY_DIMS,
    MAX_HEADS,
    Q_KERNELS,
    SE_RATIO_RANGE,
    SE_RATIOS,
    STAGES_RANGE,
    WIDEN_STEPS,
    WINDOW_RANGE,
    WINDOWS,
    EfficientViTGenome,
)
from search_spaces.efficientvit.parts import BLOCK, HEAD, STEM, SUBSAMPLE


class EfficientViTSpace(SearchSpace):
    """The `efficientvit` space; `stages` sets how many stages a genome has (EfficientViT uses 3)."""

    genome_type = EfficientViTGenome

    def __init__(self, stages: int = 3) -> None:
        if not isinstance(stages, int) or not STAGES_RANGE[0] <= stages <= STAGES_RANGE[1]:
            raise GasError(
                f"efficientvit: stages must be an integer from {STAGES_RANGE[0]} to {STAGES_RANGE[1]}, got {stages!r}"
            )
        self.stages = stages
        self.name = "efficientvit" if stages == 3 else f"efficientvit:stages={stages}"

    # ---- rules -------------------------------------------------------------------------------

    def check(self, genome: Genome) -> None:
        if not isinstance(genome, EfficientViTGenome):
            raise GenomeError(f"a {type(genome).__name__} is not an efficientvit genome")
        # First, because the structural rules below take the stage list to be non-empty.
        if len(genome.stages) != self.stages:
            raise GenomeError(f"the {self.name} space needs exactly {self.stages} stages, found {len(genome.stages)}")
        _check_structure(genome)
        for index in range(1, len(genome.stages)):
            before, after = genome.stages[index - 1].dim, genome.stages[index].dim
            if after < before:
                raise GenomeError(
                    f"stage {index}: dim={after} is narrower than stage {index - 1}'s {before}; "
                    "the efficientvit space keeps or widens the width at every subsample"
                )

    # ---- sampling ----------------------------------------------------------------------------

    def sample(self, trial: optuna.Trial, resolution: int = 224, num_classes: int = 1000) -> EfficientViTGenome:
        """Draw a genome define-by-run; parameter names are stable per stage and block position."""
        low, high, step = FIRST_DIM
        dim = trial.suggest_int("stage0.dim", low, high, step=step)
        stages, subsamples = [], []
        for stage in range(self.stages):
            name = f"stage{stage}"
            if stage:
                dim += step * trial.suggest_int(f"{name}.widen", *WIDEN_STEPS)
                subsamples.append(
                    SubsampleSpec(
                        expand_ratio=_suggest_ratio(trial, f"{name}.subsample.expand_ratio", EXPAND_RATIOS),
                        se_ratio=trial.suggest_categorical(f"{name}.subsample.se_ratio", SE_RATIOS),
                        ffn_ratio=_suggest_ratio(trial, f"{name}.subsample.ffn_ratio", FFN_RATIOS),
                        dw_kernel=trial.suggest_categorical(f"{name}.subsample.dw_kernel", DW_KERNELS),
                    )
                )
            depth = trial.suggest_int(f"{name}.depth", *self._depths(stage))
            blocks = []
            for position in range(depth):
                block = f"{name}.block{position}"
                drawn_heads = trial.suggest_int(f"{block}.heads", *MAX_HEADS)
                heads = max(h for h in range(1, drawn_heads + 1) if dim % h == 0)
                blocks.append(
                    BlockSpec(
                        heads=heads,
                        key_dim=trial.suggest_int(f"{block}.key_dim", *KEY_DIMS[:2], step=KEY_DIMS[2]),
                        window=trial.suggest_int(f"{block}.window", *WINDOWS),
                        ffn_ratio=_suggest_ratio(trial, f"{block}.ffn_ratio", FFN_RATIOS),
                        dw_kernel=trial.suggest_categorical(f"{block}.dw_kernel", DW_KERNELS),
                        q_kernels=tuple(
                            trial.suggest_categorical(f"{block}.head{head}.q_kernel", Q_KERNELS)
                            for head in range(heads)
                        ),
                    )
                )
            stages.append(StageSpec(dim=dim, blocks=tuple(blocks)))
        genome = EfficientViTGenome(
            space=self.name,
            resolution=resolution,
            num_classes=num_classes,
            stem=_stem(stages[0].dim),
            stages=tuple(stages),
            subsamples=tuple(subsamples),
        )
        self.check(genome)
        return genome

    def _depths(self, stage: int) -> tuple[int, int]:
        return DEPTHS["first" if stage == 0 else "last" if stage == self.stages - 1 else "middle"]

    def least_cost(self, resolution: int = 224) -> count.Count:
        """Widths, depths, ratios and kernels cost least at their lowest (and a squeeze-excite of 0 not at
        all), but heads and windows do not: more heads split the width (cheaper projections, more attention
        maps) and a window that does not tile the grid pads it. A stage's block costs the same whatever the
        other stages' blocks are, so each stage's heads and window are chosen on their own, for each total.
        """
        choices: dict[str, Any] = {"stage0.dim": FIRST_DIM[0]}
        for stage in range(self.stages):
            name = f"stage{stage}"
            if stage:
                choices[f"{name}.widen"] = WIDEN_STEPS[0]
                choices[f"{name}.subsample.expand_ratio"] = EXPAND_RATIOS[0]
                choices[f"{name}.subsample.se_ratio"] = min(SE_RATIOS)
                choices[f"{name}.subsample.ffn_ratio"] = FFN_RATIOS[0]
                choices[f"{name}.subsample.dw_kernel"] = min(DW_KERNELS)
            choices[f"{name}.depth"] = self._depths(stage)[0]
            for position in range(self._depths(stage)[0]):
                block = f"{name}.block{position}"
                choices[f"{block}.heads"] = MAX_HEADS[0]  # heads and window: a start for the choice below
                choices[f"{block}.window"] = WINDOWS[0]
                choices[f"{block}.key_dim"] = KEY_DIMS[0]
                choices[f"{block}.ffn_ratio"] = FFN_RATIOS[0]
                choices[f"{block}.dw_kernel"] = min(DW_KERNELS)
                for head in range(MAX_HEADS[1]):
                    choices[f"{block}.head{head}.q_kernel"] = min(Q_KERNELS)

        def cost_of(picks: Mapping[str, Any]) -> count.Count:
            cost = self.cost(self.sample(optuna.trial.FixedTrial({**choices, **picks}), resolution=resolution))
            return count.Count(cost.params, cost.flops)

        least = {}
        for total in ("params", "flops"):
            picks: dict[str, Any] = {}
            for stage in range(self.stages):
                blocks = [f"stage{stage}.block{position}" for position in range(choices[f"stage{stage}.depth"])]
                options = [
                    {**{f"{block}.heads": heads for block in blocks}, **{f"{block}.window": window for block in blocks}}
                    for heads in range(MAX_HEADS[0], MAX_HEADS[1] + 1)
                    for window in range(WINDOWS[0], WINDOWS[1] + 1)
                ]
                picks |= min(options, key=lambda option: getattr(cost_of({**picks, **option}), total))
            least[total] = getattr(cost_of(picks), total)
        return count.Count(**least)

    # ---- references, building, costing -----------------------------------------------------

    @property
    def references(self) -> Mapping[str, EfficientViTGenome]:
        if self.stages != 3:
            return {}
        return {name: _published(*config) for name, config in PUBLISHED.items()}

    def build(self, genome: Genome) -> nn.Module:
        self.check(genome)
        assert isinstance(genome, EfficientViTGenome)
        return EfficientViT(genome.stem, genome.stages, genome.subsamples, genome.resolution, genome.num_classes)

    def export_recipe(self, genome: Genome) -> ExportRecipe:
        """Stage widths and a block table at the top of the file; the same `EfficientViT(...)` call as `build`."""
        self.check(genome)
        assert isinstance(genome, EfficientViTGenome)
        block_columns = ", ".join(field.name for field in dataclasses.fields(BlockSpec))
        subsample_columns = ", ".join(field.name for field in dataclasses.fields(SubsampleSpec))
        blocks = [
            (index, *dataclasses.astuple(block)) for index, stage in enumerate(genome.stages) for block in stage.blocks
        ]
        return ExportRecipe(
            model_module=EfficientViT.__module__,
            constants=(
                ExportConstant(
                    "RESOLUTION",
                    genome.resolution,
                    "Input side in pixels; attention windows and biases are sized for it.",
                ),
                ExportConstant(
                    "STEM_WIDTHS", list(genome.stem.widths), "Output widths of the stem's four 3x3 stride-2 convs."
                ),
                ExportConstant("STAGE_DIMS", [stage.dim for stage in genome.stages], "Width of each stage."),
                ExportConstant(
                    "BLOCKS",
                    blocks,
                    f"One row per sandwich block, in order: stage, {block_columns} (a kernel per head, head 0 first).",
                ),
                ExportConstant(
                    "SUBSAMPLES",
                    [dataclasses.astuple(spec) for spec in genome.subsamples],
                    f"One row per subsample block between two stages: {subsample_columns}.",
                ),
            ),
            constructor=EfficientViT.__name__,
            arguments={
                "stem": f"{StemSpec.__name__}(widths=tuple(STEM_WIDTHS))",
                "stages": f"{stages_from_table.__name__}(STAGE_DIMS, BLOCKS)",
                "subsamples": f"[{from_row.__name__}({SubsampleSpec.__name__}, row) for row in SUBSAMPLES]",
                "resolution": "RESOLUTION",
                "num_classes": "num_classes",
            },
        )

    def cost(self, genome: Genome) -> count.Cost:
        """Mirrors `EfficientViT` layer by layer; tests hold it to fvcore's count of the built module.

        Rows and totals are of the model as built, with its BatchNorms (eval mode, 2 FLOPs per element);
        `fused` totals the same model after `fuse()`, the form EfficientViT's published figures are of.
        """
        self.check(genome)
        assert isinstance(genome, EfficientViTGenome)
        fused = count.total([row.count for row in cost_rows(genome, fused=True)])
        return count.Cost(genome.resolution, tuple(cost_rows(genome, fused=False)), fused=fused)

    def parts(self, genome: Genome) -> list[Part]:
        """Mirrors `EfficientViT.__init__`: the stem, each stage's subsample block and blocks, the head."""
        assert isinstance(genome, EfficientViTGenome)
        parts = [Part(STEM, (genome.resolution, *genome.stem.widths))]
        grid, dim = stem_grid(genome.resolution), genome.stem.widths[-1]
        for index, stage in enumerate(genome.stages):
            if index:
                spec = genome.subsamples[index - 1]
                key = (grid, dim, stage.dim, float(spec.expand_ratio), float(spec.se_ratio), float(spec.ffn_ratio))
                parts.append(Part(SUBSAMPLE, (*key, spec.dw_kernel)))
                grid = halve(grid)
            dim = stage.dim
            for block in stage.blocks:
                # A window at least as large as the grid is the grid itself: one key for all such windows.
                window = min(block.window, grid)
                key = (grid, dim, block.heads, block.key_dim, window, float(block.ffn_ratio))
                # One query kernel per head, last: the key's length follows the head count.
                parts.append(Part(BLOCK, (*key, block.dw_kernel, *block.q_kernels)))
        parts.append(Part(HEAD, (grid, dim, genome.num_classes)))
        return parts

    def describe(self, genome: Genome) -> dict[str, str]:
        assert isinstance(genome, EfficientViTGenome)
        blocks = [block for stage in genome.stages for block in stage.blocks]
        return {
            "depth": f"{len(blocks)} ({'-'.join(str(len(stage.blocks)) for stage in genome.stages)})",
            "widths": "-".join(str(stage.dim) for stage in genome.stages),
            "heads": " | ".join(",".join(str(block.heads) for block in stage.blocks) for stage in genome.stages),
            "attention": f"key {_spread(b.key_dim for b in blocks)}, window {_spread(b.window for b in blocks)}",
        }


def _suggest_ratio(trial: optuna.Trial, name: str, grid: tuple[float, float, float]) -> float:
    low, high, step = grid
    return trial.suggest_float(name, low, high, step=step)


def _spread(values: Iterable[int]) -> str:
    distinct = sorted(set(values))
    return str(distinct[0]) if len(distinct) == 1 else f"{distinct[0]}-{distinct[-1]}"


def _outside(value: float, bounds: tuple[float, float]) -> bool:
    return not bounds[0] <= value <= bounds[1]


def _bad_kernel(kernel: int) -> bool:
    return _outside(kernel, KERNEL_RANGE) or kernel % 2 == 0


def _check_structure(genome: EfficientViTGenome) -> None:
    """Rules any genome must meet to build, in the order a reader would check them."""
    if genome.resolution < 1:
        raise GenomeError(f"resolution must be positive, got {genome.resolution}")
    if genome.num_classes < 1:
        raise GenomeError(f"num_classes must be positive, got {genome.num_classes}")
    widths = genome.stem.widths
    if len(widths) != STEM_CONVS:
        raise GenomeError(
            f"stem: needs {STEM_CONVS} conv widths (four stride-2 convs make the stride 16), got {len(widths)}"
        )
    if min(widths) < 1:
        raise GenomeError(f"stem: conv widths must be positive, got {list(widths)}")
    if len(genome.subsamples) != len(genome.stages) - 1:
        raise GenomeError(
            f"{len(genome.stages)} stages need {len(genome.stages) - 1} subsample blocks (one between each "
            f"pair), got {len(genome.subsamples)}"
        )
    if widths[-1] != genome.stages[0].dim:
        raise GenomeError(f"stem: its last conv is {widths[-1]} wide but stage 0 is {genome.stages[0].dim} wide")
    for index, stage in enumerate(genome.stages):
        where = f"stage {index}"
        if _outside(stage.dim, DIM_RANGE):
            raise GenomeError(f"{where}: dim={stage.dim} is outside the space's range {DIM_RANGE[0]}..{DIM_RANGE[1]}")
        if _outside(len(stage.blocks), BLOCKS_PER_STAGE):
            raise GenomeError(
                f"{where}: the space admits {BLOCKS_PER_STAGE[0]} to {BLOCKS_PER_STAGE[1]} blocks per stage, "
                f"got {len(stage.blocks)}"
            )
        for position, block in enumerate(stage.blocks):
            _check_block(f"{where} block {position}", stage.dim, block)
    for index, spec in enumerate(genome.subsamples):
        where = f"subsample {index}"
        for field, value, bounds in (
            ("expand_ratio", spec.expand_ratio, EXPAND_RATIO_RANGE),
            ("se_ratio", spec.se_ratio, SE_RATIO_RANGE),
            ("ffn_ratio", spec.ffn_ratio, FFN_RATIO_RANGE),
        ):
            if _outside(value, bounds):
                raise GenomeError(
                    f"{where}: {field}={value:g} is outside the space's range {bounds[0]:g}..{bounds[1]:g}"
                )
        if _bad_kernel(spec.dw_kernel):
            raise GenomeError(f"{where}: dw_kernel={spec.dw_kernel} must be odd and from 1 to {KERNEL_RANGE[1]}")


def _check_block(where: str, dim: int, block: BlockSpec) -> None:
    if block.heads < 1 or dim % block.heads:
        raise GenomeError(f"{where}: heads={block.heads} does not divide dim={dim}")
    if _outside(block.key_dim, KEY_DIM_RANGE):
        raise GenomeError(
            f"{where}: key_dim={block.key_dim} is outside the space's range {KEY_DIM_RANGE[0]}..{KEY_DIM_RANGE[1]}"
        )
    if _outside(block.window, WINDOW_RANGE):
        raise GenomeError(
            f"{where}: window={block.window} is outside the space's range {WINDOW_RANGE[0]}..{WINDOW_RANGE[1]}"
        )
    if _outside(block.ffn_ratio, FFN_RATIO_RANGE):
        raise GenomeError(
            f"{where}: ffn_ratio={block.ffn_ratio:g} is outside the space's range "
            f"{FFN_RATIO_RANGE[0]:g}..{FFN_RATIO_RANGE[1]:g}"
        )
    if _bad_kernel(block.dw_kernel):
        raise GenomeError(f"{where}: dw_kernel={block.dw_kernel} must be odd and from 1 to {KERNEL_RANGE[1]}")
    if len(block.q_kernels) != block.heads:
        raise GenomeError(
            f"{where}: q_kernels has {len(block.q_kernels)} kernels for heads={block.heads}; give one per head"
        )
    for head, kernel in enumerate(block.q_kernels):
        if _bad_kernel(kernel):
            raise GenomeError(f"{where}: q_kernels[{head}]={kernel} must be odd and from 1 to {KERNEL_RANGE[1]}")


# ---- references --------------------------------------------------------------------------------


def _stem(dim: int) -> StemSpec:
    """EfficientViT's stem doubles its width at every conv up to the first stage's width."""
    return StemSpec(widths=(dim // 8, dim // 4, dim // 2, dim))


def _published(
    dims: tuple[int, ...], depths: tuple[int, ...], heads: tuple[int, ...], kernels: tuple[int, ...]
) -> EfficientViTGenome:
    """A published EfficientViT from its per-stage widths, depths and heads and its query-kernel list.

    Everything else is shared by M0-M5: key width 16, 7x7 windows, FFN ratio 2, 3x3 token mixers, and
    subsample blocks with a 4x inverted residual and a quarter-width squeeze-excite.

    One kernel list serves every block of every stage, and a block with h heads uses its first h entries.
    In microsoft/Cream `EfficientViT/classification/model/efficientvit.py` (and timm's
    `efficientvit_msra.py`, adapted from it) `CascadedGroupAttention` loops over its heads only, giving
    head i a depthwise query conv of kernel `kernels[i]` (padding `kernels[i] // 2`), and `EfficientViT`
    passes the one `kernels` list to every block. So M1's two-head first stage has query kernels 7, 5 and
    its three-head stages 7, 5, 3; M2's two-head last stage 7, 5; M5's three-head stages 7, 5, 3 and its
    four-head stage 7, 5, 3, 3. No published config has more heads than kernels.
    """
    stages = tuple(
        StageSpec(dim=dim, blocks=tuple(BlockSpec(heads=count_, q_kernels=kernels[:count_]) for _ in range(depth)))
        for dim, depth, count_ in zip(dims, depths, heads, strict=True)
    )
    return EfficientViTGenome(stem=_stem(dims[0]), stages=stages, subsamples=(SubsampleSpec(), SubsampleSpec()))


# dims, depths, heads per stage, query kernels per head position: arXiv 2305.07027 Table 1 and
# microsoft/Cream EfficientViT `classification/model/build.py` (timm `efficientvit_msra.py` agrees).
PUBLISHED = {
    "efficientvit_m0": ((64, 128, 192), (1, 2, 3), (4, 4, 4), (5, 5, 5, 5)),
    "efficientvit_m1": ((128, 144, 192), (1, 2, 3), (2, 3, 3), (7, 5, 3, 3)),
    "efficientvit_m2": ((128, 192, 224), (1, 2, 3), (4, 3, 2), (7, 5, 3, 3)),
    "efficientvit_m3": ((128, 240, 320), (1, 2, 3), (4, 3, 4), (5, 5, 5, 5)),
    "efficientvit_m4": ((128, 256, 384), (1, 2, 3), (4, 4, 4), (7, 5, 3, 3)),
    "efficientvit_m5": ((192, 288, 384), (1, 3, 4), (3, 3, 4), (7, 5, 3, 3)),
}

SPACE = EfficientViTSpace
