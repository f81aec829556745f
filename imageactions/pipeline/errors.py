"""How a step ends other than by returning: errors the user reads, passing faults, a cancel."""


class StepError(Exception):
    """A step failed for a reason the user can act on: str(error) becomes the action's message,
    `code` its error_code (choices.ErrorCode) and `details` its error_details (the values checked)."""

    def __init__(self, message: str, *, code: str = "step_failed", details: dict | None = None):
        super().__init__(message)
        self.code, self.details = code, details or {}


def error_code_of(error: Exception) -> str:
    """The error code of an error raised by the core's helpers (formats, transfers, stores,
    quotas, the Swift client)."""
    from ..formats.compression import DecompressionError, DecompressionLimitError
    from ..formats.errors import FormatMismatchError, MalformedImageError, NotADiskImageError, UnsafeImageError
    from ..quotas import QuotaExceeded
    from ..stores import ObjectNotFound, StoreError
    from ..swift import SwiftError, SwiftNotConfigured, SwiftNotFound, SwiftRefused, SwiftUnavailable
    from ..transfer import SizeLimitExceeded, TransferError

    for kind, code in (
        (FormatMismatchError, "format_mismatch"),
        (UnsafeImageError, "unsafe_image"),
        (NotADiskImageError, "not_a_disk_image"),
        (MalformedImageError, "malformed_image"),
        (DecompressionLimitError, "decompression_limit"),
        (DecompressionError, "decompression_failed"),
        (SizeLimitExceeded, "image_too_large"),
        (TransferError, "source_interrupted"),
        (ObjectNotFound, "image_data_missing"),
        (StoreError, "store_unavailable"),
        (QuotaExceeded, "quota_exceeded"),
        # A swift:// source, read by the Swift client.
        (SwiftNotFound, "source_not_found"),
        (SwiftRefused, "source_refused"),
        (SwiftNotConfigured, "url_not_allowed"),
        (SwiftUnavailable, "source_unreachable"),
        (SwiftError, "source_refused"),  # another answer than the object: an unexpected 4xx
        (StepError, getattr(error, "code", "step_failed")),
    ):
        if isinstance(error, kind):
            return code
    return "step_failed"


def error_details_of(error: Exception) -> dict:
    """The values an error of the core's helpers checked, as error_details (the limit passed)."""
    from ..quotas import QuotaExceeded
    from ..transfer import SizeLimitExceeded

    if isinstance(error, SizeLimitExceeded):
        return {"limit": error.limit}
    if isinstance(error, QuotaExceeded):
        return {"quota": error.quota, "limit": error.limit, "usage": error.usage}
    return dict(getattr(error, "details", None) or {})


def step_error_of(error: Exception) -> StepError:
    """A core helper's error as the StepError that ends a step: its words, its code, its details."""
    return StepError(str(error), code=error_code_of(error), details=error_details_of(error))


class RetryableStepError(StepError):
    """A passing fault (network, store busy): the runner retries the step with backoff."""


class ActionCancelled(Exception):
    """Raised inside a step (by ctx.progress) when the user cancelled the action."""


class RunSuperseded(Exception):
    """This run no longer owns the action (the reaper re-queued it, or it was finished)."""


class ProcessStopping(Exception):
    """Raised inside a step (by ctx.progress) when the process running it is stopping and the
    step's grace period is over: the runner hands the step back to the queue (or, for uploaded
    data that no other process can receive, ends the action)."""
