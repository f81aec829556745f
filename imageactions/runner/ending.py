"""How actions end: success with the type's `finish` in one transaction, failure or cancel after
the type's clean-up, and the clean-up itself (also run by purge)."""

from __future__ import annotations

import copy
import logging
import math
import os
import shutil
import socket
import time
import traceback

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from .. import metrics
from ..choices import TERMINAL_STATUSES, ActionStatus, ErrorCode, ImageRole
from ..logs import bound
from ..models import ActionEvent, ActionImage, ImageAction, ended_times
from ..pipeline.context import StepContext, action_id_named, scratch_dir
from ..pipeline.registry import ActionType, get_action_type
from ..pipeline.staging import discard_staged, staging_enabled

log = logging.getLogger(__name__)

CANCELLED_MESSAGE = "The action was cancelled."


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def internal_error_message(action: ImageAction, where: str) -> str:
    return (
        f"An internal error stopped the action {where} (a fault of this service, not of your input). "
        f"The operators have the details (action {action.pk})."
    )


def finish_success(action: ImageAction, action_type: ActionType, *, token, ctx: StepContext | None = None) -> None:
    """Mark success in one transaction with the action type's `finish` (e.g. creating the Image)
    and the record of the images it made."""
    cancelled = False
    with transaction.atomic():
        locked = ImageAction.objects.select_for_update().pending().owned_by(token).filter(pk=action.pk).first()
        if locked is None:
            return
        if locked.cancel_requested:
            cancelled = True
        else:
            # The times are set before `finish`, so it can quote them (an export's link expires with
            # the action); the end is one UPDATE with what `finish` made, so the action's success
            # notification (written by that UPDATE) shows its result.
            times = ended_times()
            action.finished_at, action.expires_at = times["finished_at"], times["expires_at"]
            saved = copy.deepcopy((action.state, action.result, action.image_properties))
            try:
                if action_type.finish:
                    action_type.finish(action, ctx or StepContext(action, None, token))
            except BaseException:
                # The transaction is undone; so is what `finish` wrote into the action in memory
                # (e.g. targets marked copied), which the failure must not record.
                action.state, action.result, action.image_properties = saved
                raise
            ImageAction.objects.filter(pk=action.pk).end(
                ActionStatus.SUCCESS,
                progress_done=locked.progress_total or locked.progress_done,
                state=action.state,
                result=action.result,
                image_properties=action.image_properties,
                **times,
            )
            record_images(action, ImageRole.MADE, action_type.images_made(action.result))
            transaction.on_commit(lambda: _ended(action, ActionStatus.SUCCESS, ""))
    if cancelled:
        cancel_owned(action, token)
        return
    remove_scratch(action)


def record_images(action: ImageAction, role: str, image_ids) -> None:
    """Remember which images the action reads or made (`?image_id=`, the delete guard, the admin)."""
    ActionImage.objects.bulk_create(
        [ActionImage(action=action, image_id=image_id, role=role) for image_id in dict.fromkeys(map(str, image_ids))],
        ignore_conflicts=True,
    )


def end_owned(
    action: ImageAction,
    token,
    status: str,
    message: str,
    *,
    code: str = ErrorCode.STEP_FAILED,
    details: dict | None = None,
) -> bool:
    """End the action as failure or cancelled (a failure's `code` and `details` say why, for
    programs), if the run holding `token` still owns it.

    The clean-up comes first: whoever sees `failure` or `cancelled` must find nothing left
    behind. The state is saved before it, since the clean-up reads what the steps recorded.
    """
    owned = ImageAction.objects.pending().owned_by(token).filter(pk=action.pk)
    if not owned.save_state(action.state):
        return False
    if not clean_up(action):
        if status != ActionStatus.FAILURE:  # a cancel has no code of its own to keep
            code, details = "", None
        status, (message, code, details) = ActionStatus.FAILURE, _clean_up_failed(action, message, code, details)
    if not owned.end(status, message, **_error_fields(status, code, details)):
        return False
    _ended(action, status, code)
    return True


def cancel_owned(action: ImageAction, token) -> bool:
    return end_owned(action, token, ActionStatus.CANCELLED, CANCELLED_MESSAGE)


def end_unclaimed(
    action: ImageAction, status: str, message: str, *, code: str = ErrorCode.STEP_FAILED, step_state: str = ""
) -> bool:
    """End an action no worker holds (queued, or held for data; only in `step_state` when given),
    then clean up after it."""
    rows = ImageAction.objects.filter(pk=action.pk, **({"step_state": step_state} if step_state else {}))
    if not rows.end_unclaimed(status, message, **_error_fields(status, code, None)):
        return False
    _cleaned_after_end(action, status, message, code)
    return True


def fail_unowned(action: ImageAction, message: str, *, code: str) -> None:
    if ImageAction.objects.filter(pk=action.pk).end(ActionStatus.FAILURE, message, error_code=code):
        _cleaned_after_end(action, ActionStatus.FAILURE, message, code)


def _error_fields(status: str, code: str, details: dict | None) -> dict:
    if status != ActionStatus.FAILURE:
        return {"error_code": "", "error_details": {}}
    return {"error_code": code, "error_details": details or {}}


def _cleaned_after_end(action: ImageAction, status: str, message: str, code: str) -> None:
    """Clean up after an action that ended before anything could run its clean-up. Its status
    is final already (a client may have seen it): a clean-up that fails says so as end_owned()
    does, in the message and, for a failure, with the code internal_error, so nobody takes it
    for cleanly ended (a cancelled action stays cancelled: error codes are for failures)."""
    if not clean_up(action):
        message, new_code, details = _clean_up_failed(action, message, code, None)
        fields = {"message": message}
        if status == ActionStatus.FAILURE:
            fields.update(error_code=new_code, error_details=details)
            code = new_code
        ImageAction.objects.filter(pk=action.pk).update(**fields)
    _ended(action, status, code)


def _ended(action: ImageAction, status: str, code: str) -> None:
    """Count and log an action's end (`code`: why it failed, for failures only)."""
    code = code if status == ActionStatus.FAILURE else ""
    metrics.action_ended(action.action_type, status, code)
    with bound(action_id=str(action.pk), action_type=action.action_type, request_id=action.request_id):
        log.info("action ended: %s", status, extra={"fields": {"outcome": status, "error_code": code or None}})


def _clean_up_failed(action: ImageAction, message: str, code: str, details: dict | None) -> tuple[str, str, dict]:
    """The message, code and details of an action whose clean-up raised (a bug of this service):
    internal_error, and what it would have said without the fault (`cause_code` for a failure)."""
    message = f"{message} {internal_error_message(action, 'while cleaning up after it')}".strip()
    details = {"failed_in": "clean-up", **({"cause_code": code} if code else {}), **(details or {})}
    return message, ErrorCode.INTERNAL_ERROR, details


def clean_up(action: ImageAction) -> bool:
    """Remove what a failed, cancelled or purged action left: its type's leftovers and scratch.

    False when the type's clean-up raised (a bug: what it should have removed may remain); the
    traceback is then in the action's timeline, for operators.
    """
    cleaned = True
    action_type = get_action_type(action.action_type)
    if action_type and action_type.clean_up:
        try:
            action.refresh_from_db(fields=["state", "result", "status"])
        except ImageAction.DoesNotExist:
            pass
        started_at = timezone.now()
        try:
            action_type.clean_up(action, StepContext(action, None, None))
        except Exception as error:
            log.exception("clean-up of action %s failed", action.pk)
            cleaned = False
            event = ActionEvent(action=action, step="clean-up", status=action.status, attempt=action.attempt,
                                worker=worker_name(), started_at=started_at)  # fmt: skip
            try:
                close_event(event, "error", repr(error), traceback.format_exc())
            except Exception:  # the action is gone (a purge): the log has it
                log.warning("could not record the clean-up error of action %s", action.pk)
    remove_scratch(action)
    return cleaned


def close_event(event: ActionEvent, outcome: str, message: str, trace: str = "") -> None:
    """Record how a run of a step (or a clean-up) ended in the action's timeline."""
    event.finished_at = timezone.now()
    event.outcome = outcome
    event.message = message[:4000]
    event.traceback = trace
    if event.pk is None:  # opened and closed at once (an error after the step)
        event.save()
    else:
        event.save(update_fields=["finished_at", "outcome", "message", "traceback"])
    seconds = (event.finished_at - event.started_at).total_seconds()
    level = logging.INFO if outcome == "success" else logging.WARNING
    log.log(level, "%s step ended: %s", event.step, outcome, extra={"fields": {"duration_s": round(seconds, 3)}})
    if event.step != "clean-up":
        metrics.step_ran(event.action.action_type, event.step, outcome, seconds)


def remove_scratch(action: ImageAction) -> None:
    """Remove what the action staged: its scratch directory on this host, and its objects and
    uploads in the staging store. Copies other hosts cached are swept there (sweep_scratch)."""
    shutil.rmtree(scratch_dir(action.pk), ignore_errors=True)
    if discard_staged(action.pk, action.state):
        # Saved so that a purge later asks the staging store nothing; only where no other run
        # may be writing the state (the action ended, or this run still owns it).
        owner = Q(status__in=TERMINAL_STATUSES) | Q(run_token=action.run_token)
        ImageAction.objects.filter(owner, pk=action.pk).update(state=action.state)


# With a staging store, the steps of one action run on several hosts and the action ends on one
# of them: the others find its scratch directory ended and remove it, at most this often.
SCRATCH_SWEEP_INTERVAL = 300
_last_sweep = -math.inf


def sweep_scratch(*, throttled: bool = True) -> list[str]:
    """Remove this host's scratch directories of actions that ended or are gone (with a staging
    store, the caches steps left on this host); the ids removed. Throttled to one sweep per
    SCRATCH_SWEEP_INTERVAL in each process unless `throttled` is False (a worker's start)."""
    global _last_sweep
    if not staging_enabled() or (throttled and time.monotonic() - _last_sweep < SCRATCH_SWEEP_INTERVAL):
        return []
    _last_sweep = time.monotonic()
    try:
        found = {entry.name for entry in settings.SCRATCH_DIR.iterdir() if entry.is_dir()}
    except FileNotFoundError:
        return []
    ids = {action_id_named(name) for name in found} - {None}
    pending = {str(pk) for pk in ImageAction.objects.pending().filter(pk__in=ids).values_list("pk", flat=True)}
    ended = sorted(ids - pending)
    for action_id in ended:
        shutil.rmtree(scratch_dir(action_id), ignore_errors=True)
    if ended:
        log.info("removed the scratch directories of %d ended actions", len(ended))
    return ended
