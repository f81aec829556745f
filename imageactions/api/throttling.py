"""Request rates per project: the users of one project share one allowance, so a project's
automation cannot crowd out the others by using many users or tokens. DRF answers 429 with
Retry-After."""

from django.core.cache import caches
from rest_framework.throttling import UserRateThrottle

from ..projects import project_of


class PerUserRateThrottle(UserRateThrottle):
    """DRF's per-user rate, counted in the shared throttle cache."""

    cache = caches["throttle"]


class ProjectRateThrottle(PerUserRateThrottle):
    scope = "project"

    def get_cache_key(self, request, view):
        if not (request.user and request.user.is_authenticated):
            return None  # anonymous requests are refused before they cost anything
        project = project_of(request.user)
        if not project:
            return None
        return self.cache_format % {"scope": self.scope, "ident": project}
