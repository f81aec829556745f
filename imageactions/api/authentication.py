"""`X-Auth-Token: TOKEN`, the header OpenStack's clients send, accepted like `Authorization: Token`."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework.authentication import TokenAuthentication


class OpenStackTokenAuthentication(TokenAuthentication):
    """The same API tokens, read from X-Auth-Token; nothing else about the caller is taken from headers."""

    def authenticate(self, request):
        token = request.META.get("HTTP_X_AUTH_TOKEN", "").strip()
        if not token:
            return None
        return self.authenticate_credentials(token)


class OpenStackTokenScheme(OpenApiAuthenticationExtension):
    """The schema's name for it, apart from `Authorization: Token`."""

    target_class = OpenStackTokenAuthentication
    name = "openStackToken"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "header", "name": "X-Auth-Token"}
