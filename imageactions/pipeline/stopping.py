"""Whether the process running steps was asked to stop (a restart, a deploy, a shutdown).

A worker process is told by its cluster when the cluster stops; an API process by gunicorn's
SIGTERM. The request only records a deadline (it is made from signal handlers); running steps
see it at their next progress or cancel check (StepContext), once the deadline has passed.
"""

from __future__ import annotations

import time

from .errors import ProcessStopping

_deadline: float | None = None


def request_stop(grace: float) -> None:
    """This process should stop: its running step may go on for `grace` more seconds.

    Safe in a signal handler (one assignment); a second request never extends the first.
    """
    global _deadline
    if _deadline is None:
        _deadline = time.monotonic() + max(0.0, grace)


def stop_requested() -> bool:
    """The process is stopping: it should start no new work."""
    return _deadline is not None


def raise_if_grace_over() -> None:
    """Raise ProcessStopping once the process is stopping and its running step's grace is over."""
    if _deadline is not None and time.monotonic() >= _deadline:
        raise ProcessStopping()
