"""GET /v2/stores: the image stores users may target (by name or region), never how to reach them."""

from django.conf import settings
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, viewsets
from rest_framework.response import Response

from ..stores import all_stores
from .serializers import ErrorSerializer


class ImageStoreSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="What import, export and clone inputs call the store.")
    region = serializers.CharField()
    kind = serializers.ChoiceField(choices=["filesystem", "s3"])
    default = serializers.BooleanField(help_text="Where new images go unless told otherwise.")


class ImageStoreViewSet(viewsets.ViewSet):
    """The configured stores, in configuration order; a short list, so not paginated."""

    @extend_schema(
        responses={
            200: ImageStoreSerializer(many=True),
            401: OpenApiResponse(ErrorSerializer, description="No valid credentials were sent."),
        },
        summary="List the image stores",
    )
    def list(self, request):
        stores = [
            # describe() is the store's own list of what may be shown: no endpoints, no keys.
            {**store.describe(), "default": store.name == settings.DEFAULT_IMAGE_STORE}
            for store in all_stores()
        ]
        return Response(ImageStoreSerializer(stores, many=True).data)
