"""The search: an engine that proposes and records genomes on an Optuna study, and the drivers that train them.

from gas.search import SearchConfig, run_search          # Ray Tune workers (what `gas search` runs)
from gas.search import search_in_process                 # one process, no cluster

outcome = search_in_process(SearchConfig(budget=2_500_000_000, trials=4))
print(outcome.trained, len(outcome.study.best_trials))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gas.defaults import SAMPLERS
from gas.search.budget import Budget
from gas.search.config import SearchConfig, make_sampler, prepare
from gas.search.engine import Engine, SearchOutcome
from gas.search.jobs import Proposal
from gas.search.local import search_in_process

if TYPE_CHECKING:
    from gas.search.ray_tune import run_search

__all__ = [
    "SAMPLERS",
    "Budget",
    "Engine",
    "Proposal",
    "SearchConfig",
    "SearchOutcome",
    "make_sampler",
    "prepare",
    "run_search",
    "search_in_process",
]


def __getattr__(name: str) -> Any:
    # Ray takes seconds to import; only the Ray driver needs it.
    if name == "run_search":
        from gas.search.ray_tune import run_search

        return run_search
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
