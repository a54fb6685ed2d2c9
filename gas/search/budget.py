"""What a search may spend, and the one check that decides whether a proposal is feasible."""

from __future__ import annotations

from dataclasses import dataclass

from gas.cost import Cost
from gas.units import compact_count, format_count


@dataclass(frozen=True)
class Budget:
    """Limits on a genome's cost at 224px: FLOPs (fvcore convention) and, optionally, parameters."""

    flops: int
    params: int | None = None

    def check(self, cost: Cost) -> tuple[dict[str, float], list[str]]:
        """The constraints Optuna records for `cost` and the reasons it is over a limit (none: feasible).

        Constraints are relative overshoots, `(cost - limit) / limit`, so FLOPs and params weigh alike;
        a value <= 0 is within the limit.
        """
        constraints = {"flops": (cost.flops - self.flops) / self.flops}
        reasons = []
        if cost.flops > self.flops:
            reasons.append(f"FLOPs {format_count(cost.flops)} over the {compact_count(self.flops)} budget")
        if self.params is not None:
            constraints["params"] = (cost.params - self.params) / self.params
            if cost.params > self.params:
                reasons.append(f"params {format_count(cost.params)} over {compact_count(self.params)}")
        return constraints, reasons

    def allows(self, cost: Cost) -> bool:
        return not self.check(cost)[1]

    def describe(self) -> str:
        """'2.5G FLOPs' or '2.5G FLOPs and 15M params', for messages."""
        text = f"{compact_count(self.flops)} FLOPs"
        return text + (f" and {compact_count(self.params)} params" if self.params is not None else "")
