"""Scaling a turbovit genome to a limit: the widest copy (every width alike), or the deepest (one stage)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

from gas.models.hiera import BlockSpec

if TYPE_CHECKING:
    from search_spaces.turbovit import TurboViTGenome

# Stem widths a width-scaled genome steps through.
WIDTH_STEP = 8


def widest_within(
    genome: TurboViTGenome, fits: Callable[[TurboViTGenome], bool], step: int = WIDTH_STEP
) -> TurboViTGenome | None:
    """The widest copy of `genome` that `fits`: all widths scaled alike, the stem's in steps of `step`.

    Heads stay as they are (so head width scales), and each block width is rounded to a multiple of its
    heads; for Hiera, whose widths are the stem's times 2**stage, the ratios stay exact. Cost grows with
    width, so the first width that does not fit ends the search. None if even a `step`-wide stem does not.
    """
    best = None
    for stem_dim in range(step, 8 * genome.stem.dim + 1, step):
        factor = stem_dim / genome.stem.dim
        blocks = tuple(
            dataclasses.replace(block, dim=max(block.heads, round(block.dim * factor / block.heads) * block.heads))
            for block in genome.blocks
        )
        candidate = dataclasses.replace(genome, stem=dataclasses.replace(genome.stem, dim=stem_dim), blocks=blocks)
        if not fits(candidate):
            break
        best = candidate
    return best


def stages_of(genome: TurboViTGenome) -> list[list[int]]:
    """Block indices per stage: a stage starts at every Q-pool block."""
    stages: list[list[int]] = [[]]
    for index, block in enumerate(genome.blocks):
        if block.q_pool and stages[-1]:
            stages.append([])
        stages[-1].append(index)
    return stages


def deepest_within(
    genome: TurboViTGenome, fits: Callable[[TurboViTGenome], bool], max_depth: int
) -> TurboViTGenome | None:
    """The deepest copy of `genome` that `fits`, changing the depth of its deepest stage only.

    If `genome` does not fit, the last block of the stage with the most blocks (the later stage on a tie)
    goes, one at a time; a stage keeps at least one block, and its Q-pool block. If it fits, that stage
    grows by copies of its last block (without its Q-pool) while the next one still fits, up to
    `max_depth` blocks. None if no depth fits.
    """
    blocks = list(genome.blocks)

    def deepest_stage(candidate: list[BlockSpec], min_blocks: int = 1) -> list[int] | None:
        stages = stages_of(dataclasses.replace(genome, blocks=tuple(candidate)))
        return max(reversed([stage for stage in stages if len(stage) >= min_blocks]), key=len, default=None)

    def blocks_fit(candidate: list[BlockSpec]) -> bool:
        return fits(dataclasses.replace(genome, blocks=tuple(candidate)))

    if blocks_fit(blocks):
        while len(blocks) < max_depth:
            stage = deepest_stage(blocks)
            assert stage is not None
            grown = [*blocks[: stage[-1] + 1], dataclasses.replace(blocks[stage[-1]], q_pool=False)]
            grown += blocks[stage[-1] + 1 :]
            if not blocks_fit(grown):
                break
            blocks = grown
    while not blocks_fit(blocks):
        stage = deepest_stage(blocks, min_blocks=2)
        if stage is None:
            return None
        del blocks[stage[-1]]
    return dataclasses.replace(genome, blocks=tuple(blocks))


