"""Registers the `clone` action type with the core pipeline registry."""

from django.apps import AppConfig


class ActionsCloneConfig(AppConfig):
    name = "actions_clone"
    verbose_name = "Clone actions"

    def ready(self):
        from imageactions.pipeline import ActionType, Step, register

        from . import steps
        from .glance import IMPORT_METHODS
        from .serializers import CloneInputSerializer, CloneResultSerializer, image_properties_of

        register(
            ActionType(
                name="clone",
                description="Copy an image to other stores or regions; each copy becomes a new image, or another "
                "location of the image itself.",
                alias="image-clones",
                input_serializer=CloneInputSerializer,
                result_serializer=CloneResultSerializer,
                images_read=lambda data: [data["image_id"]],
                images_made=lambda result: result["image_refs"],
                makes_images=True,
                import_methods=IMPORT_METHODS,
                steps=(
                    Step("copy", "copying", steps.copy_image, timeout=6 * 3600, retries=2, backoff=5),
                    Step("verify", "verifying", steps.verify, timeout=6 * 3600, retries=2, backoff=5),
                ),
                finish=steps.finish,
                clean_up=steps.clean_up,
                image_properties=image_properties_of,
            )
        )
