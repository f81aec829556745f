"""Routes of the /v2 API: image actions and their aliases, images, stores, the schema and docs."""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import SimpleRouter

from ..pipeline import action_types
from .discovery import (
    ImageSchemaView,
    ImagesSchemaView,
    ImportInfoView,
    StoresDetailView,
    StoresInfoView,
    UsageView,
    versions,
)
from .images import ImageLocationView, ImageViewSet
from .stores import ImageStoreViewSet
from .views import ImageActionViewSet, OfflineRedocView, alias_viewset
from .webhooks import WebhookSecretView


class OptionalSlashRouter(SimpleRouter):
    """/v2/image-actions and /v2/image-actions/ alike (clients differ)."""

    def __init__(self):
        super().__init__()
        self.trailing_slash = "/?"


router = OptionalSlashRouter()
router.register("image-actions", ImageActionViewSet, basename="image-action")
for action_type in action_types().values():
    if action_type.alias:
        router.register(
            action_type.alias, alias_viewset(action_type.name), basename=action_type.alias.removesuffix("s")
        )
router.register("images", ImageViewSet, basename="image")
router.register("stores", ImageStoreViewSet, basename="store")

urlpatterns = [
    path("", versions, name="versions-v2"),
    path("schemas/image", ImageSchemaView.as_view(), name="schema-image"),
    path("schemas/images", ImagesSchemaView.as_view(), name="schema-images"),
    path("info/import", ImportInfoView.as_view(), name="info-import"),
    path("info/stores", StoresInfoView.as_view(), name="info-stores"),
    path("info/stores/detail", StoresDetailView.as_view(), name="info-stores-detail"),
    path("info/usage", UsageView.as_view(), name="info-usage"),
    path("info/webhook-secret", WebhookSecretView.as_view(), name="info-webhook-secret"),
    path("stores/<str:store>/<str:image_id>", ImageLocationView.as_view(), name="image-location"),
    path("", include(router.urls)),
    path("schema", SpectacularAPIView.as_view(), name="schema"),
    path("docs", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("redoc", OfflineRedocView.as_view(url_name="schema"), name="redoc"),
]
