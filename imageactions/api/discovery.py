"""What OpenStack's clients ask before they work: the API versions (no token needed), the image
schemas glanceclient validates against, and the import methods and stores this service offers."""

from django.conf import settings
from django.shortcuts import redirect
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import permissions, status
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response
from rest_framework.views import APIView

from .. import quotas
from ..policy import allowed, needed_roles
from ..projects import owner_of
from ..stores import all_stores
from . import glance
from .images import import_methods


def root(request):
    """GET /: a browser goes to the API docs; a client gets the versions (Glance: 300)."""
    if "text/html" in request.headers.get("Accept", ""):
        return redirect("/v2/docs")
    return glance.versions_response(request, status.HTTP_300_MULTIPLE_CHOICES)


def versions(request):
    """GET /versions, /v2: the versions document, which clients read before authenticating."""
    return glance.versions_response(request)


class GlanceView(APIView):
    glance_errors = True


class PublicGlanceView(GlanceView):
    authentication_classes = []
    permission_classes = [permissions.AllowAny]


class ImageSchemaView(PublicGlanceView):
    @extend_schema(summary="The image schema (Glance)", responses={200: OpenApiTypes.OBJECT, 401: OpenApiTypes.OBJECT})
    def get(self, request):
        return Response(glance.image_schema())


class ImagesSchemaView(PublicGlanceView):
    @extend_schema(
        summary="The image list schema (Glance)", responses={200: OpenApiTypes.OBJECT, 401: OpenApiTypes.OBJECT}
    )
    def get(self, request):
        return Response(glance.images_schema())


class ImportInfoView(GlanceView):
    @extend_schema(
        summary="The import methods this service offers (Glance)",
        responses={200: OpenApiTypes.OBJECT, 401: OpenApiTypes.OBJECT},
    )
    def get(self, request):
        methods = sorted(import_methods())
        return Response(
            {"import-methods": {"description": "Import methods available.", "type": "array", "value": methods}}
        )


def _store_entries(detail: bool) -> list[dict]:
    entries = []
    for store in all_stores():
        entry = {"id": store.name, "description": f"{store.kind} store in region {store.region}"}
        if store.name == settings.DEFAULT_IMAGE_STORE:
            entry["default"] = "true"  # a string, as Glance sends it (openstacksdk applies bool())
        if detail:
            entry |= {"type": store.kind, "weight": 0, "properties": {"region": store.region}}
        entries.append(entry)
    return entries


class StoresInfoView(GlanceView):
    @extend_schema(summary="The image stores (Glance)", responses={200: OpenApiTypes.OBJECT, 401: OpenApiTypes.OBJECT})
    def get(self, request):
        return Response({"stores": _store_entries(detail=False)})


class StoresDetailView(GlanceView):
    @extend_schema(
        summary="The image stores with their kind and region, for operators (Glance)",
        responses={200: OpenApiTypes.OBJECT, 401: OpenApiTypes.OBJECT, 403: OpenApiTypes.OBJECT},
    )
    def get(self, request):
        if not allowed(request.user, "operator_detail"):
            raise PermissionDenied(
                f"Only operators may see the stores' details ('operator_detail' needs one of: {needed_roles('operator_detail')})."
            )
        return Response({"stores": _store_entries(detail=True)})


class UsageView(GlanceView):
    @extend_schema(
        summary="The project's quotas and what it uses (Glance's shape, plus pending_actions)",
        responses={200: OpenApiTypes.OBJECT, 401: OpenApiTypes.OBJECT},
    )
    def get(self, request):
        usage = quotas.usage(owner_of(request.user))
        return Response({"usage": {name: {"limit": q.limit, "usage": q.usage} for name, q in usage.items()}})
