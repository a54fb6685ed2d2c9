"""What an EfficientViT genome is, what the space admits, and what its sampler draws from."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, Self

from gas.errors import GenomeError
from gas.genome import Genome
from gas.models.efficientvit import StageSpec, StemSpec, SubsampleSpec


@dataclasses.dataclass(frozen=True, kw_only=True)
class EfficientViTGenome(Genome):
    """One architecture: stem, stages, and one subsample block between each pair of stages."""

    space: str = "efficientvit"
    stem: StemSpec
    stages: tuple[StageSpec, ...]
    subsamples: tuple[SubsampleSpec, ...]

    item_names: ClassVar[Mapping[str, str]] = {"stages": "stage", "subsamples": "subsample"}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Parse a genome document; blocks written before kernels were per head still load (see below)."""
        return super().from_dict(_with_q_kernel_lists(data))


# What the space admits: wide enough for EfficientViT-M5 and well beyond; the sampler draws from less.
DIM_RANGE = (8, 1024)
BLOCKS_PER_STAGE = (1, 12)
KEY_DIM_RANGE = (4, 64)
WINDOW_RANGE = (1, 32)
FFN_RATIO_RANGE = (0.5, 8.0)
EXPAND_RATIO_RANGE = (1.0, 8.0)
SE_RATIO_RANGE = (0.0, 1.0)
KERNEL_RANGE = (1, 9)  # odd only: every depthwise conv pads to keep (or exactly halve) the grid
STAGES_RANGE = (1, 5)

# What the sampler draws, aimed at budgets under a GFLOP at 224px (EfficientViT-M5 is 0.52G). Widths
# grow from stage to stage by whole steps of 16 (so heads of 1, 2, 4 always divide them); a stage on 4x
# fewer tokens may afford more blocks, so later stages may be deeper.
FIRST_DIM = (48, 224, 16)  # low, high, step
WIDEN_STEPS = (0, 8)  # a later stage is wider by this many steps of 16
DEPTHS = {"first": (1, 2), "middle": (1, 3), "last": (1, 4)}
MAX_HEADS = (1, 6)  # drawn, then lowered to the largest count that divides the width
KEY_DIMS = (8, 32, 8)
WINDOWS = (4, 8)
FFN_RATIOS = (1.0, 3.0, 0.5)
EXPAND_RATIOS = (2.0, 4.0, 1.0)
DW_KERNELS = (3, 5)
# Drawn per head, not once per block: the published networks give their heads different kernels (7, 5,
# 3, 3 in M1/M2/M4/M5), a pattern one draw per block could never reach. Names stay stable per head
# position (`stage1.block0.head2.q_kernel`), which is what TPE needs, and a block adds at most six draws.
Q_KERNELS = (3, 5, 7)
SE_RATIOS = (0.0, 0.25)


# Blocks written before query kernels were per head carry one `q_kernel` for every head, or none when it
# was the default of that time, 5.
LEGACY_Q_KERNEL = 5


def _with_q_kernel_lists(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """`data` with each block's older `q_kernel` (or its absence) spelled as `q_kernels`, one per head.

    Anything malformed is passed on untouched, so the parser names it as it would any other mistake.
    """
    stages = data.get("stages")
    if not isinstance(stages, list | tuple):
        return data
    upgraded_stages = []
    for index, stage in enumerate(stages):
        blocks = stage.get("blocks") if isinstance(stage, Mapping) else None
        if not isinstance(blocks, list | tuple):
            upgraded_stages.append(stage)
            continue
        upgraded = [
            _with_q_kernel_list(f"stage {index} block {position}", block) for position, block in enumerate(blocks)
        ]
        upgraded_stages.append({**stage, "blocks": upgraded})
    return {**data, "stages": upgraded_stages}


def _with_q_kernel_list(where: str, block: Any) -> Any:
    if not isinstance(block, Mapping):
        return block
    if "q_kernels" in block:
        if "q_kernel" in block:
            raise GenomeError(f"{where}: give q_kernels (one per head) or the older q_kernel, not both")
        return block
    heads = block.get("heads")
    # Past the widest stage no head count can be valid; the rules name that, so no list is built for it.
    if isinstance(heads, bool) or not isinstance(heads, int) or not 1 <= heads <= DIM_RANGE[1]:
        heads = 1
    kernel = block.get("q_kernel", LEGACY_Q_KERNEL)
    return {**{key: value for key, value in block.items() if key != "q_kernel"}, "q_kernels": [kernel] * heads}
