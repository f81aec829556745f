"""GET /metrics: Prometheus's scrape of this host (see imageactions.metrics), for operators (the
`metrics` policy rule) or for a scraper that sends `Authorization: Bearer IMAGEACTIONS_METRICS_TOKEN`."""

from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework.permissions import BasePermission
from rest_framework.views import APIView

from ..health import LiveStateCollector
from ..metrics import carries_scrape_token, exposition
from ..policy import allowed, needed_roles
from .streaming import IgnoreAcceptHeader


class ScraperOrOperator(BasePermission):
    def has_permission(self, request, view):
        if carries_scrape_token(request.headers.get("Authorization")):
            return True
        user = request.user
        if user and user.is_authenticated and allowed(user, "metrics"):
            return True
        self.message = f"Reading metrics needs the scrape token or one of the roles: {needed_roles('metrics')}."
        return False


class MetricsView(APIView):
    permission_classes = [ScraperOrOperator]
    # The format follows the scraper's Accept header (exposition()), not DRF's JSON renderers.
    content_negotiation_class = IgnoreAcceptHeader

    @extend_schema(exclude=True)  # Prometheus's text format, not part of the API
    def get(self, request):
        body, content_type = exposition(request.headers.get("Accept"), live_state=LiveStateCollector())
        return HttpResponse(body, content_type=content_type)
