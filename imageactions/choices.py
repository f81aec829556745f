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


class ErrorCode(models.TextChoices):
    """Why an action failed, for programs: a failed action's `error_code` (its `message` says it
    in words, its `error_details` gives the values checked), the ?error_code= filter and the
    metrics' label. Stable: codes are added, never renamed. The README's table lists them."""

    # The source or destination
    SOURCE_NOT_FOUND = "source_not_found"  # 404 or 410, no such object or bucket
    SOURCE_REFUSED = "source_refused"  # another answer than the bytes: a status, access denied, redirects
    SOURCE_UNREACHABLE = "source_unreachable"  # no connection (DNS, refused, TLS, timeouts), or a 5xx/SlowDown
    SOURCE_INTERRUPTED = "source_interrupted"  # the bytes stopped coming and could not be resumed
    URL_NOT_ALLOWED = "url_not_allowed"  # the URL policy refused the location or a redirect
    UPLOAD_INTERRUPTED = "upload_interrupted"  # the upload's connection or its API server went away
    DESTINATION_UNREACHABLE = "destination_unreachable"  # no connection to an export's destination, or a 5xx
    DESTINATION_NOT_FOUND = "destination_not_found"  # an export's destination answered 404 or 410
    DESTINATION_REFUSED = "destination_refused"  # another answer than success: a status, a redirect, a taken key
    # The bytes
    EMPTY_IMAGE = "empty_image"
    CHECKSUM_MISMATCH = "checksum_mismatch"  # the bytes do not have the checksum given
    FORMAT_MISMATCH = "format_mismatch"  # the bytes are another disk format than declared
    NOT_A_DISK_IMAGE = "not_a_disk_image"  # a video, a document, text, ...
    UNSAFE_IMAGE = "unsafe_image"  # a disk image that could read other files or pass a limit
    MALFORMED_IMAGE = "malformed_image"  # truncated, or a header no valid image has
    IMAGE_TOO_LARGE = "image_too_large"  # beyond the service's size caps
    DECOMPRESSION_FAILED = "decompression_failed"  # corrupt or truncated compressed data
    DECOMPRESSION_LIMIT = "decompression_limit"  # expands beyond the caps (a possible bomb)
    CONVERSION_FAILED = "conversion_failed"  # qemu-img could not convert it
    # The service
    QUOTA_EXCEEDED = "quota_exceeded"  # the project's quota does not allow the bytes
    STORE_UNAVAILABLE = "store_unavailable"  # an image store could not be read or written
    IMAGE_NOT_FOUND = "image_not_found"  # the image the action reads was deleted or is no longer active
    IMAGE_DATA_MISSING = "image_data_missing"  # an image's bytes are gone from its store (or the worker's scratch)
    TIMED_OUT = "timed_out"  # the step ran past its time limit
    WORKER_LOST = "worker_lost"  # the worker running the step died, too many times
    DATA_NOT_RECEIVED = "data_not_received"  # the upload (or the release after staging) never came
    NOT_INSTALLED = "not_installed"  # the action's type is not installed on this service
    INTERNAL_ERROR = "internal_error"  # a bug: an unexpected exception in the service's code
    STEP_FAILED = "step_failed"  # a failure no code above names yet; the message says what


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
    # The running step is done and its worker runs the next one itself, as a new run (same pool).
    "carry_on": (frozenset({StepState.RUNNING}), StepState.RUNNING),
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


class WebhookEvent(models.TextChoices):
    """The `type` of a webhook notification."""

    CREATED = "action.created"  # the action was created (status waiting)
    STATUS_CHANGED = "action.status_changed"
    ENDED = "action.ended"  # success, failure or cancelled


class DeliveryState(models.TextChoices):
    """Where the delivery of a webhook notification stands."""

    PENDING = "pending"  # not yet answered with a 2xx; tried (again) at its next_attempt_at
    DELIVERED = "delivered"
    GIVEN_UP = "given_up"  # every attempt failed


class AttemptOutcome(models.TextChoices):
    """How one attempt at delivering a webhook notification went."""

    DELIVERED = "delivered"  # a 2xx answer
    HTTP_ERROR = "http_error"  # another answer
    TIMED_OUT = "timed_out"
    UNREACHABLE = "unreachable"  # no connection: DNS, refused, TLS
    URL_NOT_ALLOWED = "url_not_allowed"  # the URL policy refused the address: nothing was sent


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
