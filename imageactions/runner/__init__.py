"""Runs action pipelines on django-q2 workers; the one place that changes an action's status.

queueing: creating actions, the "next step or finish" decision, cancel and retry requests;
execution: the step task with its heartbeat and retries; ending: success, failure, cancel and
clean-up (with the staged bytes, and the sweep of ended actions' scratch); maintenance: the
reaper, purge, the webhook sweep, the staging store's clean-up and their schedules; sentinel: what
the runner adds to django-q2's cluster (hand-backs of dead workers, schedules on time, graceful
stops). Every status change is one of ImageActionQuerySet's named transitions (see
choices.STEP_TRANSITIONS), which also records the change's webhook notification.
"""

from ..pipeline.context import scratch_dir
from .ending import clean_up, sweep_scratch, worker_name
from .execution import receive_data, release_held, run_step
from .maintenance import (
    PURGE_SCHEDULE,
    REAPER_SCHEDULE,
    STAGING_SCHEDULE,
    WEBHOOK_SCHEDULE,
    clean_staging,
    ensure_schedules,
    purge,
    reap,
    send_notifications,
    stale_runs,
)
from .queueing import RUN_STEP_TASK, cluster_of, create_action, request_cancel, retry_failed, send_task

__all__ = [
    "PURGE_SCHEDULE",
    "REAPER_SCHEDULE",
    "STAGING_SCHEDULE",
    "WEBHOOK_SCHEDULE",
    "RUN_STEP_TASK",
    "clean_staging",
    "clean_up",
    "cluster_of",
    "create_action",
    "ensure_schedules",
    "purge",
    "reap",
    "receive_data",
    "release_held",
    "request_cancel",
    "retry_failed",
    "run_step",
    "scratch_dir",
    "send_notifications",
    "send_task",
    "stale_runs",
    "sweep_scratch",
    "worker_name",
]
