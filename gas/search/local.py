"""The in-process driver: the engine's proposals evaluated one after another in this process, no Ray.

What benchmarks and tests use when the cluster is not what they measure; `gas search` runs the Ray Tune
driver (`gas.search.ray_tune`) on the same engine, so both write the same study for the same seed.
"""

from __future__ import annotations

import time

from gas.search.engine import Engine, SearchConfig, SearchOutcome, evaluate_proposal, prepare
from gas.search.progress import Progress


def search_in_process(config: SearchConfig) -> SearchOutcome:
    """Run (or resume) a search here until the study holds `config.trials` trained trials."""
    started = time.monotonic()
    engine = Engine(*prepare(config))
    engine.requeue()
    progress = Progress(engine.study, config.trials, config.progress)
    engine.on_rejected = progress.refresh
    interrupted = False
    try:
        with engine.interrupts.installed():  # `kill` stops it as Ctrl-C does; writes to the study are whole
            while engine.remaining() > 0:
                proposal = engine.propose()
                if proposal is None:
                    break
                number = proposal.number

                def report(entry: dict[str, float], number: int = number) -> bool:
                    return engine.report(number, int(entry["epoch"]), entry["accuracy"])

                engine.record(number, evaluate_proposal(proposal, report=report))
                progress.refresh(completed=1)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        interrupted = engine.abandon() or interrupted
        engine.finish()
        progress.close()
    return SearchOutcome.of(engine, interrupted, time.monotonic() - started)
