"""Maintenance: the runs of a worker process its cluster saw die are recovered at once (see
sentinel); on django-q2 schedules, the reaper recovers actions whose worker (or host) died
unseen or whose task was lost, and fails uploads that never came or whose API process died;
purge deletes expired actions; clean_staging aborts the staging store's stale multipart uploads
and deletes what ended actions left there."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from .. import idempotency, webhooks
from ..choices import ActionStatus, ErrorCode, StepState
from ..logs import bound
from ..models import ActionEvent, ImageAction
from ..pipeline.context import action_id_named
from ..pipeline.registry import get_action_type
from ..pipeline.staging import UPLOADS
from ..stores import StoreError, StoreUnavailable, staging_store
from .ending import CANCELLED_MESSAGE, clean_up, end_owned, end_unclaimed
from .execution import DATA_RECEIVED, is_receiving_data
from .queueing import cluster_of, enqueue, send_task

log = logging.getLogger(__name__)

REAPER_SCHEDULE = "imageactions-reaper"
PURGE_SCHEDULE = "imageactions-purge"
WEBHOOK_SCHEDULE = "imageactions-webhooks"
STAGING_SCHEDULE = "imageactions-clean-staging"
# A multipart upload that is not its action's current one (a run that died before it could record
# its id, or whose id a later run replaced) is aborted once it is this old: long enough for the
# recording run to save its state, short enough that no dead upload lingers.
STAGING_UPLOAD_GRACE = 15 * 60
# How long a maintenance run waits out an unreachable database (a restart, a fail-over) before it
# gives up until its next run, and its pause between tries.
DATABASE_OUTAGE_SECONDS = 30
DATABASE_RETRY_PAUSE = 1.0


def stale_runs():
    """Running steps whose heartbeat is older than the reaper waits for: their worker is gone."""
    stale_before = timezone.now() - timedelta(seconds=max(settings.REAPER_INTERVAL, 3 * settings.HEARTBEAT_INTERVAL))
    return ImageAction.objects.filter(step_state=StepState.RUNNING, heartbeat_at__lt=stale_before)


def reap() -> dict:
    """Recover actions whose worker died or whose task was lost; fail those held too long."""
    return _maintenance_run(REAPER_SCHEDULE, settings.REAPER_INTERVAL, _reap)


def _reap() -> dict:
    now = timezone.now()
    counts = {"restarted": 0, "failed": 0, "requeued": 0, "expired_holds": 0}
    for action in stale_runs():
        _recover_dead_run(action, counts)
    lost_before = now - timedelta(seconds=settings.QUEUED_TASK_TIMEOUT)
    for action in ImageAction.objects.pending().filter(step_state=StepState.QUEUED, queued_at__lt=lost_before):
        # Only one reaper re-sends a lost task: the one whose UPDATE still sees the old queued_at.
        if ImageAction.objects.filter(pk=action.pk, step_state=StepState.QUEUED, queued_at=action.queued_at).update(
            queued_at=now
        ):
            counts["requeued"] += 1
            enqueue(action.pk)
    held_before = now - timedelta(seconds=settings.DATA_WAIT_TIMEOUT)
    # queued_at: when the action was created, or when its data arrived and it waits to be released.
    for action in ImageAction.objects.pending().filter(step_state=StepState.HELD, queued_at__lt=held_before):
        waited = _duration(settings.DATA_WAIT_TIMEOUT)
        if action.state.get(DATA_RECEIVED):
            message = f"The staged data was not imported within {waited} of staging it; stage it again."
        else:
            message = (
                f"No data was uploaded within {waited} of creating the action; "
                "create a new action and PUT the data to it promptly."
            )
        if end_unclaimed(
            action, ActionStatus.FAILURE, message, code=ErrorCode.DATA_NOT_RECEIVED, step_state=StepState.HELD
        ):
            counts["expired_holds"] += 1
    if any(counts.values()):
        log.info("reaper: %s", counts)
    return counts


def worker_died(worker: str, *, how: str = "stopped sending heartbeats") -> dict:
    """The cluster saw its worker process `worker` (host:pid) die (killed, out of memory, or
    stopped by django-q2 at its time limit): its runs are recovered now, as the reaper would
    once their heartbeats went stale; `how` ends the timeline's sentence "The worker W ..."."""
    counts = {"restarted": 0, "failed": 0}
    for action in ImageAction.objects.filter(step_state=StepState.RUNNING, worker=worker):
        _recover_dead_run(action, counts, how=how)
    if any(counts.values()):
        log.warning("worker %s died: %s", worker, counts)
    return counts


def _recover_dead_run(action: ImageAction, counts: dict, *, how: str = "stopped sending heartbeats") -> None:
    with bound(
        action_id=str(action.pk), action_type=action.action_type, worker=action.worker, request_id=action.request_id
    ):
        log.warning("recovering the run of a worker that %s", how)
        _recover(action, counts, how=how)


def _recover(action: ImageAction, counts: dict, *, how: str) -> None:
    action_type = get_action_type(action.action_type)
    step = action_type.steps[action.step_index] if action_type else None
    step_name = step.name if step else action.progress_step
    if is_receiving_data(action, action_type):
        _end_lost_upload(action, counts)
        return
    open_run = ActionEvent.objects.filter(action=action, finished_at__isnull=True).order_by("-started_at").first()
    # django-q2 kills a task that outlives its timeout; a restart would only be killed again.
    timed_out = bool(step and open_run and (timezone.now() - open_run.started_at).total_seconds() >= step.timeout)
    ActionEvent.objects.filter(action=action, finished_at__isnull=True).update(
        finished_at=timezone.now(),
        outcome="timed out" if timed_out else "worker lost",
        message=f"The {step_name} step ran past its {_duration(step.timeout)} limit."
        if timed_out
        else f"The worker {action.worker} {how}.",
    )
    if timed_out and not action.cancel_requested:
        if end_owned(
            action,
            action.run_token,
            ActionStatus.FAILURE,
            f"The {step_name} step did not finish within its time limit of {_duration(step.timeout)}; "
            "the action was stopped. Try again, or ask an operator about large images.",
            code=ErrorCode.TIMED_OUT,
        ):
            counts["failed"] += 1
        return
    if action.restarts < settings.MAX_STEP_RESTARTS and action_type is not None:
        # Never re-queue a cancelled action: no worker would claim it, so it would stay pending forever.
        rows = ImageAction.objects.filter(pk=action.pk)
        if rows.requeue_lost_run(token=action.run_token, restarts=action.restarts + 1):
            counts["restarted"] += 1
            send_task(action_type, action.pk, action.step_index, action.attempt)
            return
        if not rows.owned_by(action.run_token).filter(cancel_requested=True).exists():
            return  # another reaper run recovered it already
        action.cancel_requested = True
    message = (
        f"The worker running the {step_name} step stopped responding "
        f"({_times(action.restarts + 1)}); the action was stopped. Try again later."
    )
    if action.cancel_requested:
        status, message = ActionStatus.CANCELLED, CANCELLED_MESSAGE
    else:
        status = ActionStatus.FAILURE
    if end_owned(action, action.run_token, status, message, code=ErrorCode.WORKER_LOST):
        counts["failed"] += 1


def _end_lost_upload(action: ImageAction, counts: dict) -> None:
    """The API process receiving the action's data died (killed, or stopped before the upload
    ended): the bytes came over its connection, so no worker can run the step again."""
    message = (
        f"The upload was interrupted: the API server process receiving it ({action.worker}) stopped "
        "before the upload ended; create a new action and upload the data again."
    )
    ActionEvent.objects.filter(action=action, finished_at__isnull=True).update(
        finished_at=timezone.now(), outcome="upload lost", message=message
    )
    if action.cancel_requested:
        message = CANCELLED_MESSAGE
    status = ActionStatus.CANCELLED if action.cancel_requested else ActionStatus.FAILURE
    if end_owned(action, action.run_token, status, message, code=ErrorCode.UPLOAD_INTERRUPTED):
        counts["failed"] += 1


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:g} seconds"
    if seconds < 7200:
        return f"{seconds / 60:g} minutes"
    return f"{seconds / 3600:g} hours"


def _times(count: int) -> str:
    return "once" if count == 1 else f"{count} times"


def purge() -> int:
    """Delete expired actions with everything they left behind, and idempotency keys past their window."""
    return _maintenance_run(PURGE_SCHEDULE, settings.PURGE_INTERVAL, _purge)


def _purge() -> int:
    expired = ImageAction.objects.filter(expires_at__lt=timezone.now())
    count = 0
    for action in expired.iterator(chunk_size=500):
        clean_up(action)
        action.delete()
        count += 1
    idempotency.forget_expired()
    if count:
        log.info("purged %d expired actions", count)
    return count


def clean_staging(*, grace: float = STAGING_UPLOAD_GRACE, report: Callable[[str], None] | None = None) -> dict:
    """Abort the staging store's stale multipart uploads and delete the objects ended actions left
    there (what a host that died mid-step, or an unreachable store at an action's end, left).

    An upload is stale when its action ended or is unknown, or when it is not the upload the
    action's state records and is older than `grace` seconds. `report` gets one line per thing
    removed. Nothing to do without a staging store.
    """
    return _maintenance_run(STAGING_SCHEDULE, settings.PURGE_INTERVAL, lambda: _clean_staging(grace, report))


def _clean_staging(grace: float, report: Callable[[str], None] | None) -> dict:
    counts = {"uploads_aborted": 0, "objects_deleted": 0, "failed": 0}
    store = staging_store()
    if store is None:
        return counts
    report = report or (lambda line: log.info("clean_staging: %s", line))
    uploads = store.list_uploads()
    keys = store.list_keys()
    pending = _pending_states({action_id_named(item) for item in [*(u.key for u in uploads), *keys]} - {None})
    old_before = timezone.now() - timedelta(seconds=grace)
    for upload in uploads:
        action_id = action_id_named(upload.key)
        if action_id is None:
            continue  # not an action's: not ours to abort
        state = pending.get(action_id)
        current = state is not None and upload.upload_id in state.get(UPLOADS, {}).values()
        if state is not None and (current or upload.initiated > old_before):
            continue
        what = f"upload {upload.upload_id} of {store.prefix}{upload.key}"
        if _removed(counts, report, what, store.abort_upload, upload.key, upload.upload_id):
            counts["uploads_aborted"] += 1
            why = "not its running action's current upload" if state is not None else "its action ended or is gone"
            report(f"aborted {what} ({why})")
    for key in keys:
        action_id = action_id_named(key)
        if action_id is None or action_id in pending:
            continue
        if _removed(counts, report, f"{store.prefix}{key}", store.delete, key):
            counts["objects_deleted"] += 1
            report(f"deleted {store.prefix}{key} (its action ended or is gone)")
    return counts


def _removed(counts: dict, report: Callable[[str], None], what: str, remove: Callable, *args) -> bool:
    """remove(*args); a refusal of the staging store is reported and counted in counts["failed"],
    and the clean-up goes on with the next item. An unreachable store ends the run (StoreUnavailable):
    every item would wait out its timeout."""
    try:
        remove(*args)
    except StoreUnavailable:
        raise
    except StoreError as error:
        log.warning("clean_staging: could not remove %s", what, exc_info=True)
        counts["failed"] += 1
        report(f"could not remove {what}: {error}")
        return False
    return True


def _pending_states(action_ids: set[str]) -> dict[str, dict]:
    """The state of each of the actions that has not ended; ended and unknown ones are left out."""
    rows = ImageAction.objects.pending().filter(pk__in=action_ids).values_list("pk", "state")
    return {str(pk): state or {} for pk, state in rows}


def send_notifications() -> int:
    """Queue the webhook notifications that are due: retries, and any whose first attempt was
    never queued (the process that changed the status died before it could)."""
    return _maintenance_run(WEBHOOK_SCHEDULE, webhooks.sweep_interval(), webhooks.dispatch)


def _maintenance_run(schedule: str, interval: float, work: Callable):
    """Run `work` and bring the schedule's next run to `interval` from now, however it ended.

    A run that meets an unreachable database tries again for a while: the reaper is what finishes
    the actions a database restart interrupted, and a failed run would otherwise wait for
    django-q2's own schedule, a minute away.
    """
    deadline = time.monotonic() + DATABASE_OUTAGE_SECONDS
    try:
        while True:
            try:
                return work()
            except (OperationalError, InterfaceError):  # unreachable, or a connection that broke
                if time.monotonic() > deadline:
                    raise
                log.warning("%s: the database failed; trying again", schedule, exc_info=True)
                connection.close()  # a broken connection is not reused; the next query reconnects
                time.sleep(DATABASE_RETRY_PAUSE)
    finally:
        try:
            _schedule_next(schedule, interval)
        except DatabaseError:
            log.warning("%s: could not set its next run", schedule, exc_info=True)
            connection.close()


def _schedule_next(name: str, seconds: float) -> None:
    """Bring the schedule's next run to `seconds` from now: django-q2's own types count in minutes."""
    from django_q.models import Schedule

    Schedule.objects.filter(name=name).update(next_run=timezone.now() + timedelta(seconds=seconds))


def ensure_schedules() -> None:
    """Create (or update) the reaper, purge and webhook schedules; run when a worker starts."""
    from django_q.models import Schedule

    with transaction.atomic():
        # Workers of several pools often start together; Schedule.name is not unique, so without
        # this lock two update_or_create calls both insert, and every later start fails with
        # MultipleObjectsReturned. (SQLite's IMMEDIATE transactions already serialise this.)
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(hashtext('imageactions-schedules'))")
        _ensure_schedules(Schedule)


def _ensure_schedules(Schedule) -> None:
    schedules = [
        (REAPER_SCHEDULE, "imageactions.runner.reap", settings.REAPER_INTERVAL),
        (PURGE_SCHEDULE, "imageactions.runner.purge", settings.PURGE_INTERVAL),
        (WEBHOOK_SCHEDULE, "imageactions.runner.send_notifications", webhooks.sweep_interval()),
    ]
    if settings.STAGING_STORE:
        schedules.append((STAGING_SCHEDULE, "imageactions.runner.clean_staging", settings.PURGE_INTERVAL))
    else:
        Schedule.objects.filter(name=STAGING_SCHEDULE).delete()
    for name, func, seconds in schedules:
        # Duplicates left by starts before the lock existed: keep the oldest.
        for duplicate in Schedule.objects.filter(name=name).order_by("id")[1:]:
            duplicate.delete()
        Schedule.objects.update_or_create(
            name=name,
            defaults={
                "func": func,
                "schedule_type": Schedule.MINUTES,
                "minutes": max(1, int(seconds // 60)),
                "repeats": -1,
                "cluster": cluster_of(settings.DEFAULT_POOL),
                "next_run": timezone.now() + timedelta(seconds=min(seconds, 5)),
            },
        )
