"""The product's routes plus /v2/image-tests, an alias of the test action type, to exercise aliases."""

from django.urls import include, path

from imageactions.api.urls import OptionalSlashRouter
from imageactions.api.views import alias_viewset

router = OptionalSlashRouter()
router.register("image-tests", alias_viewset("test"), basename="image-test")

urlpatterns = [
    path("v2/", include(router.urls)),
    path("", include("imageactions.urls")),
]
