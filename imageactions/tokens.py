"""This service's own API tokens: made once and shown once, stored only as a SHA-256 digest."""

import hashlib
import secrets

from .models import ApiToken


def digest_of(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(user) -> str:
    """A new token for `user`, replacing any earlier one (which stops working)."""
    token = secrets.token_hex(20)
    ApiToken.objects.update_or_create(user=user, defaults={"digest": digest_of(token)})
    return token


def user_of(token: str):
    """The active user whose token this is, or None."""
    found = ApiToken.objects.select_related("user").filter(digest=digest_of(token)).first()
    return found.user if found is not None and found.user.is_active else None
