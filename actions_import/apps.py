"""Registers the `import` action type with the core pipeline registry."""
from django.apps import AppConfig


class ActionsImportConfig(AppConfig):
    name = "actions_import"
    verbose_name = "Import actions"

    def ready(self):
        pass  # the import pipeline registers here once it exists
