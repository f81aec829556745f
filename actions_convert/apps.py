"""Registers the `convert` action type with the core pipeline registry."""

from django.apps import AppConfig


class ActionsConvertConfig(AppConfig):
    name = "actions_convert"
    verbose_name = "Convert actions"

    def ready(self):
        from imageactions.pipeline import ActionType, Step, register

        from . import steps
        from .serializers import ConvertInputSerializer, ConvertResultSerializer, image_properties_of

        register(
            ActionType(
                name="convert",
                description="Turn one of your images into a new image in another disk format, in the same or another store.",
                alias="image-conversions",
                input_serializer=ConvertInputSerializer,
                result_serializer=ConvertResultSerializer,
                images_read=lambda data: [data["image_id"]],
                images_made=lambda result: [result["image_ref"]],
                makes_images=True,
                steps=(
                    Step("convert", "converting", steps.convert, timeout=6 * 3600),
                    Step("store", "storing", steps.store, timeout=6 * 3600, retries=2, backoff=2),
                ),
                finish=steps.finish,
                clean_up=steps.clean_up,
                image_properties=image_properties_of,
            )
        )
