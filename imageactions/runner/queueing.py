"""Creating actions and putting their steps on the broker: the one "next step or finish"
decision, and the requests of users and operators (cancel, retry)."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from .. import metrics, webhooks
from ..choices import ActionStatus, ErrorCode, ImageRole, StepState
from ..logs import current_request_id
from ..models import ActionImage, ImageAction
from ..pipeline.context import StepContext
from ..pipeline.registry import ActionType, cluster_of, get_action_type
from .ending import CANCELLED_MESSAGE, cancel_owned, end_unclaimed, fail_unowned, finish_success, record_images

RUN_STEP_TASK = "imageactions.runner.run_step"


def create_action(
    action_type: ActionType, *, owner: str, input_data: dict, labels: dict | None = None, notify_url: str = ""
) -> ImageAction:
    """Record a new action (and its first notification, with a `notify_url`) and queue its first
    step once the row is committed."""
    held = action_type.awaits_data(input_data)
    action = ImageAction.objects.create(
        action_type=action_type.name,
        owner=owner,
        input=input_data,
        image_properties=action_type.image_properties(input_data),
        status=ActionStatus.WAITING,
        step_state=StepState.HELD if held else StepState.QUEUED,
        queued_at=timezone.now(),
        request_id=current_request_id(),
        labels=labels or {},
        notify_url=notify_url,
    )
    if notify_url:
        webhooks.record_status_changes([(action.pk, None)])
    record_images(action, ImageRole.READ, action_type.images_read(input_data))
    transaction.on_commit(lambda: metrics.action_created(action_type.name))
    if not held:
        transaction.on_commit(lambda: enqueue(action.pk))
    return action


def enqueue(action_id) -> None:
    """Put the queued action's current step on the broker (skipping steps that do not apply)."""
    action = ImageAction.objects.get(pk=action_id)
    action_type = get_action_type(action.action_type)
    if action_type is None:
        fail_unowned(
            action,
            f"The action type {action.action_type!r} is not installed on this service.",
            code=ErrorCode.NOT_INSTALLED,
        )
        return
    queue_next_step(action, action_type, start=action.step_index, ctx=None)


def queue_next_step(action: ImageAction, action_type: ActionType, *, start: int, ctx: StepContext | None) -> None:
    """Queue the first step from `start` on that applies to the action, or finish the action
    when none is left.

    `ctx` is the run that owns the action and hands it over (with what the run recorded);
    None for an action that is queued and owned by no run (just created, restarted, re-queued).
    """
    token = ctx.token if ctx else None
    index = action_type.next_step_index(action, start)
    if index is None:
        finish_success(action, action_type, token=token, ctx=ctx)
        return
    rows = ImageAction.objects.filter(pk=action.pk)
    if ctx is not None:
        if not rows.hand_over(
            token=token,
            step_index=index,
            state=action.state,
            result=action.result,
            image_properties=action.image_properties,
        ):
            if rows.owned_by(token).filter(cancel_requested=True).exists():
                cancel_owned(action, token)
            return
        attempt = 1
    else:
        if index != action.step_index and not rows.skip_to(from_index=action.step_index, step_index=index):
            return
        attempt = action.attempt
    send_task(action_type, action.pk, index, attempt)


def send_task(action_type: ActionType, action_id, index: int, attempt: int) -> None:
    from django_q.tasks import async_task

    step = action_type.steps[index]
    async_task(
        RUN_STEP_TASK,
        str(action_id),
        index,
        attempt,
        cluster=cluster_of(step.pool_for(action_type.name)),
        timeout=step.timeout,
        task_name=f"{action_type.name}.{step.name}.{action_id}",
    )


def request_cancel(action: ImageAction) -> bool:
    """Cancel now if no worker holds the action, else flag it for the step's next progress call.

    Returns False when the action had already ended.
    """
    if not ImageAction.objects.pending().filter(pk=action.pk).update(cancel_requested=True):
        return False
    end_unclaimed(action, ActionStatus.CANCELLED, CANCELLED_MESSAGE)
    return True


def retry_failed(action: ImageAction) -> bool:
    """Start a failed action again from its first step (operators, from the admin)."""
    if not ImageAction.objects.filter(pk=action.pk).restart():
        return False
    ActionImage.objects.filter(action=action, role=ImageRole.MADE).delete()
    transaction.on_commit(lambda: enqueue(action.pk))
    return True
