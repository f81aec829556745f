"""Running one step on a worker (the django-q2 task): claim it, keep its heartbeat, retry passing
faults, record each attempt in the timeline, then hand over to the next step or end the action."""

from __future__ import annotations

import contextvars
import logging
import math
import multiprocessing
import signal
import threading
import time
import traceback
import uuid

from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connection
from django.utils import timezone

from ..choices import ActionStatus, ErrorCode, StepState
from ..logs import bound
from ..models import ActionEvent, ImageAction
from ..pipeline.context import StepContext
from ..pipeline.errors import ActionCancelled, ProcessStopping, RetryableStepError, RunSuperseded, StepError
from ..pipeline.registry import ActionType, Step, get_action_type
from ..pipeline.stopping import stop_requested
from .ending import cancel_owned, close_event, end_owned, internal_error_message, sweep_scratch, worker_name
from .queueing import cluster_of, enqueue, queue_next_step, send_task

log = logging.getLogger(__name__)

DATA_RECEIVED = "data_received"  # in action.state: the action's data arrived; it must not take more
HANDED_BACK = "handed back"  # the outcome of a run whose worker stopped and queued its step again
UPLOAD_SERVER_STOPPED = (
    "The API server receiving the upload shut down (a restart or an upgrade) before the upload ended; "
    "create a new action and upload the data again."
)


def run_step(action_id: str, index: int, attempt: int) -> None:
    """The django-q2 task: claim the step, run it with retries, then advance or end the action."""
    close_old_connections()
    if stop_requested():
        # Taken from the broker by a cluster that is stopping: another worker is to run it.
        _pass_on_unclaimed(action_id, index, attempt)
        return
    try:  # before the claim: a fault here must not leave a claimed step `running` until the reaper
        sweep_scratch()
    except Exception:  # a housekeeping fault (the database, a directory it may not remove) fails no step
        log.warning("the sweep of ended actions' scratch directories failed", exc_info=True)
    token = claim_step(action_id, index, attempt, from_state=StepState.QUEUED)
    if token is None:
        return
    action = ImageAction.objects.get(pk=action_id)
    action_type = get_action_type(action.action_type)
    execute_claimed_step(action, action_type, action_type.steps[index], token)


def _pass_on_unclaimed(action_id, index: int, attempt: int) -> None:
    """Put the task back on the broker for the step still queued as it was when the task was sent."""
    action = ImageAction.objects.pending().filter(pk=action_id).first()
    action_type = action and get_action_type(action.action_type)
    due = action and (action.step_state, action.step_index, action.attempt) == (StepState.QUEUED, index, attempt)
    if due and action_type is not None:
        log.info("stopping: step %s of %s passed on to another worker", index, action_id)
        send_task(action_type, action_id, index, attempt)


def claim_step(action_id, index: int, attempt: int, *, from_state: str) -> uuid.UUID | None:
    """Take the step for this process; None when another worker has it or it is no longer due."""
    action = ImageAction.objects.filter(pk=action_id).only("action_type").first()
    action_type = action and get_action_type(action.action_type)
    if action_type is None or index >= len(action_type.steps):
        return None
    step = action_type.steps[index]
    token = uuid.uuid4()
    claimed = ImageAction.objects.filter(pk=action_id).claim(
        step_index=index,
        attempt=attempt,
        from_state=from_state,
        step_name=step.name,
        status=step.status,
        token=token,
        worker=worker_name(),
    )
    if not claimed:
        log.info("step %s of %s not claimed (taken, cancelled or no longer due)", index, action_id)
        return None
    return token


def execute_claimed_step(action: ImageAction, action_type: ActionType, step: Step, token, *, run=None) -> bool:
    """Run a claimed step (or `run`, e.g. receiving uploaded data in the API process), record how
    it ended, and on success hand the action to its next step. Returns True on success."""
    with bound(
        action_id=str(action.pk),
        action_type=action.action_type,
        step=step.name,
        worker=worker_name(),
        request_id=action.request_id,
    ):
        return _execute(action, action_type, step, token, run)


def _execute(action: ImageAction, action_type: ActionType, step: Step, token, run) -> bool:
    ctx = StepContext(action, step, token)
    heartbeat = Heartbeat(action.pk, token)
    heartbeat.start()
    try:
        succeeded = _run_with_retries(action, step, ctx, run or step.run)
    finally:
        heartbeat.stop()
    if not succeeded:
        return False
    started_at = timezone.now()
    next_run = None
    try:
        if run and action_type.holds_after_data(action.input):
            action.state[DATA_RECEIVED] = True
            rows = ImageAction.objects.filter(pk=action.pk)
            held = rows.hold_after_data(token=token, state=action.state)
            if not held and rows.owned_by(token).filter(cancel_requested=True).exists():
                cancel_owned(action, token)
        else:
            if run:  # what tells the reaper that no upload is running any more
                action.state[DATA_RECEIVED] = True
            # The step that received data is the one held for it: it may run now, or not apply.
            start = action.step_index if run else action.step_index + 1
            next_run = None if run else _carry_on(action, action_type, start, ctx)
            if next_run is None:
                queue_next_step(action, action_type, start=start, ctx=ctx)
    except (OperationalError, InterfaceError):
        raise  # the database went away: the reaper starts the step again once it is back
    except Exception as error:
        # A bug in the type's code after the step (`applies` of the next step, `finish`): the
        # action ends now, instead of looking like a dead worker to the reaper.
        event = ActionEvent(action=action, step=step.name, status=step.status, attempt=action.attempt,
                            worker=worker_name(), started_at=started_at)  # fmt: skip
        _internal_error(action, token, event, error, f"after its {step.name} step")
        return False
    if next_run is not None:
        next_step, next_token = next_run
        action.refresh_from_db()
        return execute_claimed_step(action, action_type, next_step, next_token)
    return True


def _carry_on(
    action: ImageAction, action_type: ActionType, start: int, ctx: StepContext
) -> tuple[Step, uuid.UUID] | None:
    """Take the action's next step for this worker process, when it would be queued to this
    process's own pool anyway: it then starts now, without a round trip through the broker
    (a small action's steps take milliseconds; a hand-over through the queue took as long).
    None when it is to be queued as usual: another pool's step, the end of the action, a
    stopping worker, outside a django-q2 worker, or the run no longer owns the action."""
    index = action_type.next_step_index(action, start)
    if index is None or stop_requested():
        return None
    step = action_type.steps[index]
    from django_q.conf import Conf

    timer = _guard_timer()
    if timer is None or cluster_of(step.pool_for(action_type.name)) != Conf.CLUSTER_NAME:
        return None
    token = uuid.uuid4()
    if not ImageAction.objects.filter(pk=action.pk).carry_on(
        token=ctx.token,
        next_token=token,
        step_index=index,
        step_name=step.name,
        status=step.status,
        state=action.state,
        result=action.result,
        image_properties=action.image_properties,
    ):
        return None  # cancelled or superseded meanwhile: the hand-over says which, and acts on it
    _restart_time_limit(timer, step.timeout)
    return step, token


def _guard_timer():
    """The django-q2 worker process's task timer, which its cluster's guard counts down and kills
    the process at 0; None outside a django-q2 worker or without a time limit on the task."""
    timer = getattr(multiprocessing.current_process(), "timer", None)
    if timer is None or not hasattr(timer, "get_lock") or not callable(signal.getsignal(signal.SIGALRM)):
        return None
    return timer


def _restart_time_limit(timer, seconds: float) -> None:
    """Give the step carried on its own time limit, as if it were a task of its own: django-q2's
    alarm in this process, and the guard's count-down with django-q2's margin of 3 s."""
    limit = math.ceil(seconds)
    signal.alarm(limit)
    with timer.get_lock():
        timer.value = limit + 3


def _internal_error(action: ImageAction, token, event: ActionEvent, error: Exception, where: str) -> None:
    """An unexpected exception (a bug, not a fault of the input or of a service): the action fails
    at once with a message that says so; the traceback is in its timeline, for operators only."""
    log.exception("action %s: internal error %s", action.pk, where)
    close_event(event, "error", repr(error), traceback.format_exc())
    end_owned(action, token, ActionStatus.FAILURE, internal_error_message(action, where), code=ErrorCode.INTERNAL_ERROR)


class Heartbeat(threading.Thread):
    """Touches the action's heartbeat while its step runs, so the reaper knows the worker lives."""

    def __init__(self, action_id, token):
        super().__init__(daemon=True, name=f"heartbeat-{action_id}")
        self.action_id, self.token = action_id, token
        self.stopped = threading.Event()
        self.log_context = contextvars.copy_context()  # a new thread starts with none

    def run(self):
        self.log_context.run(self._beat)

    def _beat(self):
        try:
            while not self.stopped.wait(settings.HEARTBEAT_INTERVAL):
                try:
                    ImageAction.objects.filter(pk=self.action_id).owned_by(self.token).update(
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


def _run_with_retries(action: ImageAction, step: Step, ctx: StepContext, run) -> bool:
    attempt = action.attempt
    while True:
        with bound(attempt=attempt):
            outcome = _run_attempt(action, step, ctx, run, attempt)
        if outcome is not None:
            return outcome
        attempt += 1
        if not _wait_before_retry(action, ctx, step.backoff * 2 ** (attempt - 2), attempt):
            return False


def _run_attempt(action: ImageAction, step: Step, ctx: StepContext, run, attempt: int) -> bool | None:
    """One run of the step: True when it succeeded, False when the run ended otherwise, None
    when it should be tried again."""
    log.info("%s step started (attempt %d)", step.name, attempt)
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
        close_event(event, "superseded", "Another run took over this step.")
        return False
    except ActionCancelled:
        close_event(event, "cancelled", "Cancelled by the user.")
        cancel_owned(action, ctx.token)
        return False
    except ProcessStopping:
        _stop_run(action, ctx, event)
        return False
    except RetryableStepError as error:
        if attempt > step.retries:
            close_event(event, "failure", str(error))
            end_owned(action, ctx.token, ActionStatus.FAILURE, str(error), code=error.code, details=error.details)
            return False
        close_event(event, "retry", str(error))
        return None
    except StepError as error:
        close_event(event, "failure", str(error))
        end_owned(action, ctx.token, ActionStatus.FAILURE, str(error), code=error.code, details=error.details)
        return False
    except (OperationalError, InterfaceError):
        # The database went away mid-step (a restart, a failover): not the step's fault, and
        # nothing can be recorded now. This run ends; its heartbeat goes stale and the reaper
        # starts the step again once the database is back.
        log.warning("step %s of action %s lost its database connection", step.name, action.pk, exc_info=True)
        close_old_connections()
        return False
    except Exception as error:
        _internal_error(action, ctx.token, event, error, f"in its {step.name} step")
        return False
    close_event(event, "success", "")
    return True


def _wait_before_retry(action: ImageAction, ctx: StepContext, delay: float, attempt: int) -> bool:
    """Sleep the backoff while still noticing a cancel or a stop; record the new attempt number."""
    deadline = time.monotonic() + delay
    stopping = False
    try:
        while time.monotonic() < deadline:
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
            ctx.check_cancelled()
    except ActionCancelled:
        cancel_owned(action, ctx.token)
        return False
    except ProcessStopping:
        stopping = True  # the next attempt is the one handed back
    if not ImageAction.objects.filter(pk=action.pk).owned_by(ctx.token).update(attempt=attempt):
        return False  # superseded while waiting
    action.attempt = attempt
    if stopping:
        _stop_run(action, ctx, None)
        return False
    return True


def _stop_run(action: ImageAction, ctx: StepContext, event: ActionEvent | None) -> None:
    """The process is stopping and the step's grace period is over: hand the step back to the
    queue at once for another worker (no wait for the reaper, no crash counted), or end an
    upload, whose bytes come over this process's connection: no other process can take it over.
    `event`: the run's open timeline event (None between two attempts)."""
    action_type = get_action_type(action.action_type)
    rows = ImageAction.objects.filter(pk=action.pk)
    owned = rows.owned_by(ctx.token)
    if is_receiving_data(action, action_type):
        if event is not None:
            close_event(event, "failure", UPLOAD_SERVER_STOPPED)
        if owned.filter(cancel_requested=True).exists():
            cancel_owned(action, ctx.token)
        else:
            end_owned(action, ctx.token, ActionStatus.FAILURE, UPLOAD_SERVER_STOPPED, code=ErrorCode.UPLOAD_INTERRUPTED)
        return
    if event is not None:
        close_event(
            event,
            HANDED_BACK,
            f"The worker {worker_name()} was stopping (a restart or a shutdown) and its grace period ended "
            "before this step did; the step was handed back to the queue and runs again on another worker.",
        )
    if rows.hand_back(token=ctx.token):
        send_task(action_type, action.pk, action.step_index, action.attempt)
        log.info("stopping: step %s of %s handed back to the queue", ctx.step.name, action.pk)
    elif owned.filter(cancel_requested=True).exists():
        cancel_owned(action, ctx.token)


def is_receiving_data(action: ImageAction, action_type: ActionType | None) -> bool:
    """Whether the action's running step is an upload received by an API process: its data has
    not arrived, and only the connection that brings it could."""
    return bool(
        action_type
        and action_type.receive_data
        and action_type.awaits_data(action.input)
        and not action.state.get(DATA_RECEIVED)
    )


def release_held(action: ImageAction, *, input_data: dict | None = None) -> bool:
    """Let an action held after its data go on (Glance's import after stage), with `input_data`
    as its input when given (the release may complete it, e.g. with the target stores); False
    when it is not held so (no data yet, already released, or ended)."""
    changes = {} if input_data is None else {"input": input_data}
    if not action.state.get(DATA_RECEIVED) or not ImageAction.objects.filter(pk=action.pk).release(**changes):
        return False
    enqueue(action.pk)
    return True


def receive_data(action: ImageAction, stream) -> bool:
    """Run the action type's data receiver for an action held for data, then queue its steps.

    Returns False when the action is not awaiting data (it already has it, or it ended).
    """
    action_type = get_action_type(action.action_type)
    if action_type is None or action_type.receive_data is None or action.state.get(DATA_RECEIVED):
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
    )
    return True
