"""Registers the `clone` action type with the core pipeline registry."""
from django.apps import AppConfig


class ActionsCloneConfig(AppConfig):
    name = "actions_clone"
    verbose_name = "Clone actions"

    def ready(self):
        pass  # the clone pipeline registers here once it exists
