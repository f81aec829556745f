"""GET and POST /v2/info/webhook-secret: the key of the project's webhook signatures, and its rotation."""

from drf_spectacular.utils import extend_schema
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from .. import webhooks
from ..policy import allowed, needed_roles
from ..projects import owner_of
from .serializers import WebhookSecretSerializer
from .views import error_responses, refuse_unknown_query_parameters


class WebhookSecretView(APIView):
    """Made on first use; one per project, shared by all its actions' notifications."""

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        if not allowed(request.user, "webhook_secret"):
            raise PermissionDenied(
                f"Your roles do not allow this ('webhook_secret' needs one of: {needed_roles('webhook_secret')})."
            )
        refuse_unknown_query_parameters(request, (set(), set()))

    @extend_schema(
        summary="Your project's webhook signing secret (made on first use)",
        responses={200: WebhookSecretSerializer, **error_responses(400, 401, 403)},
    )
    def get(self, request):
        return _secret_response(webhooks.secret_of(owner_of(request.user)))

    @extend_schema(
        summary="Replace your project's webhook signing secret; notifications sent from now on use the new one",
        request=None,
        responses={200: WebhookSecretSerializer, **error_responses(400, 401, 403)},
    )
    def post(self, request):
        if request.data not in ({}, None):  # whatever JSON it is: an object, a number, a list
            raise ValidationError({"body": ["The rotation takes no body; send none, or {}."]})
        return _secret_response(webhooks.rotate_secret(owner_of(request.user)))


def _secret_response(secret) -> Response:
    # A secret must not stay in a cache on the way (a proxy's, or the browser's).
    return Response(WebhookSecretSerializer(secret).data, headers={"Cache-Control": "no-store"})
