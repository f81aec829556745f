"""`X-Auth-Token: TOKEN`, the header OpenStack's clients send: this service's own API tokens (like
`Authorization: Token`), or Keystone's tokens when Keystone is configured."""

from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import BaseAuthentication, TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed

from ..keystone import KeystoneUser
from ..tokens import user_of


class ApiTokenAuthentication(TokenAuthentication):
    """`Authorization: Token TOKEN`: this service's own API tokens, looked up by their digest."""

    def authenticate_credentials(self, key):
        user = user_of(key)
        if user is None:
            raise AuthenticationFailed("Invalid token.")
        return user, None


class OpenStackTokenAuthentication(ApiTokenAuthentication):
    """The same API tokens, read from X-Auth-Token; nothing else about the caller is taken from headers."""

    def authenticate(self, request):
        token = request.META.get("HTTP_X_AUTH_TOKEN", "").strip()
        if not token:
            return None
        return self.authenticate_credentials(token)


class KeystoneAuthentication(BaseAuthentication):
    """A Keystone token in X-Auth-Token, as keystonemiddleware's auth_token (in front of the app,
    see imageactions.keystone) validated it. Only what the middleware wrote is believed: it
    removes any identity header the client sent, and a request it did not see is not
    authenticated this way."""

    def authenticate(self, request):
        environ = request._request.META
        if not environ.get("HTTP_X_AUTH_TOKEN", "").strip():
            return None
        if "keystone.token_auth" not in environ or environ.get("HTTP_X_IDENTITY_STATUS") != "Confirmed":
            raise AuthenticationFailed("Keystone refused the token: it is invalid, expired or revoked.")
        project = environ.get("HTTP_X_PROJECT_ID", "")
        if not project:
            raise AuthenticationFailed("The token is not scoped to a project; get a project-scoped token.")
        roles = frozenset(role.strip().lower() for role in environ.get("HTTP_X_ROLES", "").split(",") if role.strip())
        user = KeystoneUser(
            user_id=environ.get("HTTP_X_USER_ID", ""),
            username=environ.get("HTTP_X_USER_NAME", ""),
            project_id=project,
            roles=roles,
        )
        return user, None

    def authenticate_header(self, request):
        return f'Keystone uri="{settings.KEYSTONE_URL}"'


class KeystoneTokenScheme(OpenApiAuthenticationExtension):
    target_class = KeystoneAuthentication
    name = "keystoneToken"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "header", "name": "X-Auth-Token"}


class OpenStackTokenScheme(OpenApiAuthenticationExtension):
    """The schema's name for it, apart from `Authorization: Token`."""

    target_class = OpenStackTokenAuthentication
    name = "openStackToken"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "header", "name": "X-Auth-Token"}
