"""Idempotent creates: a client that sends `Idempotency-Key: K` with a create and retries it (a
timeout, a lost answer) gets the first answer again instead of a second action.

A key belongs to the project that sent it and is remembered for IDEMPOTENCY_WINDOW seconds
(never longer than the action it made is kept). The same key with another request (another
body) is refused with a 409 naming the key: the client is reusing a key by mistake, and the key
already stands for another request. Only creates that succeeded are remembered: after a 400, the same
key may be sent again with a corrected body.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from rest_framework.exceptions import ValidationError

from .models import IdempotencyKey, ImageAction

HEADER = "Idempotency-Key"
# Printable ASCII without spaces, as the IETF draft and the usual clients (UUIDs, build ids) have it.
VALID_KEY = re.compile(r"[\x21-\x7e]{1,255}")


class KeyReused(Exception):
    """The key was used with another request within the window."""


def key_of(request) -> str | None:
    """The request's Idempotency-Key, or None; a malformed one is a 400."""
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not VALID_KEY.fullmatch(key):
        raise ValidationError({HEADER: ["1 to 255 printable ASCII characters without spaces, e.g. a UUID."]})
    return key


def request_digest(route: str, body) -> str:
    """What makes two requests the same request: the route and the JSON body, whatever its key order."""
    # ASCII escapes: a lone surrogate (valid JSON, not valid UTF-8) must not break the digest.
    canonical = json.dumps([route, body], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def earlier_answer(owner: str, key: str, digest: str) -> tuple[ImageAction, dict] | None:
    """The action and answer of the project's earlier request with this key, if within the window;
    KeyReused when that request was another one."""
    IdempotencyKey.objects.filter(owner=owner, key=key, created_at__lt=_window_start()).delete()
    earlier = IdempotencyKey.objects.filter(owner=owner, key=key).select_related("action").first()
    if earlier is None:
        return None
    if earlier.request_digest != digest:
        raise KeyReused(
            f"The {HEADER} {key!r} was sent with a different request at {earlier.created_at.isoformat()}; "
            f"send a new key with a new request."
        )
    return earlier.action, earlier.response


def remember(owner: str, key: str, digest: str, action: ImageAction, response: dict) -> None:
    """Record the answer to a create (in the transaction that made the action: a concurrent
    request with the same key fails on the unique key and then finds this one)."""
    IdempotencyKey.objects.create(owner=owner, key=key, request_digest=digest, action=action, response=response)


def forget_expired() -> int:
    """Delete the keys older than the window (run by the purge)."""
    return IdempotencyKey.objects.filter(created_at__lt=_window_start()).delete()[0]


def _window_start():
    return timezone.now() - timedelta(seconds=settings.IDEMPOTENCY_WINDOW)
