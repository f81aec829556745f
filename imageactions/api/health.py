"""GET /healthz (the process answers; touches nothing) and GET /readyz (it can do its work: the
database, the broker, every image store, qemu-img and a live cluster in every worker pool).
Both answer without credentials; /readyz names stores, pools and errors only to operators."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import permissions, status
from rest_framework.response import Response
from rest_framework.views import APIView

from ..health import readiness
from ..policy import allowed


class HealthzView(APIView):
    authentication_classes: list = []  # no token lookup: the database is not asked
    permission_classes = [permissions.AllowAny]

    @extend_schema(summary="Liveness: the process answers", responses={200: OpenApiTypes.OBJECT})
    def get(self, request):
        return Response({"status": "alive"})


class ReadyzView(APIView):
    permission_classes = [permissions.AllowAny]

    @extend_schema(
        summary="Readiness: database, broker, stores, qemu-img and every worker pool",
        responses={200: OpenApiTypes.OBJECT, 503: OpenApiResponse(OpenApiTypes.OBJECT, description="Not ready")},
    )
    def get(self, request):
        ready, checks = readiness(detail=allowed(request.user, "operator_detail"))
        body = {"status": "ready" if ready else "not ready", "checks": checks}
        return Response(body, status=status.HTTP_200_OK if ready else status.HTTP_503_SERVICE_UNAVAILABLE)
