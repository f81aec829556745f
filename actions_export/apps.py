"""Registers the `export` action type with the core pipeline registry."""
from django.apps import AppConfig


class ActionsExportConfig(AppConfig):
    name = "actions_export"
    verbose_name = "Export actions"

    def ready(self):
        pass  # the export pipeline registers here once it exists
