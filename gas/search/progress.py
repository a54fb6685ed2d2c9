"""One status line for a running search: trials done of total, proposals, failures, best accuracy, front size."""

from __future__ import annotations

import math
import time

import optuna
from optuna.trial import TrialState

from gas.record import trial_record
from gas.study import failed_trials, proposals, trained_trials

# Reading the study for the postfix takes longer as it grows; between trained trials, at most this often.
REFRESH_SECONDS = 2.0


class Progress:
    """A tqdm bar over trainings (each seed of a replicated trial is one, as `--trials` counts them), its postfix
    read from the study after every training and, in between (proposals, a long run of rejections), every
    couple of seconds."""

    def __init__(self, study: optuna.Study, total: int, enabled: bool) -> None:
        from tqdm import tqdm

        self.study = study
        self.shown = -math.inf
        done = sum(trial_record(t).seeds for t in trained_trials(study))
        self.bar = tqdm(total=total, initial=min(done, total), unit="training", disable=not enabled, dynamic_ncols=True)
        self.refresh()

    def refresh(self, completed: int = 0) -> None:
        now = time.monotonic()
        if self.bar.disable or (not completed and now - self.shown < REFRESH_SECONDS):
            return
        self.shown = now
        proposed = proposals(self.study)
        feasible = sum(bool(trial_record(t).feasible) for t in proposed)
        failed = len(failed_trials(self.study))
        accuracies = [t.values[0] for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
        self.bar.update(completed)
        self.bar.set_postfix_str(
            f"proposed {len(proposed)} ({feasible / max(len(proposed), 1):.0%} feasible), failed {failed}, "
            f"best acc {max(accuracies, default=float('nan')):.3f}, front {len(self.study.best_trials)}",
            refresh=True,
        )

    def close(self) -> None:
        self.bar.close()
