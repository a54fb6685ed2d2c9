"""`gas cost --check`: a genome's analytic count beside fvcore's count of the module it builds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gas.cost import Count
from gas.fvcore_count import fvcore_flops
from gas.genome import Genome
from gas.space import SearchSpace

# The analytic FLOPs may differ from fvcore's by this share of fvcore's count; parameters must be equal.
FLOPS_TOLERANCE = 0.005


@dataclass(frozen=True)
class Agreement:
    """One form of a model (as built, or fused for inference): its analytic count beside the built module's."""

    form: str
    analytic: Count
    built_params: int  # parameters of the built module
    fvcore_flops: int

    @property
    def flops_difference(self) -> float:
        """(analytic - fvcore) / fvcore; a nonzero analytic count against fvcore's zero is a 100% miss."""
        if self.fvcore_flops == 0:
            return 0.0 if self.analytic.flops == 0 else 1.0
        return (self.analytic.flops - self.fvcore_flops) / self.fvcore_flops

    @property
    def agrees(self) -> bool:
        return self.analytic.params == self.built_params and abs(self.flops_difference) <= FLOPS_TOLERANCE

    def to_dict(self) -> dict[str, Any]:
        return {
            "form": self.form,
            "analytic": {"params": self.analytic.params, "flops": self.analytic.flops},
            "built": {"params": self.built_params, "flops": self.fvcore_flops},
            "flops_difference": self.flops_difference,
            "agrees": self.agrees,
        }


def check_cost(space: SearchSpace, genome: Genome) -> list[Agreement]:
    """Build `genome` and count it with fvcore; for spaces with an inference form, count its fused model too."""
    cost = space.cost(genome)
    model = space.build(genome)
    checks = [
        Agreement(
            "as built",
            Count(cost.params, cost.flops),
            sum(parameter.numel() for parameter in model.parameters()),
            fvcore_flops(model, genome.resolution),
        )
    ]
    fuse = getattr(model, "fuse", None)
    if cost.fused is not None and callable(fuse):
        # The published figures of such networks are of the fused form, so its count is checked as well.
        fused = fuse()
        checks.append(
            Agreement(
                "fused",
                cost.fused,
                sum(parameter.numel() for parameter in fused.parameters()),
                fvcore_flops(fused, genome.resolution),
            )
        )
    return checks
