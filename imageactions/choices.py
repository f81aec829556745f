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


class FailureKind(models.TextChoices):
    """Why an action failed, as the runner sees it (the `error_code` label of the ended-actions
    metric): the step refused the input or its source or store failed, or the service failed it."""

    STEP_FAILED = "step_failed"  # the step's own error, with its message for the user
    INTERNAL_ERROR = "internal_error"  # a bug: an unexpected exception in the service's code
    TIMED_OUT = "timed_out"  # the step ran past its time limit
    WORKER_LOST = "worker_lost"  # the worker running the step died, too many times
    DATA_NOT_RECEIVED = "data_not_received"  # the upload (or the release after staging) never came
    NOT_INSTALLED = "not_installed"  # the action's type is not installed on this service


class StepState(models.TextChoices):
    """Where the current step stands; the runner's own bookkeeping, never shown to users."""

    HELD = "held"  # waiting for something outside the runner (e.g. uploaded data)
    QUEUED = "queued"  # a task for the step is on the broker
    RUNNING = "running"  # a worker claimed the step
    DONE = "done"  # the action is terminal


# Every change of an action's step state, by name: the states it may start from and the state it
# leaves. ImageActionQuerySet has one method per name, each a conditional UPDATE that matches only
# rows in a starting state, so a transition not in this table cannot happen.
STEP_TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    # A worker takes the queued step, or an upload takes the step held for its data.
    "claim": (frozenset({StepState.QUEUED, StepState.HELD}), StepState.RUNNING),
    # The queued step does not apply to the action: the next one that does is queued instead.
    "skip_to": (frozenset({StepState.QUEUED}), StepState.QUEUED),
    # The running step is done (or its data arrived): the action's next step is queued.
    "hand_over": (frozenset({StepState.RUNNING}), StepState.QUEUED),
    # The data arrived, and the action waits again until it is released (Glance's stage, then import).
    "hold_after_data": (frozenset({StepState.RUNNING}), StepState.HELD),
    # A held action is told to go on.
    "release": (frozenset({StepState.HELD}), StepState.QUEUED),
    # The worker running the step died: the same step is queued again.
    "requeue_lost_run": (frozenset({StepState.RUNNING}), StepState.QUEUED),
    # The worker running the step is stopping (a restart): it queues the same step again itself.
    "hand_back": (frozenset({StepState.RUNNING}), StepState.QUEUED),
    # The action ends (success, failure or cancelled), whatever its step was doing.
    "end": (frozenset({StepState.HELD, StepState.QUEUED, StepState.RUNNING}), StepState.DONE),
    # The action ends while no worker holds it (a cancel, an upload that never came).
    "end_unclaimed": (frozenset({StepState.HELD, StepState.QUEUED}), StepState.DONE),
    # An operator starts a failed action again from its first step.
    "restart": (frozenset({StepState.DONE}), StepState.QUEUED),
}


class ImageRole(models.TextChoices):
    """How an action relates to an image."""

    READ = "read"  # the action reads the image (export, clone, convert)
    MADE = "made"  # the action created the image (import, clone, convert)


class ImageStatus(models.TextChoices):
    """Glance's image statuses, as its clients expect them."""

    QUEUED = "queued"  # a record without bytes yet (created, or an import failed)
    SAVING = "saving"  # bytes sent to its file are being verified and stored
    UPLOADING = "uploading"  # bytes are being staged for it
    IMPORTING = "importing"  # an import action works on it
    ACTIVE = "active"  # verified bytes in a store
    DEACTIVATED = "deactivated"  # its bytes are kept, but no one may download them
    KILLED = "killed"
    DELETED = "deleted"


class Visibility(models.TextChoices):
    """Glance's visibilities: public and community images are readable by every project."""

    PUBLIC = "public"
    COMMUNITY = "community"
    SHARED = "shared"
    PRIVATE = "private"
