"""Webhooks: an action's `notify_url` gets a signed POST for each change of its status, recorded
with the change (an outbox row), delivered at least once and in order by the worker pools, and
retried with growing delays; the attempts are kept for the owner and the operators."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import socket
import threading
import time
import uuid
from datetime import datetime, timedelta

import requests
from django.conf import settings
from django.db import transaction
from django.db.models import Exists, Max, OuterRef, Q
from django.utils import timezone

from . import metrics
from .choices import TERMINAL_STATUSES, AttemptOutcome, DeliveryState, WebhookEvent
from .models import ImageAction, WebhookDelivery, WebhookSecret
from .pipeline.http import caused_by, innermost, pinned_session
from .pipeline.registry import cluster_of, get_action_type
from .urlpolicy import UnresolvableHost, UrlPolicy, UrlRefused

log = logging.getLogger(__name__)

DELIVER_TASK = "imageactions.webhooks.deliver"
SIGNATURE_HEADER = "X-ImageActions-Signature"
EVENT_ID_HEADER = "X-ImageActions-Event-Id"
EVENT_TYPE_HEADER = "X-ImageActions-Event"
USER_AGENT = "ImageActions-webhook/1"

PENDING, DELIVERED, GIVEN_UP = DeliveryState.PENDING, DeliveryState.DELIVERED, DeliveryState.GIVEN_UP
# Actions whose next notification one sweep queues; the next sweep takes the rest.
SWEEP_BATCH = 500


def sweep_interval() -> float:
    """Seconds between the sweeps that send due retries (and notifications whose first
    attempt was never queued, e.g. the process died right after the change)."""
    return min(max(settings.WEBHOOK_RETRY_DELAY, 0.5), 30.0)


def retry_delay(attempts_made: int) -> float:
    """Seconds before the next attempt: WEBHOOK_RETRY_DELAY, doubled after each failed attempt."""
    return settings.WEBHOOK_RETRY_DELAY * 2 ** (attempts_made - 1)


# -- the project's signing secret -----------------------------------------------------------


def secret_of(project: str) -> WebhookSecret:
    secret, _ = WebhookSecret.objects.get_or_create(project=project, defaults={"secret": _new_secret()})
    return secret


def rotate_secret(project: str) -> WebhookSecret:
    secret, _ = WebhookSecret.objects.update_or_create(
        project=project, defaults={"secret": _new_secret(), "rotated_at": timezone.now()}
    )
    return secret


def _new_secret() -> str:
    return secrets.token_hex(32)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value: HMAC-SHA256 of "<timestamp>.<body>" keyed with the secret."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


# -- checks of a notify_url -----------------------------------------------------------------


def check_notify_url(url: str, *, resolve: bool = False) -> None:
    """UrlRefused when the URL policy of import sources refuses `url` as written (and, with
    `resolve`, the addresses its host resolves to; UnresolvableHost when it has none)."""
    policy = UrlPolicy.from_settings()
    if resolve:
        policy.address_of(url)
    else:
        policy.check_url(url)


# -- recording: in the transaction of the status change ---------------------------------------


def record_status_changes(changes: list[tuple]) -> None:
    """Write a notification for each (action id, status before) whose action has a notify_url;
    `status before` is None for a new action. Runs inside the change's transaction, with the
    actions' rows locked by it; the deliveries are queued once it commits."""
    before = dict(changes)
    last = dict(
        WebhookDelivery.objects.filter(action__in=before)
        .order_by()
        .values("action")
        .annotate(last=Max("sequence"))
        .values_list("action", "last")
    )
    now = timezone.now()
    deliveries = []
    for action in ImageAction.objects.filter(pk__in=before).exclude(notify_url=""):
        previous = before[action.pk]
        if action.status in TERMINAL_STATUSES:
            event_type = WebhookEvent.ENDED
        else:
            event_type = WebhookEvent.CREATED if previous is None else WebhookEvent.STATUS_CHANGED
        delivery = WebhookDelivery(
            action=action,
            sequence=last.get(action.pk, 0) + 1,
            event_type=event_type,
            url=action.notify_url,
            next_attempt_at=now,
        )
        delivery.payload = {
            "id": str(delivery.event_id),
            "type": str(event_type),
            "sequence": delivery.sequence,
            "created_at": _timestamp(now),
            "previous_status": previous,
            "action": action_fields(action),
        }
        deliveries.append(delivery)
    if deliveries:
        WebhookDelivery.objects.bulk_create(deliveries)
        action_ids = [delivery.action_id for delivery in deliveries]
        transaction.on_commit(lambda: _dispatch_now(action_ids))


def action_fields(action: ImageAction) -> dict:
    """The action as a notification shows it: the fields of the API's answer that say how it
    stands. Links in its result stay paths under this API: there is no request to name the host."""
    action_type = get_action_type(action.action_type)
    result = action.result
    if action_type and action_type.present_result and result:
        result = action_type.present_result(result, lambda path: path)
    return {
        "id": str(action.pk),
        "action_type": action.action_type,
        "status": action.status,
        "message": action.message,
        "error_code": action.error_code or None,
        "error_details": action.error_details,
        "result": result,
        "labels": action.labels,
        "progress": action.progress,
        "created_at": _timestamp(action.created_at),
        "updated_at": _timestamp(action.updated_at),
        "started_at": _timestamp(action.started_at),
        "finished_at": _timestamp(action.finished_at),
        "expires_at": _timestamp(action.expires_at),
    }


def _timestamp(moment: datetime | None) -> str | None:
    # As the API writes its times (DRF): ISO 8601 with microseconds, UTC as Z.
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


# -- dispatching: which notification is next, and who sends it ---------------------------------


def _free(now) -> Q:
    return Q(lease__isnull=True) | Q(leased_until__lt=now)


def _due_heads(now, action_ids=None):
    """Per action, its oldest undelivered notification, if due and no task holds it: a later one
    waits until the earlier is delivered or given up, so a receiver gets them in order."""
    earlier = WebhookDelivery.objects.filter(
        action=OuterRef("action"), state=PENDING, sequence__lt=OuterRef("sequence")
    )
    heads = WebhookDelivery.objects.filter(state=PENDING, next_attempt_at__lte=now).filter(_free(now))
    if action_ids is not None:
        heads = heads.filter(action_id__in=action_ids)
    return heads.exclude(Exists(earlier)).order_by("next_attempt_at")


def _lease(delivery_id, now) -> uuid.UUID | None:
    """Take the delivery for one task; None when another holds it."""
    # Long enough for the task to wait in the queue and make its attempt.
    held_for = timedelta(seconds=2 * settings.WEBHOOK_TIMEOUT + 60)
    token = uuid.uuid4()
    taken = (
        WebhookDelivery.objects.filter(pk=delivery_id, state=PENDING)
        .filter(_free(now))
        .update(lease=token, leased_until=now + held_for)
    )
    return token if taken else None


def dispatch(action_ids=None) -> int:
    """Queue a delivery task for each action (of `action_ids`, or all) whose next notification is
    due; how many were queued."""
    from django_q.tasks import async_task

    now = timezone.now()
    queued = 0
    for delivery_id, action_id in _due_heads(now, action_ids).values_list("pk", "action_id")[:SWEEP_BATCH]:
        lease = _lease(delivery_id, now)
        if lease is not None:
            async_task(
                DELIVER_TASK,
                str(action_id),
                str(lease),
                cluster=cluster_of(settings.WEBHOOK_POOL),
                task_name=f"webhook.{action_id}",
            )
            queued += 1
    return queued


def _dispatch_now(action_ids) -> None:
    try:
        dispatch(action_ids)
    except Exception:  # the status change stands; the next sweep queues the notification
        log.warning("could not queue webhook notifications of %s", action_ids, exc_info=True)


# -- delivering: the task on a worker -----------------------------------------------------------


def deliver(action_id: str, lease: str) -> None:
    """Send the action's notification held with `lease`, then the ones after it that are due."""
    delivery = WebhookDelivery.objects.select_related("action").filter(action_id=action_id, lease=lease).first()
    while delivery is not None and delivery.state == PENDING:
        if _attempt(delivery, lease) == PENDING:
            return  # the sweep sends the retry when it is due
        now = timezone.now()
        following = _due_heads(now, [action_id]).select_related("action").first()
        lease = following and _lease(following.pk, now)
        delivery = following if lease else None


def _attempt(delivery: WebhookDelivery, lease) -> str:
    """POST the notification once and record how it went; the delivery's new state."""
    body = json.dumps(delivery.payload, separators=(",", ":")).encode()
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        EVENT_TYPE_HEADER: delivery.event_type,
        EVENT_ID_HEADER: str(delivery.event_id),
        SIGNATURE_HEADER: signature(secret_of(delivery.action.owner).secret, timestamp, body),
    }
    started, began = timezone.now(), time.monotonic()
    try:
        status_code, outcome, error = post(delivery.url, body, headers)
    except Exception:  # a bug here must cost an attempt, not stop the action's notifications for good
        log.exception("webhook attempt of delivery %s failed unexpectedly", delivery.pk)
        status_code, outcome, error = None, AttemptOutcome.UNREACHABLE, "An internal error of this service."
    number = len(delivery.attempts) + 1
    delivery.attempts = [
        *delivery.attempts,
        {
            "number": number,
            "at": _timestamp(started),
            "duration_ms": round(1000 * (time.monotonic() - began)),
            "status_code": status_code,
            "outcome": outcome,
            "error": error,
        },
    ]
    now = timezone.now()
    if outcome == AttemptOutcome.DELIVERED:
        delivery.state, delivery.next_attempt_at, delivery.finished_at = DELIVERED, None, now
    elif number >= settings.WEBHOOK_ATTEMPTS:
        delivery.state, delivery.next_attempt_at, delivery.finished_at = GIVEN_UP, None, now
    else:
        delivery.next_attempt_at = now + timedelta(seconds=retry_delay(number))
    metrics.webhook_attempted({DELIVERED: "delivered", GIVEN_UP: "given_up"}.get(delivery.state, "failed"))
    log.log(
        logging.INFO if outcome == AttemptOutcome.DELIVERED else logging.WARNING,
        "webhook %s #%d of action %s, attempt %d: %s %s",
        delivery.event_type,
        delivery.sequence,
        delivery.action_id,
        number,
        outcome,
        error,
    )
    # Only while this task still holds it: one that waited past its lease records nothing, and
    # the notification is sent again (at least once, never lost).
    WebhookDelivery.objects.filter(pk=delivery.pk, lease=lease).update(
        state=delivery.state,
        attempts=delivery.attempts,
        next_attempt_at=delivery.next_attempt_at,
        finished_at=delivery.finished_at,
        lease=None,
        leased_until=None,
    )
    return delivery.state


def post(url: str, body: bytes, headers: dict) -> tuple[int | None, str, str]:
    """(status code, outcome, why it failed) of one POST to `url`, connected only to an address the
    URL policy allows, checked now; redirects are not followed (each would need its own check,
    and a notification has nowhere else to go)."""
    policy = UrlPolicy.from_settings()
    try:
        host, port, address = policy.address_of(url)
    except UrlRefused as refusal:
        return None, AttemptOutcome.URL_NOT_ALLOWED, f"The url '{url}' is not allowed: {refusal}; nothing was sent."
    except UnresolvableHost as error:
        return None, AttemptOutcome.UNREACHABLE, f"{error}."
    timeout = settings.WEBHOOK_TIMEOUT
    opened: list = []
    cut_off = threading.Event()
    # The whole attempt, not each read, is bounded: a receiver that trickles its answer a byte
    # at a time would otherwise hold the worker (and outlive the delivery's lease).
    deadline = threading.Timer(timeout, _shut, [opened, cut_off])
    deadline.start()
    try:
        with pinned_session(str(address), opened=opened) as session:
            response = session.post(
                url, data=body, headers=headers, timeout=(timeout, timeout), allow_redirects=False, stream=True
            )
            response.close()  # the answer's body is not read: only its status counts
    except requests.RequestException as error:
        if isinstance(error, requests.Timeout) or cut_off.is_set():
            return None, AttemptOutcome.TIMED_OUT, f"'{host}:{port}' did not answer within {timeout:g} s."
        if caused_by(error, ConnectionRefusedError):
            return None, AttemptOutcome.UNREACHABLE, f"Connection refused by '{host}:{port}'."
        return None, AttemptOutcome.UNREACHABLE, f"The request to '{host}:{port}' failed: {innermost(error)}"
    finally:
        deadline.cancel()
    if cut_off.is_set():  # what was parsed of a cut answer (a status line, no end of headers) is no answer
        return None, AttemptOutcome.TIMED_OUT, f"'{host}:{port}' did not answer within {timeout:g} s."
    code = response.status_code
    if 200 <= code < 300:
        return code, AttemptOutcome.DELIVERED, ""
    redirect = " (redirects are not followed)" if 300 <= code < 400 else ""
    return (
        code,
        AttemptOutcome.HTTP_ERROR,
        f"The receiver answered {code} {response.reason or ''}".rstrip() + f"{redirect}.",
    )


def _shut(sockets: list, cut_off: threading.Event) -> None:
    cut_off.set()
    for sock in sockets:
        try:
            sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked read, which then fails
        except OSError:
            pass
