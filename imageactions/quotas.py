"""Per-project quotas, so that a project is stopped by a clear error rather than by a full disk.

Four quotas, named as Glance names them (GET /v2/info/usage has Glance's shape):
- `pending_actions`: actions not yet ended;
- `image_count_total`: images, counting each pending action that will make one;
- `image_size_total`: bytes of the project's images, each stored copy counted;
- `image_stage_total`: bytes the project's pending imports have received so far.

Defaults come from settings (QUOTA_*, -1: no limit) and a project's ProjectQuota row (in the
admin) overrides them. Creates are checked here; an import's bytes are checked again while
they arrive (import_size_cap), since a source may be bigger than it said.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db.models import F, Sum

from .formats.errors import human_size
from .models import Image, ImageAction, ImageLocation, ProjectQuota

PENDING_ACTIONS = "pending_actions"
IMAGE_COUNT = "image_count_total"
IMAGE_SIZE = "image_size_total"
IMAGE_STAGE = "image_stage_total"
QUOTAS = (PENDING_ACTIONS, IMAGE_COUNT, IMAGE_SIZE, IMAGE_STAGE)
BYTE_QUOTAS = (IMAGE_SIZE, IMAGE_STAGE)
UNLIMITED = -1


class QuotaExceeded(Exception):
    """A quota would be passed; the text says which, its limit and the usage."""

    def __init__(self, quota: str, limit: int, usage: int):
        self.quota, self.limit, self.usage = quota, limit, usage
        shown = human_size if quota in BYTE_QUOTAS else str
        super().__init__(
            f"The project's {quota} quota is {shown(limit)} and {shown(usage)} "
            f"{'is' if quota in BYTE_QUOTAS else 'are'} in use. "
            "Delete what you no longer need, or ask an operator for a larger quota."
        )


@dataclass(frozen=True)
class Quota:
    limit: int
    usage: int

    @property
    def left(self) -> int | None:
        return None if self.limit == UNLIMITED else max(0, self.limit - self.usage)


def limits(project: str) -> dict[str, int]:
    defaults = {
        PENDING_ACTIONS: settings.QUOTA_PENDING_ACTIONS,
        IMAGE_COUNT: settings.QUOTA_IMAGE_COUNT,
        IMAGE_SIZE: settings.QUOTA_IMAGE_SIZE,
        IMAGE_STAGE: settings.QUOTA_IMAGE_STAGE,
    }
    override = ProjectQuota.objects.filter(project=project).first()
    if override:
        for name in QUOTAS:
            value = getattr(override, name)
            if value is not None:
                defaults[name] = value
    return defaults


def usage(project: str, names=QUOTAS, *, limited_only: bool = False) -> dict[str, Quota]:
    """The project's quotas `names` with what each uses now; with `limited_only`, only those that
    have a limit, so that a create costs no counting while the quotas are unlimited (the default)."""
    project_limits = limits(project)
    return {
        name: Quota(project_limits[name], _USED[name](project))
        for name in names
        if not (limited_only and project_limits[name] == UNLIMITED)
    }


def check_create(project: str, *, makes_image: bool, stages_bytes: bool) -> None:
    """Refuse a new action that would pass a quota (or that one already used up)."""
    _refuse_used_up(
        project,
        [
            PENDING_ACTIONS,
            *([IMAGE_COUNT, IMAGE_SIZE] if makes_image else []),
            *([IMAGE_STAGE] if stages_bytes else []),
        ],
    )


def check_image_record(project: str) -> None:
    """Refuse a new image record (Glance's create) that would pass the image count."""
    _refuse_used_up(project, [IMAGE_COUNT])


def _refuse_used_up(project: str, names) -> None:
    for name, quota in usage(project, names, limited_only=True).items():
        if quota.left == 0:
            raise QuotaExceeded(name, quota.limit, quota.usage)


def check_stored_bytes(project: str, adding: int) -> None:
    """Refuse `adding` more stored bytes (a clone's copies) when they would pass the project's
    image_size_total quota: checked when the bytes are about to be copied, not only at create."""
    for name, quota in usage(project, [IMAGE_SIZE], limited_only=True).items():
        if quota.usage + adding > quota.limit:
            raise QuotaExceeded(name, quota.limit, quota.usage)


def import_size_cap(project: str) -> tuple[int | None, str]:
    """The most bytes one import of the project may still receive under its byte quotas, and
    the quota that sets it; (None, "") when neither limits it."""
    caps = [(quota.left, name) for name, quota in usage(project, BYTE_QUOTAS, limited_only=True).items()]
    return min(caps) if caps else (None, "")


def quota_exceeded(project: str, quota: str) -> QuotaExceeded:
    """The error of `quota` with the project's limit and usage now (the bytes of an import
    that passed it are not in the usage: the import stopped)."""
    now = usage(project, [quota])[quota]
    return QuotaExceeded(quota, now.limit, now.usage)


def _pending(project: str):
    return ImageAction.objects.pending().filter(owner=project)


def _image_count(project: str) -> int:
    # An import made through /v2/image-actions has no Image until it ends: count it now (one
    # through Glance's API reads the image record it fills, so it has a link).
    making = _pending(project).filter(action_type__in=_image_making_types(), image_links__isnull=True)
    return Image.objects.filter(owner=project).count() + making.count()


def _image_size(project: str) -> int:
    stored = ImageLocation.objects.filter(image__owner=project, image__size__isnull=False)
    return stored.aggregate(total=Sum(F("image__size")))["total"] or 0


def _image_stage(project: str) -> int:
    staging = _pending(project).filter(action_type__in=_staging_types())
    return staging.aggregate(total=Sum("progress_done"))["total"] or 0


_USED = {
    PENDING_ACTIONS: lambda project: _pending(project).count(),
    IMAGE_COUNT: _image_count,
    IMAGE_SIZE: _image_size,
    IMAGE_STAGE: _image_stage,
}


def _image_making_types() -> list[str]:
    from .pipeline.registry import action_types

    return [name for name, action_type in action_types().items() if action_type.makes_images]


def _staging_types() -> list[str]:
    from .pipeline.registry import action_types

    return [name for name, action_type in action_types().items() if action_type.stages_bytes]
