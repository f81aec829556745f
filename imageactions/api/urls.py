"""Routes of the /v2 API: image actions and their aliases, images, stores, the schema and docs."""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import SimpleRouter

from ..pipeline import get_action_type
from .images import ImageViewSet
from .stores import ImageStoreViewSet
from .views import ImageActionViewSet, OfflineRedocView, alias_viewset


class OptionalSlashRouter(SimpleRouter):
    """/v2/image-actions and /v2/image-actions/ alike (clients differ)."""

    def __init__(self):
        super().__init__()
        self.trailing_slash = "/?"


router = OptionalSlashRouter()
router.register("image-actions", ImageActionViewSet, basename="image-action")
for alias, action_type in (("image-imports", "import"), ("image-exports", "export"), ("image-clones", "clone")):
    if get_action_type(action_type):
        router.register(alias, alias_viewset(action_type), basename=alias.removesuffix("s"))
router.register("images", ImageViewSet, basename="image")
router.register("stores", ImageStoreViewSet, basename="store")

urlpatterns = [
    path("", include(router.urls)),
    path("schema", SpectacularAPIView.as_view(), name="schema"),
    path("docs", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("redoc", OfflineRedocView.as_view(url_name="schema"), name="redoc"),
]
