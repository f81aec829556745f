"""What an action type declares (its input, steps and hooks) and the registry that holds them."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from django.conf import settings

if TYPE_CHECKING:
    from ..models import ImageAction
    from .context import StepContext


@dataclass(frozen=True)
class Step:
    """One stage of a pipeline, run as one django-q2 task on a worker pool."""

    name: str
    status: str  # what the action's `status` shows while this step runs
    run: Callable[[ImageAction, StepContext], None]
    pool: str = "default"
    timeout: int = 3600
    retries: int = 0  # extra attempts after a RetryableStepError
    backoff: float = 2.0  # seconds before the first retry, doubled for each further one
    # A step that does not apply to an action (e.g. no conversion asked) is skipped.
    applies: Callable[[ImageAction], bool] = lambda action: True

    def pool_for(self, action_type: str) -> str:
        return settings.STEP_POOLS.get(f"{action_type}.{self.name}", self.pool)


def cluster_of(pool: str) -> str:
    """The django-q2 cluster (broker queue) that serves a worker pool."""
    return settings.QUEUE_PREFIX + pool


@dataclass(frozen=True)
class StoredFile:
    """Bytes in an image store that the API serves as a download (streamed, with Range)."""

    store: str  # the name in settings.IMAGE_STORES
    key: str
    size: int
    filename: str  # what the client saves it as
    md5: str  # hex; the ETag and Content-MD5


# Path separators, quotes, control characters and anything a file system or header may mangle.
_UNSAFE_IN_FILENAMES = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(stem: str, disk_format: str, fallback: str) -> str:
    """`stem` plus the format's suffix, safe on every file system and in a header; `fallback`
    when nothing of `stem` is left."""
    stem = _UNSAFE_IN_FILENAMES.sub("_", stem).strip("._")[:200] or fallback
    suffix = "." + _UNSAFE_IN_FILENAMES.sub("_", disk_format) if disk_format else ""
    return stem if stem.lower().endswith(suffix.lower()) else stem + suffix


@dataclass(frozen=True)
class ImportRequest:
    """A Glance import of bytes into an image (POST /v2/images/{id}/import, or the stage and
    upload calls that are glance-direct), as the core checked it."""

    image: dict  # the image's Glance fields: id, name, disk_format
    method: dict  # the request's `method` object: name, uri, ...
    stores: list[str]  # where the bytes go: known stores, none holding the image already
    all_stores_must_succeed: bool = True  # False: the stores that can be written are enough


@dataclass(frozen=True)
class ImportMethod:
    """A Glance import method an action type carries out."""

    # The action's input for the request (the input serializer still checks it).
    make_input: Callable[[ImportRequest], dict]
    # True: copies an active image's bytes into more stores (copy-image); False: fills a record
    # that awaits its bytes.
    copies_active_image: bool = False


def _nothing(_data: dict) -> Iterable[str]:
    return ()


@dataclass(frozen=True)
class ActionType:
    """What an action type declares: its input, its steps, its hooks into the runner, and what
    the core needs to know to serve it without naming it (its alias, the images it touches)."""

    name: str
    input_serializer: type
    steps: tuple[Step, ...]
    description: str = ""
    # The same resource at /v2/<alias> with the type fixed (e.g. "image-imports"); None: no alias.
    alias: str | None = None
    # Describes `result` on success, for the schema (the stored dict is shown as it is).
    result_serializer: type | None = None
    # Ids of the images an action reads, from its validated input, and of those it made, from
    # its result: `?image_id=`, the guard that keeps an image being read from deletion, and the
    # operators' search use them.
    images_read: Callable[[dict], Iterable[str]] = _nothing
    images_made: Callable[[dict], Iterable[str]] = _nothing
    # The result as users see it; gets the result and a function that turns a path under this
    # API into an absolute URL (a worker cannot know the host name clients use).
    present_result: Callable[[dict, Callable[[str], str]], dict] | None = None
    # Extra admin search fields, e.g. "input__location".
    admin_search_fields: tuple[str, ...] = ()
    # Called by the runner in the same transaction that marks the action `success`
    # (e.g. create the Image record), so a cancel can never race a half-finished result.
    finish: Callable[[ImageAction, StepContext], None] | None = None
    # Called after failure or cancel, and on purge: remove what the steps left behind.
    clean_up: Callable[[ImageAction, StepContext], None] | None = None
    # Given the validated input, whether the action waits for data before its first step.
    awaits_data: Callable[[dict], bool] = lambda data: False
    # Receives the body of PUT /v2/image-actions/{id}/data for an action that awaits data.
    receive_data: Callable[[ImageAction, object, StepContext], None] | None = None
    # Given the validated input, whether the action waits again once its data arrived, until it
    # is released (Glance's stage, then import).
    holds_after_data: Callable[[dict], bool] = lambda data: False
    # Glance's interoperable import methods this type carries out, by name ("glance-direct"
    # also serves PUT /v2/images/{id}/stage and /file).
    import_methods: dict[str, ImportMethod] = field(default_factory=dict, hash=False, compare=False)
    # POST ...?dry_run=true: given the validated input and the project asking, what the action
    # would find, checked without changing anything (e.g. the first bytes of an import's source,
    # against the project's byte quotas); raises StepError with the message the action would
    # fail with. None: validating the input is all there is.
    dry_run: Callable[[dict, str], dict] | None = None
    # For the quotas (imageactions.quotas): whether an action makes an image (its creates count
    # against the image quotas) and whether it stages bytes from outside (its progress counts
    # against the staging quota).
    makes_images: bool = False
    stages_bytes: bool = False
    # Derives `image_properties` shown on the action from its validated input.
    image_properties: Callable[[dict], dict] = lambda data: {}
    # The file a successful action offers at GET /v2/image-actions/{id}/file (e.g. an export's
    # bytes), or None when it has none.
    result_file: Callable[[ImageAction], StoredFile | None] | None = None
    statuses: tuple[str, ...] = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "statuses", tuple(dict.fromkeys(step.status for step in self.steps)))

    def next_step_index(self, action: ImageAction, start: int) -> int | None:
        """The first step from `start` on that applies to `action`; None when none is left."""
        for index in range(start, len(self.steps)):
            if self.steps[index].applies(action):
                return index
        return None


_registry: dict[str, ActionType] = {}


def register(action_type: ActionType) -> None:
    if action_type.name in _registry and _registry[action_type.name] is not action_type:
        raise ValueError(f"action type {action_type.name!r} is registered twice")
    _registry[action_type.name] = action_type


def get_action_type(name: str) -> ActionType | None:
    return _registry.get(name)


def action_types() -> dict[str, ActionType]:
    return dict(_registry)


def step_statuses() -> list[str]:
    """Every status a registered step can show, in registration order."""
    return list(dict.fromkeys(status for at in _registry.values() for status in at.statuses))
