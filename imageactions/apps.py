"""The core app; it knows no action type: those register themselves from their own apps."""

from django.apps import AppConfig


class ImageActionsConfig(AppConfig):
    name = "imageactions"
    verbose_name = "Image actions"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from .policy import rules
        from .runner.sentinel import extend_sentinel
        from .stores import check_staging_store

        rules()  # a bad policy file stops the start, with its reason, instead of failing requests
        check_staging_store()  # likewise a bad staging store
        extend_sentinel()  # hand-backs, schedules on time, graceful stops (see runner.sentinel)
