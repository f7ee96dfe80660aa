"""Every write: chains, runs, the worker side of steps, the reconciler, schedules, imports,
purges and tokens. Admin, API, commands, tasks and beat all come through here.

    chains      validate steps, save, duplicate, delete chains
    runs        start, publish, retry, finish, cancel, delete runs
    attempts    keep a step's attempt before another one replaces it
    execution   the worker side: execute a step or a map item, mark it running
    workflows   conditions, map steps, approvals and sub-chains: steps that pause a run
    versions    a chain's numbered versions: record, compare, restore
    reconcile   publish, recover and resume what the broker or a worker lost
    metrics     add to the stored Prometheus counters and histograms (chains.metrics)
    schedules   save schedules, keep beat in step, start a firing's run
    imports     chains from an export file
    purge       remove old finished runs
    bulk        cancel, retry or delete many runs at once, in chunks or as a job
    tokens      renew a user's API token
    notifications  rules; deliveries by email and signed webhook (no SSRF); resend
"""
from chains.services.attempts import attempt_failed, attempts_keep
from chains.services.bulk import bulk_job_create, bulk_job_run, runs_bulk
from chains.services.chains import (
    chain_delete,
    chain_duplicate,
    chain_problems,
    chain_save,
    chain_step_specs,
    check_chain_fields,
    check_stage_fit,
    check_subchains,
    max_step_time_limit,
    validate_step_specs,
    version_restore,
)
from chains.services.execution import (
    RetryPolicy,
    map_item_execute,
    step_execute,
    step_fail_by_task_id,
    step_retry_policy,
)
from chains.services.imports import chains_import
from chains.services.notifications import (
    delivery_attempt,
    delivery_backoff,
    delivery_resend,
    notify_run_ended,
    notify_run_waiting,
    rule_delete,
    rule_save,
)
from chains.services.purge import runs_purge, versions_purge
from chains.services.reconcile import reconcile_runs, recover_orphans
from chains.services.runs import (
    parent_step_fail,
    run_again,
    run_cancel,
    run_create,
    run_delete,
    run_end,
    run_finish,
    run_publish,
    run_retry,
    run_start,
    run_start_once,
    run_submit_task,
    runs_promote,
    runs_promote_after,
    step_fail,
)
from chains.services.schedules import (
    SCHEDULE_FIELDS,
    run_start_scheduled,
    schedule_check,
    schedule_delete,
    schedule_disable,
    schedule_save,
    schedule_sync,
    schedule_unsync,
)
from chains.services.tokens import token_regenerate
from chains.services.versions import (
    chain_definition,
    current_version,
    version_diff,
    version_specs,
)
from chains.services.workflows import (
    StepSkipped,
    approvals_time_out,
    child_run_ended,
    map_counts,
    map_item_fail,
    map_item_fail_by_task_id,
    may_decide,
    pending_approval,
    run_decide,
    step_continue,
    waiting_children_ended,
)

__all__ = [
    "RetryPolicy", "SCHEDULE_FIELDS", "StepSkipped", "approvals_time_out", "attempt_failed",
    "attempts_keep", "bulk_job_create", "bulk_job_run", "chain_definition", "chain_delete",
    "chain_duplicate", "chain_problems", "chain_save", "chain_step_specs", "chains_import",
    "check_chain_fields", "check_stage_fit", "check_subchains", "child_run_ended",
    "current_version", "map_counts", "map_item_execute", "map_item_fail",
    "map_item_fail_by_task_id", "max_step_time_limit", "may_decide", "parent_step_fail",
    "pending_approval", "reconcile_runs", "recover_orphans", "run_again", "run_cancel",
    "run_create", "run_decide", "run_delete", "run_end", "run_finish", "run_publish", "run_retry",
    "run_start", "run_start_once", "run_start_scheduled", "run_submit_task", "runs_bulk",
    "runs_promote", "runs_promote_after", "runs_purge", "schedule_check", "schedule_delete",
    "schedule_disable", "schedule_save", "schedule_sync", "schedule_unsync", "step_continue",
    "step_execute", "step_fail", "step_fail_by_task_id", "step_retry_policy", "token_regenerate",
    "validate_step_specs", "version_diff", "version_restore", "version_specs", "versions_purge",
    "waiting_children_ended",
]
# Notifications (services.notifications).
__all__ += ["delivery_attempt", "delivery_backoff", "delivery_resend", "notify_run_ended",
            "notify_run_waiting", "rule_delete", "rule_save"]
