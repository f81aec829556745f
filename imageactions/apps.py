"""The core app; it knows no action type: those register themselves from their own apps."""

from django.apps import AppConfig


class ImageActionsConfig(AppConfig):
    name = "imageactions"
    verbose_name = "Image actions"
    default_auto_field = "django.db.models.BigAutoField"
