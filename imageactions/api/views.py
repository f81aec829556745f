"""The /v2/image-actions resource and its per-type aliases."""

from django.db import transaction
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action as route
from rest_framework.filters import OrderingFilter
from rest_framework.pagination import CursorPagination
from rest_framework.parsers import BaseParser
from rest_framework.response import Response
from django_filters.rest_framework import DjangoFilterBackend

from .. import runner
from ..filtersets import ImageActionFilterSet
from ..models import ImageAction
from ..pipeline import get_action_type
from .errors import Conflict
from .parsers import BoundedJSONParser
from .permissions import owner_of, visible_to
from .serializers import ImageActionCreateSerializer, ImageActionSerializer, create_request_schema


class NewestFirstCursorPagination(CursorPagination):
    """Keyset pagination: a page costs the same at row one million as at row one."""

    ordering = "-created_at"
    page_size = 50
    page_size_query_param = "limit"
    max_page_size = 1000


class StreamedBodyParser(BaseParser):
    """Accepts any body without reading it: the view streams `request.stream` itself."""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):
        return {}


@extend_schema_view(
    list=extend_schema(summary="List your actions"),
    retrieve=extend_schema(summary="Show one action"),
)
class ImageActionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Create, list, poll and cancel image actions; another owner's actions do not exist here."""

    serializer_class = ImageActionSerializer
    parser_classes = [BoundedJSONParser]
    pagination_class = NewestFirstCursorPagination
    filter_backends = [DjangoFilterBackend, OrderingFilter]
    filterset_class = ImageActionFilterSet
    ordering_fields = ["created_at", "updated_at"]
    ordering = ["-created_at"]
    fixed_action_type: str | None = None
    lookup_value_converter = "uuid"

    def get_queryset(self):
        queryset = visible_to(ImageAction.objects.all(), self.request.user)
        if self.fixed_action_type:
            queryset = queryset.filter(action_type=self.fixed_action_type)
        return queryset

    @extend_schema(request=create_request_schema(), responses={201: ImageActionSerializer}, summary="Create an action")
    def create(self, request, *args, **kwargs):
        serializer = ImageActionCreateSerializer(
            data=request.data, context={"request": request}, fixed_action_type=self.fixed_action_type
        )
        serializer.is_valid(raise_exception=True)
        action_type = get_action_type(serializer.validated_data["action_type"])
        with transaction.atomic():
            action = runner.create_action(
                action_type, owner=owner_of(request.user), input_data=serializer.validated_data["input"]
            )
        body = ImageActionSerializer(action, context={"request": request}).data
        location = request.build_absolute_uri(f"/v2/image-actions/{action.pk}")
        return Response(body, status=status.HTTP_201_CREATED, headers={"Location": location})

    @extend_schema(
        request=None,
        responses={202: ImageActionSerializer, 409: OpenApiResponse(description="The action has already ended.")},
        summary="Cancel an action",
    )
    @route(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        action = self.get_object()
        if not runner.request_cancel(action):
            raise Conflict(f"The action has already ended with status {action.status!r}.")
        action.refresh_from_db()
        return Response(ImageActionSerializer(action, context={"request": request}).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        request={"application/octet-stream": OpenApiTypes.BINARY},
        responses={200: ImageActionSerializer, 409: OpenApiResponse(description="The action is not awaiting data.")},
        summary="Upload the data of an action that awaits it",
        parameters=[OpenApiParameter("Content-Length", OpenApiTypes.INT, OpenApiParameter.HEADER, required=False)],
    )
    @route(detail=True, methods=["put"], parser_classes=[StreamedBodyParser])
    def data(self, request, pk=None):
        action = self.get_object()
        if not runner.receive_data(action, request.stream or request._request):
            raise Conflict(f"The action is not awaiting data (status {action.status!r}).")
        action.refresh_from_db()
        return Response(ImageActionSerializer(action, context={"request": request}).data)


def alias_viewset(action_type: str):
    """/v2/image-imports etc.: the same resource, with the action type fixed."""


    @extend_schema(
        request=create_request_schema(action_type),
        responses={201: ImageActionSerializer},
        summary=f"Create an {action_type} action",
    )
    def create(self, request, *args, **kwargs):
        return ImageActionViewSet.create(self, request, *args, **kwargs)

    viewset = type(
        f"{action_type.title()}ActionViewSet", (ImageActionViewSet,), {"fixed_action_type": action_type, "create": create}
    )
    return extend_schema_view(list=extend_schema(summary=f"List your {action_type} actions"))(viewset)
