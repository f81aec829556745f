"""Runs action pipelines on django-q2 workers; the one place that changes an action's status.

Every status change is a conditional UPDATE (or a row lock) keyed on the action's current
step and run token, so two workers never run one step and a cancel is never lost.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import time
import traceback
import uuid
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connection, transaction
from django.db.models.functions import Coalesce
from django.utils import timezone

from .choices import ActionStatus, StepState
from .models import ActionEvent, ImageAction
from .pipeline import ActionCancelled, ActionType, RetryableStepError, Step, StepError, get_action_type

log = logging.getLogger(__name__)

RUN_STEP_TASK = "imageactions.runner.run_step"
REAPER_SCHEDULE = "imageactions-reaper"
PURGE_SCHEDULE = "imageactions-purge"
CANCELLED_MESSAGE = "The action was cancelled."


class RunSuperseded(Exception):
    """This run no longer owns the action (the reaper re-queued it, or it was finished)."""


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def cluster_of(pool: str) -> str:
    """The django-q2 cluster (broker queue) that serves a worker pool."""
    return settings.QUEUE_PREFIX + pool


def scratch_dir(action_id) -> Path:
    return settings.SCRATCH_DIR / str(action_id)


def _expiry(now):
    return now + timedelta(seconds=settings.ACTION_TTL)


def _ended(status: str, message: str) -> dict:
    """The columns of an action that ends now with `status` and `message`."""
    now = timezone.now()
    return dict(
        status=status,
        step_state=StepState.DONE,
        run_token=None,
        message=message,
        finished_at=now,
        expires_at=_expiry(now),
    )


# -- creating and queueing ---------------------------------------------------------------


def create_action(action_type: ActionType, *, owner: str, input_data: dict) -> ImageAction:
    """Record a new action and queue its first step once the row is committed."""
    held = action_type.awaits_data(input_data)
    action = ImageAction.objects.create(
        action_type=action_type.name,
        owner=owner,
        input=input_data,
        image_properties=action_type.image_properties(input_data),
        status=ActionStatus.WAITING,
        step_state=StepState.HELD if held else StepState.QUEUED,
        queued_at=timezone.now(),
    )
    if not held:
        transaction.on_commit(lambda: _enqueue_or_finish(action.pk))
    return action


def _next_step_index(action_type: ActionType, action: ImageAction, start: int) -> int | None:
    for index in range(start, len(action_type.steps)):
        if action_type.steps[index].applies(action):
            return index
    return None


def _enqueue_or_finish(action_id) -> None:
    """Queue the action's current step, skipping steps that do not apply to it."""
    action = ImageAction.objects.get(pk=action_id)
    action_type = get_action_type(action.action_type)
    if action_type is None:
        _fail_unowned(action, f"The action type {action.action_type!r} is not installed on this service.")
        return
    index = _next_step_index(action_type, action, action.step_index)
    if index is None:
        _finish_success(action, action_type, token=None)
        return
    if index != action.step_index:
        updated = ImageAction.objects.filter(
            pk=action.pk, step_index=action.step_index, step_state=StepState.QUEUED
        ).update(step_index=index)
        if not updated:
            return
    _send_task(action_type, action.action_type, action.pk, index, action.attempt)


def _send_task(action_type: ActionType, type_name: str, action_id, index: int, attempt: int) -> None:
    from django_q.tasks import async_task

    step = action_type.steps[index]
    async_task(
        RUN_STEP_TASK,
        str(action_id),
        index,
        attempt,
        cluster=cluster_of(step.pool_for(type_name)),
        timeout=step.timeout,
        task_name=f"{type_name}.{step.name}.{action_id}",
    )


# -- running a step (the django-q2 task) ---------------------------------------------------


class StepContext:
    """What a running step may use: scratch space, stores, progress reporting, cancel checks."""

    def __init__(self, action: ImageAction, step: Step | None, token: uuid.UUID):
        self.action = action
        self.step = step
        self.token = token
        self._last_write = 0.0

    @property
    def scratch(self) -> Path:
        path = scratch_dir(self.action.pk)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def store(self, name: str | None = None):
        from .stores import default_store, get_store

        return get_store(name) if name else default_store()

    def progress(self, done: int, total: int | None = None, *, force: bool = False) -> None:
        """Record progress (throttled) and stop the step if the action was cancelled."""
        now = time.monotonic()
        if not force and now - self._last_write < settings.PROGRESS_WRITE_INTERVAL:
            return
        self._last_write = now
        fields = {"progress_done": done, "heartbeat_at": timezone.now()}
        if total is not None:
            fields["progress_total"] = total
        # One UPDATE on the usual path; only when it matched nothing ask why.
        if self._owned().filter(cancel_requested=False).update(**fields):
            return
        self.check_cancelled()
        raise RunSuperseded()

    def check_cancelled(self) -> None:
        if self._owned().filter(cancel_requested=True).exists():
            raise ActionCancelled()

    def _owned(self):
        return ImageAction.objects.filter(pk=self.action.pk, run_token=self.token)


class Heartbeat(threading.Thread):
    """Touches the action's heartbeat while its step runs, so the reaper knows the worker lives."""

    def __init__(self, action_id, token):
        super().__init__(daemon=True, name=f"heartbeat-{action_id}")
        self.action_id, self.token = action_id, token
        self.stopped = threading.Event()

    def run(self):
        try:
            while not self.stopped.wait(settings.HEARTBEAT_INTERVAL):
                try:
                    ImageAction.objects.filter(pk=self.action_id, run_token=self.token).update(
                        heartbeat_at=timezone.now()
                    )
                except Exception:  # a database blip must not kill the step; the next beat retries
                    log.warning("heartbeat for %s failed", self.action_id, exc_info=True)
                    close_old_connections()
        finally:
            connection.close()

    def stop(self):
        self.stopped.set()
        self.join(timeout=5)


def run_step(action_id: str, index: int, attempt: int) -> None:
    """The django-q2 task: claim the step, run it with retries, then advance or end the action."""
    close_old_connections()
    token = claim_step(action_id, index, attempt, from_state=StepState.QUEUED)
    if token is None:
        return
    action = ImageAction.objects.get(pk=action_id)
    action_type = get_action_type(action.action_type)
    if action_type is None:
        _finish(action, token, ActionStatus.FAILURE, "The action type is not installed on this worker.")
        return
    execute_claimed_step(action, action_type, action_type.steps[index], token)


def claim_step(action_id, index: int, attempt: int, *, from_state: str) -> uuid.UUID | None:
    """Take the step for this process; None when another worker has it or it is no longer due."""
    action = ImageAction.objects.filter(pk=action_id).only("action_type").first()
    action_type = action and get_action_type(action.action_type)
    if action_type is None or index >= len(action_type.steps):
        return None
    step = action_type.steps[index]
    token = uuid.uuid4()
    now = timezone.now()
    claimed = (
        ImageAction.objects.pending()
        .filter(pk=action_id, step_index=index, attempt=attempt, step_state=from_state, cancel_requested=False)
        .update(
            step_state=StepState.RUNNING,
            status=step.status,
            run_token=token,
            worker=worker_name(),
            heartbeat_at=now,
            started_at=Coalesce("started_at", now),
            progress_step=step.name,
            progress_done=0,
            progress_total=None,
        )
    )
    if not claimed:
        log.info("step %s of %s not claimed (taken, cancelled or no longer due)", index, action_id)
        return None
    return token


def execute_claimed_step(
    action: ImageAction, action_type: ActionType, step: Step, token, *, run=None, then=None
) -> bool:
    """Run a claimed step (or `run`, e.g. receiving uploaded data), record how it ended, and on
    success hand over to `then` (by default: the next step). Returns True on success.
    """
    ctx = StepContext(action, step, token)
    heartbeat = Heartbeat(action.pk, token)
    heartbeat.start()
    try:
        return _run_with_retries(action, action_type, step, ctx, run or step.run, then or _advance)
    finally:
        heartbeat.stop()


def _run_with_retries(action, action_type, step, ctx, run, then) -> bool:
    attempt = action.attempt
    while True:
        event = ActionEvent.objects.create(
            action=action,
            step=step.name,
            status=step.status,
            attempt=attempt,
            worker=worker_name(),
            started_at=timezone.now(),
        )
        try:
            run(action, ctx)
        except RunSuperseded:
            _close_event(event, "superseded", "Another run took over this step.")
            return False
        except ActionCancelled:
            _close_event(event, "cancelled", "Cancelled by the user.")
            _cancelled(action, ctx.token)
            return False
        except RetryableStepError as error:
            if attempt > step.retries:
                _close_event(event, "failure", str(error))
                _finish(action, ctx.token, ActionStatus.FAILURE, str(error))
                return False
            _close_event(event, "retry", str(error))
            attempt += 1
            if not _wait_before_retry(action, ctx, step.backoff * 2 ** (attempt - 2), attempt):
                return False
            continue
        except StepError as error:
            _close_event(event, "failure", str(error))
            _finish(action, ctx.token, ActionStatus.FAILURE, str(error))
            return False
        except (OperationalError, InterfaceError):
            # The database went away mid-step (a restart, a failover): not the step's fault, and
            # nothing can be recorded now. This run ends; its heartbeat goes stale and the reaper
            # starts the step again once the database is back.
            log.warning("step %s of action %s lost its database connection", step.name, action.pk, exc_info=True)
            close_old_connections()
            return False
        except Exception as error:
            log.exception("step %s of action %s raised", step.name, action.pk)
            _close_event(event, "error", repr(error), traceback.format_exc())
            _finish(
                action,
                ctx.token,
                ActionStatus.FAILURE,
                f"An internal error stopped the {step.name} step. The operators have the details (action {action.pk}).",
            )
            return False
        _close_event(event, "success", "")
        then(action, action_type, ctx)
        return True


def _wait_before_retry(action, ctx, delay: float, attempt: int) -> bool:
    """Sleep the backoff while still noticing a cancel; record the new attempt number."""
    deadline = time.monotonic() + delay
    try:
        while time.monotonic() < deadline:
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
            ctx.check_cancelled()
    except ActionCancelled:
        _cancelled(action, ctx.token)
        return False
    if not ImageAction.objects.filter(pk=action.pk, run_token=ctx.token).update(attempt=attempt):
        return False  # superseded while waiting
    action.attempt = attempt
    return True


def _close_event(event: ActionEvent, outcome: str, message: str, trace: str = "") -> None:
    event.finished_at = timezone.now()
    event.outcome = outcome
    event.message = message[:4000]
    event.traceback = trace
    event.save(update_fields=["finished_at", "outcome", "message", "traceback"])


def _advance(action: ImageAction, action_type: ActionType, ctx: StepContext) -> None:
    """Hand the action to its next step, or finish it when this was the last."""
    next_index = _next_step_index(action_type, action, action.step_index + 1)
    if next_index is None:
        _finish_success(action, action_type, token=ctx.token, ctx=ctx)
        return
    moved = (
        ImageAction.objects.pending()
        .filter(pk=action.pk, run_token=ctx.token, cancel_requested=False)
        .update(
            step_index=next_index,
            step_state=StepState.QUEUED,
            attempt=1,
            run_token=None,
            queued_at=timezone.now(),
            state=action.state,
            result=action.result,
            image_properties=action.image_properties,
        )
    )
    if moved:
        _send_task(action_type, action.action_type, action.pk, next_index, 1)
    elif ImageAction.objects.filter(pk=action.pk, run_token=ctx.token, cancel_requested=True).exists():
        _cancelled(action, ctx.token)


def _finish_success(action: ImageAction, action_type: ActionType, *, token, ctx=None) -> None:
    """Mark success in one transaction with the action type's `finish` (e.g. creating the Image)."""
    cancelled = False
    with transaction.atomic():
        locked = ImageAction.objects.select_for_update().pending().filter(pk=action.pk, run_token=token).first()
        if locked is None:
            return
        if locked.cancel_requested:
            cancelled = True
        else:
            now = timezone.now()
            # Set before `finish`, so it can quote them (an export's link expires with the action).
            action.finished_at, action.expires_at = now, _expiry(now)
            if action_type.finish:
                action_type.finish(action, ctx or StepContext(action, None, token))
            ImageAction.objects.filter(pk=action.pk).update(
                status=ActionStatus.SUCCESS,
                step_state=StepState.DONE,
                run_token=None,
                message="",
                state=action.state,
                result=action.result,
                image_properties=action.image_properties,
                finished_at=now,
                expires_at=action.expires_at,
                progress_done=locked.progress_total or locked.progress_done,
            )
    if cancelled:
        _cancelled(action, token)
        return
    _remove_scratch(action.pk)


def _finish(action: ImageAction, token, status: str, message: str) -> bool:
    """End the action as failure or cancelled, if this run still owns it.

    The clean-up comes first: whoever sees `failure` or `cancelled` must find nothing left
    behind. The state is saved before it, since the clean-up reads what the steps recorded.
    """
    owned = ImageAction.objects.pending().filter(pk=action.pk, run_token=token)
    if not owned.update(state=action.state):
        return False
    clean_up(action)
    return bool(owned.update(**_ended(status, message)))


def _cancelled(action: ImageAction, token) -> bool:
    return _finish(action, token, ActionStatus.CANCELLED, CANCELLED_MESSAGE)


def _fail_unowned(action: ImageAction, message: str) -> None:
    if ImageAction.objects.pending().filter(pk=action.pk).update(**_ended(ActionStatus.FAILURE, message)):
        clean_up(action)


def clean_up(action: ImageAction) -> None:
    """Remove what a failed, cancelled or purged action left: its type's leftovers and scratch."""
    action_type = get_action_type(action.action_type)
    if action_type and action_type.clean_up:
        try:
            action.refresh_from_db(fields=["state", "result"])
        except ImageAction.DoesNotExist:
            pass
        try:
            action_type.clean_up(action)
        except Exception:
            log.exception("clean-up of action %s failed", action.pk)
    _remove_scratch(action.pk)


def _remove_scratch(action_id) -> None:
    shutil.rmtree(scratch_dir(action_id), ignore_errors=True)


# -- requests from users and operators -----------------------------------------------------


def request_cancel(action: ImageAction) -> bool:
    """Cancel now if no worker holds the action, else flag it for the step's next progress call.

    Returns False when the action had already ended.
    """
    flagged = ImageAction.objects.pending().filter(pk=action.pk).update(cancel_requested=True)
    if not flagged:
        return False
    if (
        ImageAction.objects.pending()
        .filter(pk=action.pk, step_state__in=(StepState.QUEUED, StepState.HELD))
        .update(**_ended(ActionStatus.CANCELLED, CANCELLED_MESSAGE))
    ):
        clean_up(action)
    return True


def retry_failed(action: ImageAction) -> bool:
    """Start a failed action again from its first step (operators, from the admin)."""
    restarted = ImageAction.objects.filter(pk=action.pk, status=ActionStatus.FAILURE).update(
        status=ActionStatus.WAITING,
        step_state=StepState.QUEUED,
        step_index=0,
        attempt=1,
        restarts=0,
        run_token=None,
        cancel_requested=False,
        message="",
        state={},
        result={},
        finished_at=None,
        expires_at=None,
        queued_at=timezone.now(),
        progress_step="",
        progress_done=0,
        progress_total=None,
    )
    if restarted:
        transaction.on_commit(lambda: _enqueue_or_finish(action.pk))
    return bool(restarted)


def receive_data(action: ImageAction, stream) -> bool:
    """Run the action type's data receiver for an action held for data, then queue its steps.

    Returns False when the action is not awaiting data (it already has it, or it ended).
    """
    action_type = get_action_type(action.action_type)
    if action_type is None or action_type.receive_data is None:
        return False
    token = claim_step(action.pk, action.step_index, action.attempt, from_state=StepState.HELD)
    if token is None:
        return False
    action.refresh_from_db()
    execute_claimed_step(
        action,
        action_type,
        action_type.steps[action.step_index],
        token,
        run=lambda action, ctx: action_type.receive_data(action, stream, ctx),
        then=_queue_after_data,
    )
    return True


def _queue_after_data(action: ImageAction, action_type: ActionType, ctx: StepContext) -> None:
    """The data is in: queue the (first) step that was held for it."""
    requeued = (
        ImageAction.objects.pending()
        .filter(pk=action.pk, run_token=ctx.token, cancel_requested=False)
        .update(step_state=StepState.QUEUED, run_token=None, queued_at=timezone.now(), state=action.state)
    )
    if requeued:
        _enqueue_or_finish(action.pk)
    else:
        _cancelled(action, ctx.token)


# -- the reaper and purge (django-q2 schedules) ------------------------------------------


def reap() -> dict:
    """Recover actions whose worker died or whose task was lost; fail those held too long."""
    now = timezone.now()
    stale_before = now - timedelta(seconds=max(settings.REAPER_INTERVAL, 3 * settings.HEARTBEAT_INTERVAL))
    counts = {"restarted": 0, "failed": 0, "requeued": 0, "expired_holds": 0}
    for action in ImageAction.objects.filter(step_state=StepState.RUNNING, heartbeat_at__lt=stale_before):
        _recover_dead_run(action, counts)
    lost_before = now - timedelta(seconds=settings.QUEUED_TASK_TIMEOUT)
    for action in ImageAction.objects.pending().filter(step_state=StepState.QUEUED, queued_at__lt=lost_before):
        if ImageAction.objects.filter(pk=action.pk, step_state=StepState.QUEUED, queued_at=action.queued_at).update(
            queued_at=now
        ):
            counts["requeued"] += 1
            _enqueue_or_finish(action.pk)
    held_before = now - timedelta(seconds=settings.DATA_WAIT_TIMEOUT)
    for action in ImageAction.objects.pending().filter(step_state=StepState.HELD, created_at__lt=held_before):
        if (
            ImageAction.objects.pending()
            .filter(pk=action.pk, step_state=StepState.HELD)
            .update(
                **_ended(
                    ActionStatus.FAILURE,
                    f"No data was uploaded within {_duration(settings.DATA_WAIT_TIMEOUT)} of creating the action; "
                    "create a new action and PUT the data to it promptly.",
                )
            )
        ):
            counts["expired_holds"] += 1
            clean_up(action)
    _schedule_next(REAPER_SCHEDULE, settings.REAPER_INTERVAL)
    if any(counts.values()):
        log.info("reaper: %s", counts)
    return counts


def _recover_dead_run(action: ImageAction, counts: dict) -> None:
    action_type = get_action_type(action.action_type)
    step = action_type.steps[action.step_index] if action_type else None
    step_name = step.name if step else action.progress_step
    open_run = ActionEvent.objects.filter(action=action, finished_at__isnull=True).order_by("-started_at").first()
    # django-q2 kills a task that outlives its timeout; a restart would only be killed again.
    timed_out = bool(step and open_run and (timezone.now() - open_run.started_at).total_seconds() >= step.timeout)
    ActionEvent.objects.filter(action=action, finished_at__isnull=True).update(
        finished_at=timezone.now(),
        outcome="timed out" if timed_out else "worker lost",
        message=f"The {step_name} step ran past its {_duration(step.timeout)} limit."
        if timed_out
        else f"The worker {action.worker} stopped sending heartbeats.",
    )
    if timed_out and not action.cancel_requested:
        if _finish(
            action,
            action.run_token,
            ActionStatus.FAILURE,
            f"The {step_name} step did not finish within its time limit of {_duration(step.timeout)}; "
            "the action was stopped. Try again, or ask an operator about large images.",
        ):
            counts["failed"] += 1
        return
    if action.restarts < settings.MAX_STEP_RESTARTS and action_type is not None:
        # Never re-queue a cancelled action: no worker would claim it, so it would stay pending forever.
        if ImageAction.objects.filter(
            pk=action.pk, run_token=action.run_token, step_state=StepState.RUNNING, cancel_requested=False
        ).update(step_state=StepState.QUEUED, run_token=None, restarts=action.restarts + 1, queued_at=timezone.now()):
            counts["restarted"] += 1
            _send_task(action_type, action.action_type, action.pk, action.step_index, action.attempt)
            return
        if not ImageAction.objects.filter(pk=action.pk, run_token=action.run_token, cancel_requested=True).exists():
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
    if _finish(action, action.run_token, status, message):
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
    """Delete expired actions with everything they left behind."""
    expired = ImageAction.objects.filter(expires_at__lt=timezone.now())
    count = 0
    for action in expired.iterator(chunk_size=500):
        clean_up(action)
        action.delete()
        count += 1
    _schedule_next(PURGE_SCHEDULE, settings.PURGE_INTERVAL)
    if count:
        log.info("purged %d expired actions", count)
    return count


def _schedule_next(name: str, seconds: float) -> None:
    """Bring the schedule's next run to `seconds` from now: django-q2's own types count in minutes."""
    from django_q.models import Schedule

    Schedule.objects.filter(name=name).update(next_run=timezone.now() + timedelta(seconds=seconds))


def ensure_schedules() -> None:
    """Create (or update) the reaper and purge schedules; run when a worker starts."""
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
    for name, func, seconds in (
        (REAPER_SCHEDULE, "imageactions.runner.reap", settings.REAPER_INTERVAL),
        (PURGE_SCHEDULE, "imageactions.runner.purge", settings.PURGE_INTERVAL),
    ):
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
