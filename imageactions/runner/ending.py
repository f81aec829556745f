"""How actions end: success with the type's `finish` in one transaction, failure or cancel after
the type's clean-up, and the clean-up itself (also run by purge)."""

from __future__ import annotations

import logging
import shutil

from django.db import transaction

from ..choices import ActionStatus, ImageRole
from ..models import ActionImage, ImageAction
from ..pipeline.context import StepContext, scratch_dir
from ..pipeline.registry import ActionType, get_action_type

log = logging.getLogger(__name__)

CANCELLED_MESSAGE = "The action was cancelled."


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
            # Set before `finish`, so it can quote them (an export's link expires with the action).
            ended = ImageAction.objects.filter(pk=action.pk)
            ctx = ctx or StepContext(action, None, token)
            ended.end(
                ActionStatus.SUCCESS, progress_done=locked.progress_total or locked.progress_done
            )  # stamps finished_at and expires_at, read back for `finish`
            action.finished_at, action.expires_at = ended.values_list("finished_at", "expires_at").get()
            if action_type.finish:
                action_type.finish(action, ctx)
            ended.update(state=action.state, result=action.result, image_properties=action.image_properties)
            record_images(action, ImageRole.MADE, action_type.images_made(action.result))
    if cancelled:
        cancel_owned(action, token)
        return
    remove_scratch(action.pk)


def record_images(action: ImageAction, role: str, image_ids) -> None:
    """Remember which images the action reads or made (`?image_id=`, the delete guard, the admin)."""
    ActionImage.objects.bulk_create(
        [ActionImage(action=action, image_id=image_id, role=role) for image_id in dict.fromkeys(map(str, image_ids))],
        ignore_conflicts=True,
    )


def end_owned(action: ImageAction, token, status: str, message: str) -> bool:
    """End the action as failure or cancelled, if the run holding `token` still owns it.

    The clean-up comes first: whoever sees `failure` or `cancelled` must find nothing left
    behind. The state is saved before it, since the clean-up reads what the steps recorded.
    """
    owned = ImageAction.objects.pending().owned_by(token).filter(pk=action.pk)
    if not owned.save_state(action.state):
        return False
    clean_up(action)
    return bool(owned.end(status, message))


def cancel_owned(action: ImageAction, token) -> bool:
    return end_owned(action, token, ActionStatus.CANCELLED, CANCELLED_MESSAGE)


def end_unclaimed(action: ImageAction, status: str, message: str) -> bool:
    """End an action no worker holds (queued, or held for data), then clean up after it."""
    if not ImageAction.objects.filter(pk=action.pk).end_unclaimed(status, message):
        return False
    clean_up(action)
    return True


def fail_unowned(action: ImageAction, message: str) -> None:
    if ImageAction.objects.filter(pk=action.pk).end(ActionStatus.FAILURE, message):
        clean_up(action)


def clean_up(action: ImageAction) -> None:
    """Remove what a failed, cancelled or purged action left: its type's leftovers and scratch."""
    action_type = get_action_type(action.action_type)
    if action_type and action_type.clean_up:
        try:
            action.refresh_from_db(fields=["state", "result", "status"])
        except ImageAction.DoesNotExist:
            pass
        try:
            action_type.clean_up(action, StepContext(action, None, None))
        except Exception:
            log.exception("clean-up of action %s failed", action.pk)
    remove_scratch(action.pk)


def remove_scratch(action_id) -> None:
    shutil.rmtree(scratch_dir(action_id), ignore_errors=True)
