"""Status vocabulary shared by every action type."""

from django.db import models


class ActionStatus(models.TextChoices):
    """The statuses the core itself assigns; running steps add their own (e.g. `uploading`)."""

    WAITING = "waiting"
    SUCCESS = "success"
    FAILURE = "failure"
    CANCELLED = "cancelled"


TERMINAL_STATUSES = (ActionStatus.SUCCESS, ActionStatus.FAILURE, ActionStatus.CANCELLED)
PENDING = "pending"  # the filter word for "not terminal"


class StepState(models.TextChoices):
    """Where the current step stands; the runner's own bookkeeping, never shown to users."""

    HELD = "held"  # waiting for something outside the runner (e.g. uploaded data)
    QUEUED = "queued"  # a task for the step is on the broker
    RUNNING = "running"  # a worker claimed the step
    DONE = "done"  # the action is terminal


class ImageStatus(models.TextChoices):
    ACTIVE = "active"
    DELETED = "deleted"


class Visibility(models.TextChoices):
    PRIVATE = "private"
    SHARED = "shared"
