"""Registers the `export` action type with the core pipeline registry."""

from django.apps import AppConfig


class ActionsExportConfig(AppConfig):
    name = "actions_export"
    verbose_name = "Export actions"

    def ready(self):
        from imageactions.pipeline import ActionType, Step, register

        from . import steps
        from .serializers import ExportInputSerializer, ExportResultSerializer

        register(
            ActionType(
                name="export",
                description="Export an image, optionally converted, to a download link, an image store or a URL.",
                alias="image-exports",
                input_serializer=ExportInputSerializer,
                result_serializer=ExportResultSerializer,
                images_read=lambda data: [data["image_id"]],
                present_result=steps.present_result,
                steps=(
                    Step("convert", "converting", steps.convert, applies=steps.convert_applies, timeout=6 * 3600),
                    Step("upload", "uploading", steps.upload, timeout=6 * 3600),
                ),
                finish=steps.finish,
                clean_up=steps.clean_up,
                result_file=steps.result_file,
            )
        )
