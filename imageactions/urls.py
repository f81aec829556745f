"""Top-level routes: the /v2 API and the operators' admin with its dashboard."""

from django.contrib import admin
from django.urls import include, path

from .api.discovery import root, versions
from .api.health import HealthzView, ReadyzView
from .api.metrics import MetricsView
from .dashboard import dashboard_view

urlpatterns = [
    path("", root),
    path("versions", versions),
    path("healthz", HealthzView.as_view(), name="healthz"),
    path("readyz", ReadyzView.as_view(), name="readyz"),
    path("metrics", MetricsView.as_view(), name="metrics"),
    path("v2", versions),
    # Inside the admin (its login, staff only), ahead of admin.site.urls whose catch-all would 404 it.
    path("admin/dashboard/", admin.site.admin_view(dashboard_view), name="imageactions-dashboard"),
    path("admin/", admin.site.urls),
    path("api-auth/", include("rest_framework.urls")),
    path("v2/", include("imageactions.api.urls")),
]
