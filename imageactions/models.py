"""The ImageAction resource with its step log, the Image it produces, and project membership."""

import uuid
from datetime import timedelta

from django.conf import settings
from django.db import models, transaction
from django.db.models import F, JSONField, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from .choices import (
    STEP_TRANSITIONS,
    TERMINAL_STATUSES,
    ActionStatus,
    DeliveryState,
    ImageRole,
    ImageStatus,
    StepState,
    Visibility,
    WebhookEvent,
)


class ProjectMember(models.Model):
    """Puts a user in a project; the project owns every action and image its members create."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="project_member")
    project = models.CharField(max_length=64, db_index=True)

    def __str__(self):
        return f"{self.user} in {self.project}"


class ProjectQuota(models.Model):
    """A project's own quotas, overriding the settings' defaults (empty: the default; -1: no
    limit); see imageactions.quotas."""

    project = models.CharField(max_length=64, unique=True)
    pending_actions = models.BigIntegerField(null=True, blank=True, help_text="Actions not yet ended.")
    image_count_total = models.BigIntegerField(null=True, blank=True, help_text="Images.")
    image_size_total = models.BigIntegerField(null=True, blank=True, help_text="Bytes of images, each copy counted.")
    image_stage_total = models.BigIntegerField(null=True, blank=True, help_text="Bytes received by pending imports.")

    def __str__(self):
        return f"quotas of {self.project}"


class ApiToken(models.Model):
    """A user's API token, kept as its SHA-256 only: the token itself is shown once, when
    `manage.py create_api_user` makes it (tokens are 160 random bits, so no salt is needed)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_token")
    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return f"token of {self.user}"


class ImageActionQuerySet(models.QuerySet):
    """Every change of an action's status or step state is one of the named methods below: a
    conditional UPDATE that matches only rows in a starting state of choices.STEP_TRANSITIONS
    (and, where a run does it, only rows that run still owns). Each answers how many rows changed."""

    def pending(self):
        # Written exactly like the partial index's condition so PostgreSQL can use it.
        return self.filter(~Q(status__in=TERMINAL_STATUSES))

    def owned_by(self, token):
        """The rows the run holding `token` still owns."""
        return self.filter(run_token=token)

    def update(self, **fields):
        # The runner changes actions with conditional UPDATEs, which bypass auto_now:
        # stamp updated_at here so `updated_after` and `ordering=updated_at` see every change.
        fields.setdefault("updated_at", timezone.now())
        return super().update(**fields)

    def _transition(self, name: str, **fields) -> int:
        sources, target = STEP_TRANSITIONS[name]
        rows = self.filter(step_state__in=sources)
        if "status" not in fields:
            return rows.update(step_state=target, **fields)
        with transaction.atomic():
            # The watched actions whose status this changes, locked so that the UPDATE changes
            # exactly them (besides unwatched ones): their notifications are written in the same
            # transaction as the change, so none is lost and none is made for a change that failed.
            watched = rows.exclude(notify_url="").exclude(status=fields["status"]).select_for_update()
            changes = list(watched.values_list("pk", "status"))
            # Only the watched rows locked above: one that came to match since (a concurrent
            # transition committed in between) is left as it is, never changed unnoticed.
            unwatched = Q(notify_url="") | Q(status=fields["status"])
            count = rows.filter(unwatched | Q(pk__in=[pk for pk, _ in changes])).update(step_state=target, **fields)
            if changes:
                from .webhooks import record_status_changes  # it reads these models

                record_status_changes(changes)
        return count

    # -- the transitions ------------------------------------------------------------------

    def claim(self, *, step_index, attempt, from_state, step_name, status, token, worker) -> int:
        """Give the step to the run holding `token`, if it is still due and not cancelled."""
        now = timezone.now()
        return (
            self.pending()
            .filter(step_index=step_index, attempt=attempt, step_state=from_state, cancel_requested=False)
            ._transition(
                "claim",
                status=status,
                run_token=token,
                worker=worker,
                heartbeat_at=now,
                started_at=Coalesce("started_at", now),
                progress_step=step_name,
                progress_done=0,
                progress_total=None,
            )
        )

    def skip_to(self, *, from_index, step_index) -> int:
        """Queue step `step_index` instead of the queued `from_index`, which does not apply."""
        return self.filter(step_index=from_index)._transition("skip_to", step_index=step_index)

    def hand_over(self, *, token, step_index, **saved) -> int:
        """The run ends well: queue `step_index` (the next step, or the same one once its data is
        in) with what the run recorded (`saved`: state, result, image_properties)."""
        return (
            self.pending()
            .owned_by(token)
            .filter(cancel_requested=False)
            ._transition(
                "hand_over", step_index=step_index, attempt=1, run_token=None, queued_at=timezone.now(), **saved
            )
        )

    def carry_on(self, *, token, next_token, step_index, step_name, status, **saved) -> int:
        """The run ends well and its worker runs step `step_index` right away, as the run holding
        `next_token`: a hand-over and a claim in one, with nothing queued in between."""
        return (
            self.pending()
            .owned_by(token)
            .filter(cancel_requested=False)
            ._transition(
                "carry_on",
                step_index=step_index,
                attempt=1,
                run_token=next_token,
                status=status,
                heartbeat_at=timezone.now(),
                progress_step=step_name,
                progress_done=0,
                progress_total=None,
                **saved,
            )
        )

    def hold_after_data(self, *, token, state) -> int:
        """The data arrived: the action waits again, with `state` saying so, until released."""
        return (
            self.pending()
            .owned_by(token)
            .filter(cancel_requested=False)
            # A new attempt number: an upload that read the action before cannot claim it again;
            # queued_at: the wait for the release counts from now.
            ._transition(
                "hold_after_data", run_token=None, state=state, attempt=F("attempt") + 1, queued_at=timezone.now()
            )
        )

    def release(self, **fields) -> int:
        """Let a held action go on: its current step is queued (`fields`: what the release changes)."""
        return self.pending().filter(cancel_requested=False)._transition("release", queued_at=timezone.now(), **fields)

    def requeue_lost_run(self, *, token, restarts) -> int:
        """The worker of the run holding `token` died: queue its step again, unless it was cancelled."""
        return (
            self.owned_by(token)
            .filter(cancel_requested=False)
            ._transition("requeue_lost_run", run_token=None, restarts=restarts, queued_at=timezone.now())
        )

    def hand_back(self, *, token) -> int:
        """The worker of the run holding `token` is stopping: queue its step again, unless it was
        cancelled. Not a restart after a crash: `restarts` stays as it is."""
        return (
            self.owned_by(token)
            .filter(cancel_requested=False)
            ._transition("hand_back", run_token=None, queued_at=timezone.now())
        )

    def end(self, status, message="", **saved) -> int:
        """End the actions, whatever their step was doing, with `status`; they expire after ACTION_TTL
        (`saved` may give the times, see ended_times)."""
        return self.pending()._transition("end", **{**_ended_fields(status, message), **saved})

    def end_unclaimed(self, status, message, **saved) -> int:
        """End the actions that no worker holds (queued or held for data)."""
        return self.pending()._transition("end_unclaimed", **_ended_fields(status, message), **saved)

    def restart(self) -> int:
        """Start failed actions again from their first step."""
        return self.filter(status=ActionStatus.FAILURE)._transition(
            "restart",
            status=ActionStatus.WAITING,
            step_index=0,
            attempt=1,
            restarts=0,
            run_token=None,
            cancel_requested=False,
            message="",
            error_code="",
            error_details={},
            state={},
            result={},
            finished_at=None,
            expires_at=None,
            queued_at=timezone.now(),
            progress_step="",
            progress_done=0,
            progress_total=None,
        )

    # -- what a run records while it owns the action ----------------------------------------

    def save_state(self, state: dict) -> int:
        return self.update(state=state)

    def report_progress(self, done: int, total: int | None, state: dict | None = None) -> int:
        """Progress and a heartbeat, on rows not cancelled (0 rows: ask why); with `state`, the
        action's state too (it holds the progress of each target, PROGRESS_TARGETS)."""
        fields = {"progress_done": done, "heartbeat_at": timezone.now()}
        if total is not None:
            fields["progress_total"] = total
        if state is not None:
            fields["state"] = state
        return self.filter(cancel_requested=False).update(**fields)


def ended_times() -> dict:
    """`finished_at` now and `expires_at` ACTION_TTL later, for an action that ends now."""
    now = timezone.now()
    return {"finished_at": now, "expires_at": now + timedelta(seconds=settings.ACTION_TTL)}


def _ended_fields(status, message) -> dict:
    return dict(status=status, run_token=None, message=message, **ended_times())


class ImageAction(models.Model):
    """One tracked, asynchronous piece of work on images (import, export, clone, ...)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    action_type = models.CharField(max_length=32)
    # No choices: running steps contribute their own statuses (see imageactions.pipeline).
    status = models.CharField(max_length=32, default=ActionStatus.WAITING)
    owner = models.CharField(max_length=64)
    input = models.JSONField(default=dict)
    image_properties = models.JSONField(default=dict, blank=True)
    result = models.JSONField(default=dict, blank=True)
    message = models.TextField(blank=True, default="")

    progress_step = models.CharField(max_length=64, blank=True, default="")
    progress_done = models.BigIntegerField(default=0)
    progress_total = models.BigIntegerField(null=True, blank=True)

    # The runner's bookkeeping: which step, in what state, claimed by which run.
    step_index = models.PositiveSmallIntegerField(default=0)
    step_state = models.CharField(max_length=16, choices=StepState.choices, default=StepState.QUEUED)
    attempt = models.PositiveSmallIntegerField(default=1)
    restarts = models.PositiveSmallIntegerField(default=0)
    run_token = models.UUIDField(null=True, blank=True)
    worker = models.CharField(max_length=128, blank=True, default="")
    queued_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)
    # Why it failed, for programs (choices.ErrorCode), with the values checked; empty otherwise.
    # Defaults in the database too (db_default), here and below: during a rolling deploy, processes
    # of the release before, which know no such column, still insert actions.
    error_code = models.CharField(max_length=32, blank=True, default="", db_default="")
    error_details = models.JSONField(default=dict, blank=True, db_default=Value({}, JSONField()))
    # The user's own key/value labels (imageactions.validators.validate_labels), filterable.
    labels = models.JSONField(default=dict, blank=True, db_default=Value({}, JSONField()))
    # Where each status change is POSTed (imageactions.webhooks); empty: nowhere.
    notify_url = models.CharField(max_length=2048, blank=True, default="", db_default="")
    # The X-Request-Id of the request that created it: the workers' log lines carry it too.
    request_id = models.CharField(max_length=128, blank=True, default="", db_default="")
    # What steps hand to later steps (e.g. the staged file and its hashes); never shown to users.
    state = models.JSONField(default=dict, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    objects = ImageActionQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # "This owner's pending actions, newest first" reads only the pending rows.
            models.Index(
                fields=["owner", "-created_at"],
                condition=~Q(status__in=TERMINAL_STATUSES),
                name="action_owner_pending_idx",
            ),
            models.Index(fields=["owner", "-created_at"], name="action_owner_created_idx"),
            models.Index(fields=["owner", "action_type", "-created_at"], name="action_owner_type_idx"),
            models.Index(fields=["owner", "-updated_at"], name="action_owner_updated_idx"),
            # The reaper's and purge's scans.
            models.Index(fields=["step_state", "heartbeat_at"], name="action_step_state_idx"),
            models.Index(fields=["expires_at"], name="action_expires_idx"),
        ]

    def __str__(self):
        return f"{self.action_type} {self.id} ({self.status})"

    @property
    def progress(self) -> dict:
        shown = {
            "step": self.progress_step or None,
            "bytes_done": self.progress_done,
            "bytes_total": self.progress_total,
            "percent": _percent(self.progress_done, self.progress_total, self.status == ActionStatus.SUCCESS),
        }
        targets = (self.state or {}).get(PROGRESS_TARGETS)
        if targets:
            shown["targets"] = {
                target["name"]: {
                    "status": target["status"],
                    "bytes_done": target["bytes_done"],
                    "bytes_total": target["bytes_total"],
                    "percent": _percent(target["bytes_done"], target["bytes_total"], False),
                }
                for target in targets
            }
        return shown


# The key of `ImageAction.state` that holds each target's progress, in order (StepContext.show_targets).
PROGRESS_TARGETS = "progress_targets"


def _percent(done: int, total: int | None, ended_well: bool) -> float | None:
    if total:
        return round(min(100.0, 100.0 * done / total), 1)
    return 100.0 if ended_well else None


class ActionEvent(models.Model):
    """One attempt at one step of an action: the timeline operators read in the admin."""

    action = models.ForeignKey(ImageAction, on_delete=models.CASCADE, related_name="events")
    step = models.CharField(max_length=64)
    status = models.CharField(max_length=32)
    attempt = models.PositiveSmallIntegerField(default=1)
    worker = models.CharField(max_length=128, blank=True, default="")
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=32, blank=True, default="")
    message = models.TextField(blank=True, default="")
    traceback = models.TextField(blank=True, default="")  # operators only, never in the API

    class Meta:
        ordering = ["started_at", "id"]

    def __str__(self):
        return f"{self.step} #{self.attempt}: {self.outcome or 'running'}"


class IdempotencyKey(models.Model):
    """An `Idempotency-Key` a project sent with a create, the request it came with and the answer
    it got: a retry with the same key within IDEMPOTENCY_WINDOW gets that answer again."""

    owner = models.CharField(max_length=64)
    key = models.CharField(max_length=255)
    request_digest = models.CharField(max_length=64)  # SHA-256 of the route and the body
    action = models.ForeignKey(ImageAction, on_delete=models.CASCADE, related_name="idempotency_keys")
    response = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["owner", "key"], name="idempotency_key_unique")]
        indexes = [models.Index(fields=["created_at"], name="idempotency_key_created_idx")]

    def __str__(self):
        return f"{self.owner}: {self.key}"


class WebhookSecret(models.Model):
    """The key a project's webhook notifications are signed with (HMAC-SHA256), made on first use."""

    project = models.CharField(max_length=64, unique=True)
    secret = models.CharField(max_length=128)
    created_at = models.DateTimeField(auto_now_add=True)
    rotated_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"webhook secret of {self.project}"


class WebhookDelivery(models.Model):
    """One notification of an action's status change to its notify_url (an outbox row written with
    the change) and the attempts at delivering it; deleted with the action."""

    action = models.ForeignKey(ImageAction, on_delete=models.CASCADE, related_name="deliveries")
    sequence = models.PositiveIntegerField()  # 1, 2, ... per action: the order of its changes
    event_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    event_type = models.CharField(max_length=32, choices=WebhookEvent.choices)
    url = models.CharField(max_length=2048)
    payload = models.JSONField()
    state = models.CharField(
        max_length=16, choices=DeliveryState.choices, default=DeliveryState.PENDING, db_default=DeliveryState.PENDING
    )
    # Each attempt: {"number", "at", "duration_ms", "status_code", "outcome", "error"}.
    attempts = models.JSONField(default=list, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # Held by the one task delivering it, until leased_until (a task that died lets it go then).
    lease = models.UUIDField(null=True, blank=True)
    leased_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["action", "sequence"]
        constraints = [models.UniqueConstraint(fields=["action", "sequence"], name="webhook_delivery_sequence")]
        indexes = [models.Index(fields=["state", "next_attempt_at"], name="webhook_delivery_due_idx")]
        verbose_name_plural = "webhook deliveries"

    def __str__(self):
        return f"{self.event_type} #{self.sequence} of {self.action_id}: {self.state}"


class ActionImage(models.Model):
    """An image an action reads (from its input) or made (in its result), as its action type
    declares: what `?image_id=`, the delete guard and the operators' search look up."""

    action = models.ForeignKey(ImageAction, on_delete=models.CASCADE, related_name="image_links")
    image_id = models.UUIDField()
    role = models.CharField(max_length=8, choices=ImageRole.choices)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["action", "image_id", "role"], name="action_image_unique"),
        ]
        indexes = [models.Index(fields=["image_id", "role"], name="action_image_idx")]

    def __str__(self):
        return f"{self.action_id} {self.role} {self.image_id}"


class Image(models.Model):
    """A disk image: a record (Glance's `queued` image) that gets verified bytes when an action
    imports them, and only then becomes `active`. Its bytes may be in several stores (its
    locations), each a complete copy with the same size and hashes."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=255, blank=True, default="")
    status = models.CharField(max_length=16, choices=ImageStatus.choices, default=ImageStatus.ACTIVE)
    disk_format = models.CharField(max_length=16, null=True, blank=True)
    container_format = models.CharField(max_length=16, null=True, blank=True, default="bare")
    size = models.BigIntegerField(null=True, blank=True)
    virtual_size = models.BigIntegerField(null=True, blank=True)
    checksum = models.CharField(max_length=32, null=True, blank=True)  # md5, as Glance reports it
    os_hash_algo = models.CharField(max_length=16, null=True, blank=True, default="sha512")
    os_hash_value = models.CharField(max_length=128, null=True, blank=True)
    properties = models.JSONField(default=dict, blank=True)
    owner = models.CharField(max_length=64)
    visibility = models.CharField(max_length=16, choices=Visibility.choices, default=Visibility.PRIVATE)
    protected = models.BooleanField(default=False)
    os_hidden = models.BooleanField(default=False)
    min_disk = models.PositiveIntegerField(default=0)
    min_ram = models.PositiveIntegerField(default=0)
    created_by_action = models.UUIDField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["owner", "-created_at"], name="image_owner_created_idx"),
            models.Index(fields=["owner", "name"], name="image_owner_name_idx"),
        ]

    def __str__(self):
        return f"{self.name or self.id} ({self.disk_format})"

    def _oldest_first(self) -> list["ImageLocation"]:
        # Sorted here, not by the query, so a prefetched list (a page of images) serves it.
        return sorted(self.locations.all(), key=lambda location: (location.created_at, location.pk))

    @property
    def location(self) -> "ImageLocation | None":
        """Where to read the bytes: the copy in the default store if there is one, else the oldest
        copy; None while the image has no bytes."""
        locations = self._oldest_first()
        for location in locations:
            if location.store == settings.DEFAULT_IMAGE_STORE:
                return location
        return locations[0] if locations else None

    @property
    def stores(self) -> list[str]:
        """The stores holding a copy of the bytes, oldest first."""
        return [location.store for location in self._oldest_first()]


class ImageLocation(models.Model):
    """A complete copy of an image's bytes: the object `key` in the image store `store`."""

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="locations")
    store = models.CharField(max_length=64)
    key = models.CharField(max_length=512)
    created_by_action = models.UUIDField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["image", "store"], name="image_location_one_per_store"),
            # A re-run step can never leave two copies from one action in one store.
            models.UniqueConstraint(fields=["created_by_action", "store"], name="image_location_one_per_action"),
        ]
        # "Does an image own this object?" (clean-ups, deletes).
        indexes = [models.Index(fields=["store", "key"], name="image_location_object_idx")]

    def __str__(self):
        return f"{self.image_id} in {self.store}:{self.key}"


class ImageTag(models.Model):
    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="tag_set")
    name = models.CharField(max_length=255)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["image", "name"], name="image_tag_unique")]
        indexes = [models.Index(fields=["name"], name="image_tag_name_idx")]

    def __str__(self):
        return self.name
