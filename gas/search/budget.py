"""What a search may spend, and the one check that decides whether a proposal is feasible."""

from __future__ import annotations

from dataclasses import dataclass

from gas.cost import Cost
from gas.errors import GasError
from gas.units import compact_count, format_count, format_duration


@dataclass(frozen=True)
class Budget:
    """Limits on a genome at 224px: FLOPs (fvcore convention), parameters, latency on the target device.

    Any may be absent, but not all: a search needs something to stay within.
    """

    flops: int | None
    params: int | None = None
    latency: float | None = None  # seconds

    def __post_init__(self) -> None:
        if self.flops is None and self.latency is None:
            raise GasError("give a FLOPs budget (--budget 2.5G) or a latency limit (--max-latency 25ms), or both")

    def check(self, cost: Cost, latency: float | None = None) -> tuple[dict[str, float], list[str]]:
        """The constraints Optuna records for `cost` (and `latency`, predicted or measured) and the reasons it
        is over a limit (none: feasible).

        Constraints are relative overshoots, `(value - limit) / limit`, so every limit weighs alike; a value
        <= 0 is within the limit.
        """
        constraints: dict[str, float] = {}
        reasons = []
        if self.flops is not None:
            constraints["flops"] = (cost.flops - self.flops) / self.flops
            if cost.flops > self.flops:
                reasons.append(f"FLOPs {format_count(cost.flops)} over the {compact_count(self.flops)} budget")
        if self.params is not None:
            constraints["params"] = (cost.params - self.params) / self.params
            if cost.params > self.params:
                reasons.append(f"params {format_count(cost.params)} over {compact_count(self.params)}")
        if self.latency is not None and latency is not None:
            constraints["latency"] = (latency - self.latency) / self.latency
            if latency > self.latency:
                reasons.append(f"latency {format_duration(latency)} over the {format_duration(self.latency)} limit")
        return constraints, reasons

    def allows(self, cost: Cost) -> bool:
        return not self.check(cost)[1]

    def describe(self) -> str:
        """'2.5G FLOPs', '2.5G FLOPs and 15M params' or '25.0ms', for messages."""
        parts = []
        if self.flops is not None:
            parts.append(f"{compact_count(self.flops)} FLOPs")
        if self.params is not None:
            parts.append(f"{compact_count(self.params)} params")
        if self.latency is not None:
            parts.append(format_duration(self.latency))
        return " and ".join(parts)
