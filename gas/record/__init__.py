"""The study record: every attribute a study and its trials carry, how each is written, and its typed reads.

A trial's state says what happened to its genome:
    COMPLETE  trained to the end within budget; values are (accuracy, FLOPs)
    PRUNED    rejected before training: over budget (constraint > 0, reason in `infeasible_reason`); or
              stopped early at a rung (feasible constraint, `stopped_at` and `accuracy_history`)
    FAIL      raised, ran out of memory or diverged while training (reason in `error`), or interrupted
              (another trial carries `requeued_from` = its number and trains the same genome again)
    RUNNING   in flight (a search that was killed leaves these; the next run re-queues them)
A proposal that repeats a genome already trained is never trained again: it takes the earlier training's
outcome (state, values, constraints and what training measured) and `duplicate_of` = that trial's number.

Only the search driver writes a study (and the audit its record), through the `write_*` functions here;
everything else reads it as typed values: `trial_record`, `study_record`, `latency_record`, `audit_record`.
No other module reads user attributes, so a study written by any version of gas reads the same way.

    trial     a trial's attributes, `TrialRecord`, and the writers of each kind of trial
    search    the study's: settings, data, latency target, audit
"""

from gas.record.search import (
    DIRECTIONS,
    LEGACY_PROXY_SETTINGS,
    OBJECTIVES,
    AuditPair,
    AuditRecord,
    DataRecord,
    LatencyAccuracy,
    LatencyRecord,
    NoiseRecord,
    StudyKey,
    StudyRecord,
    audit_record,
    latency_record,
    noise_record,
    settings_differences,
    study_record,
    write_audit,
    write_latency,
    write_noise,
    write_search,
)
from gas.record.trial import (
    TrialKey,
    TrialRecord,
    Worker,
    genome_key,
    requeue,
    trial_genome,
    trial_record,
    write_constraints,
    write_dispatch,
    write_duplicate,
    write_failure,
    write_infeasible,
    write_measured_latency,
    write_over_limit,
    write_proposal,
    write_result,
    write_retried,
    write_stopped,
    write_worker,
)

__all__ = [
    "DIRECTIONS",
    "LEGACY_PROXY_SETTINGS",
    "OBJECTIVES",
    "AuditPair",
    "AuditRecord",
    "DataRecord",
    "LatencyAccuracy",
    "LatencyRecord",
    "NoiseRecord",
    "StudyKey",
    "StudyRecord",
    "TrialKey",
    "TrialRecord",
    "Worker",
    "audit_record",
    "genome_key",
    "latency_record",
    "noise_record",
    "requeue",
    "settings_differences",
    "study_record",
    "trial_genome",
    "trial_record",
    "write_audit",
    "write_constraints",
    "write_dispatch",
    "write_duplicate",
    "write_failure",
    "write_infeasible",
    "write_latency",
    "write_measured_latency",
    "write_noise",
    "write_over_limit",
    "write_proposal",
    "write_result",
    "write_retried",
    "write_search",
    "write_stopped",
    "write_worker",
]
