"""Registers the `import` action type with the core pipeline registry."""

from django.apps import AppConfig


class ActionsImportConfig(AppConfig):
    name = "actions_import"
    verbose_name = "Import actions"

    def ready(self):
        from imageactions.pipeline import ActionType, Step, register

        from . import steps
        from .glance import IMPORT_METHODS
        from .preview import preview_import
        from .serializers import UPLOAD, ImportInputSerializer, ImportResultSerializer, image_properties_of

        register(
            ActionType(
                name="import",
                description="Import an image from a URL, an s3:// or swift:// object, or an upload.",
                alias="image-imports",
                input_serializer=ImportInputSerializer,
                result_serializer=ImportResultSerializer,
                images_read=lambda data: [data["image_id"]] if data.get("image_id") else [],
                images_made=lambda result: [result["image_ref"]],
                makes_images=True,
                stages_bytes=True,
                import_methods=IMPORT_METHODS,
                holds_after_data=lambda data: data.get("hold_after_data", False),
                admin_search_fields=("input__location",),
                steps=(
                    Step("fetch", "uploading", steps.fetch, applies=steps.fetch_applies, timeout=6 * 3600),
                    Step("verify", "verifying", steps.verify, timeout=3600),
                    Step("convert", "converting", steps.convert, applies=steps.convert_applies, timeout=6 * 3600),
                    Step("store", "storing", steps.store, timeout=6 * 3600, retries=2, backoff=2),
                ),
                finish=steps.finish,
                clean_up=steps.clean_up,
                awaits_data=lambda data: data.get("source") == UPLOAD,
                receive_data=steps.receive_upload,
                dry_run=preview_import,
                image_properties=image_properties_of,
            )
        )
