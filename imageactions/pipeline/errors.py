"""How a step ends other than by returning: errors the user reads, passing faults, a cancel."""


class StepError(Exception):
    """A step failed for a reason the user can act on; str(error) becomes the action's message."""


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
