"""Who may do what: one rule per kind of request, each a list of roles that grant it.

A caller's roles come from Keystone (its token's roles in its project) or, for this service's
own API users, from the user: staff are admin, member and reader; everyone else is member and
reader. The defaults below follow OpenStack's: `reader` lists and reads, `member` also creates,
uploads, cancels, changes and deletes in its project, `admin` also reaches every project and
sees operator-only detail. IMAGEACTIONS_POLICY_FILE names a JSON file whose rules replace
these (e.g. {"create": ["admin"]}); it is read once, at start.
"""

from __future__ import annotations

import json
from functools import lru_cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

READ, WRITE, ADMIN = ("reader", "member", "admin"), ("member", "admin"), ("admin",)

DEFAULT_RULES: dict[str, tuple[str, ...]] = {
    "list": READ,  # list actions, images, stores
    "read": READ,  # show one, download its bytes
    "create": WRITE,  # create an action or an image record, start a Glance import or copy
    "upload": WRITE,  # send bytes: an action's data, an image's file or stage
    "cancel": WRITE,  # cancel an action
    "change": WRITE,  # change an image (JSON-patch, tags, (de)activation)
    "delete": WRITE,  # delete an image or one store's copy of it
    "publicize": ADMIN,  # make an image public (seen by every project), as in Glance
    "all_projects": ADMIN,  # read and act on every project's actions and images
    "webhook_secret": WRITE,  # read and rotate the key the project's webhook notifications are signed with
    "operator_detail": ADMIN,  # owners of actions, how stores are reached
    "metrics": ADMIN,  # scrape /metrics (a scraper may instead send IMAGEACTIONS_METRICS_TOKEN)
}


def roles_of(user) -> frozenset[str]:
    from .keystone import KeystoneUser

    if isinstance(user, KeystoneUser):
        return user.roles
    if not getattr(user, "is_authenticated", False):
        return frozenset()
    return frozenset({"admin", "member", "reader"}) if user.is_staff else frozenset({"member", "reader"})


@lru_cache(maxsize=1)
def rules() -> dict[str, frozenset[str]]:
    """The defaults with the policy file's rules in their place."""
    merged = dict(DEFAULT_RULES)
    if settings.POLICY_FILE:
        merged.update(_read_policy_file(settings.POLICY_FILE))
    # Keystone's role names are compared in lower case (see KeystoneAuthentication).
    return {rule: frozenset(role.lower() for role in roles) for rule, roles in merged.items()}


def _read_policy_file(path: str) -> dict:
    def refuse(why: str):
        return ImproperlyConfigured(f"IMAGEACTIONS_POLICY_FILE {path}: {why}")

    try:
        with open(path, encoding="utf-8") as file:
            overrides = json.load(file)
    except OSError as error:
        raise refuse(f"cannot be read ({error.strerror or error})") from None
    except ValueError as error:
        raise refuse(f"is not JSON ({error})") from None
    if not isinstance(overrides, dict):
        raise refuse('must be a JSON object {"rule": ["role", ...]}')
    for rule, roles in overrides.items():
        if rule not in DEFAULT_RULES:
            raise refuse(f"has an unknown rule {rule!r}; the rules are: {', '.join(DEFAULT_RULES)}")
        if not isinstance(roles, list) or not all(isinstance(role, str) and role for role in roles):
            raise refuse(f"rule {rule!r} must be a list of role names")
    return overrides


def allowed(user, rule: str) -> bool:
    return bool(roles_of(user) & rules()[rule])


def needed_roles(rule: str) -> str:
    return ", ".join(sorted(rules()[rule])) or "none: the rule is switched off"
