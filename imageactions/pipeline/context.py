"""StepContext: what a running step (or a hook) may use while the runner holds the action for it."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from django.conf import settings

from ..models import PROGRESS_TARGETS, ImageAction
from ..stores import ImageStore, default_store, get_store
from .errors import ActionCancelled, RunSuperseded
from .registry import Step
from .stopping import raise_if_grace_over


def scratch_dir(action_id) -> Path:
    """The action's private working directory on this worker (removed when the action ends)."""
    return settings.SCRATCH_DIR / str(action_id)


def action_id_named(name: str) -> str | None:
    """The action id a scratch directory's name, or a staging key ("<id>/staged"), starts with;
    None for a name that is no action's (not ours to remove)."""
    try:
        return str(uuid.UUID(name.split("/", 1)[0]))
    except ValueError:
        return None


class StepContext:
    """Scratch space, stores, progress reporting with cancel checks, and saving the action's state.

    Every write goes through the run's token: once the run no longer owns the action (the
    reaper gave the step to another worker, or the action ended), nothing it writes lands.
    Hooks that run outside a step (finish, clean_up) get a context with no step and no token,
    for its stores and scratch space.
    """

    def __init__(self, action: ImageAction, step: Step | None, token: uuid.UUID | None):
        self.action = action
        self.step = step
        self.token = token
        self._last_write = 0.0

    @property
    def scratch(self) -> Path:
        path = scratch_dir(self.action.pk)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def store(self, name: str | None = None) -> ImageStore:
        """The image store called `name` (StoreError when none is), or the default store."""
        return get_store(name) if name else default_store()

    def save_state(self) -> None:
        """Persist `action.state` now, before bytes move, so that whoever comes after a crash
        (a re-run, the clean-up) finds what this run is about to write."""
        if not self._owned().save_state(self.action.state):
            raise RunSuperseded()

    def progress(self, done: int, total: int | None = None, *, force: bool = False) -> None:
        """Record progress (throttled); stop the step if the action was cancelled, or if this
        process is stopping and the step's grace period is over."""
        raise_if_grace_over()  # before the throttle: a stopping process must not wait for a write
        now = time.monotonic()
        if not force and now - self._last_write < settings.PROGRESS_WRITE_INTERVAL:
            return
        self._last_write = now
        # One UPDATE on the usual path; only when it matched nothing ask why.
        state = self.action.state if PROGRESS_TARGETS in self.action.state else None
        if self._owned().report_progress(done, total, state):
            return
        self.check_cancelled()
        raise RunSuperseded()

    def show_targets(self, targets: dict[str, dict]) -> None:
        """The progress of each place the action writes to (a clone's target stores), shown as
        `progress.targets`: name -> {"status", "bytes_done", "bytes_total"}. Kept in the action's
        state and written with the next progress() or save_state() (or, from `finish`, with the
        action's success)."""
        # A list keeps their order: the keys of a JSON object in PostgreSQL lose it.
        self.action.state[PROGRESS_TARGETS] = [{**target, "name": name} for name, target in targets.items()]

    def check_cancelled(self) -> None:
        """Stop the step if the action was cancelled (or this process is stopping, as progress)."""
        raise_if_grace_over()
        if self._owned().filter(cancel_requested=True).exists():
            raise ActionCancelled()

    def _owned(self):
        return ImageAction.objects.filter(pk=self.action.pk).owned_by(self.token)
