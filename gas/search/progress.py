"""One status line for a running search: trials done of total, proposals, failures, best accuracy, front size."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from gas import study as record


class Progress:
    """A tqdm bar over trained trials, its postfix read from the study after every event."""

    def __init__(self, study: optuna.Study, total: int, enabled: bool) -> None:
        from tqdm import tqdm

        self.study = study
        done = len(record.trained_trials(study))
        self.bar = tqdm(total=total, initial=min(done, total), unit="trial", disable=not enabled, dynamic_ncols=True)
        self.refresh()

    def refresh(self, completed: int = 0) -> None:
        proposals = record.proposals(self.study)
        feasible = sum(bool(t.user_attrs[record.TrialKey.FEASIBLE]) for t in proposals)
        failed = len(record.failed_trials(self.study))
        accuracies = [t.values[0] for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
        self.bar.update(completed)
        self.bar.set_postfix_str(
            f"proposed {len(proposals)} ({feasible / max(len(proposals), 1):.0%} feasible), failed {failed}, "
            f"best acc {max(accuracies, default=float('nan')):.3f}, front {len(self.study.best_trials)}",
            refresh=True,
        )

    def close(self) -> None:
        self.bar.close()
