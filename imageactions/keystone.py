"""Keystone as the identity backend (when IMAGEACTIONS_KEYSTONE_URL is set): keystonemiddleware's
auth_token validates each X-Auth-Token (with a token cache) in front of the Django app and strips
any identity header a client sent; the caller is then the token's user in the token's project."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings


@dataclass(frozen=True)
class KeystoneUser:
    """The caller a valid Keystone token names: never stored, rebuilt on each request."""

    user_id: str
    username: str
    project_id: str
    roles: frozenset[str]

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False  # the Django admin takes its own logins, not tokens

    @property
    def pk(self) -> str:  # what throttling keys on
        return f"keystone:{self.user_id}"

    def get_username(self) -> str:
        return self.username


def protect(app):
    """`app` behind keystonemiddleware's auth_token, configured from the settings."""
    from keystonemiddleware import auth_token

    conf = {
        "auth_type": "password",
        "auth_url": settings.KEYSTONE_URL,
        "username": settings.KEYSTONE_USER,
        "password": settings.KEYSTONE_PASSWORD,
        "project_name": settings.KEYSTONE_PROJECT,
        "user_domain_name": settings.KEYSTONE_USER_DOMAIN,
        "project_domain_name": settings.KEYSTONE_PROJECT_DOMAIN,
        "www_authenticate_uri": settings.KEYSTONE_URL,
        # The version documents and schemas answer without a token; the views decide.
        "delay_auth_decision": "true",
        # The middleware's own cache takes 0 for "forever": no cache is a negative time there.
        "token_cache_time": str(settings.KEYSTONE_CACHE_TIME if settings.KEYSTONE_CACHE_TIME > 0 else -1),
        "include_service_catalog": "false",
    }
    if settings.KEYSTONE_MEMCACHED_SERVERS:
        conf["memcached_servers"] = ",".join(settings.KEYSTONE_MEMCACHED_SERVERS)
    return auth_token.AuthProtocol(app, conf)
