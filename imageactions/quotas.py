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


def usage(project: str) -> dict[str, Quota]:
    """Every quota of the project with what it uses now."""
    pending = ImageAction.objects.pending().filter(owner=project)
    stored = ImageLocation.objects.filter(image__owner=project, image__size__isnull=False)
    used = {
        PENDING_ACTIONS: pending.count(),
        # An import made through /v2/image-actions has no Image until it ends: count it now
        # (one through Glance's API reads the image record it fills, so it has a link).
        IMAGE_COUNT: Image.objects.filter(owner=project).count()
        + pending.filter(action_type__in=_image_making_types(), image_links__isnull=True).count(),
        IMAGE_SIZE: stored.aggregate(total=Sum(F("image__size")))["total"] or 0,
        IMAGE_STAGE: pending.filter(action_type__in=_staging_types()).aggregate(total=Sum("progress_done"))["total"]
        or 0,
    }
    return {name: Quota(limit, used[name]) for name, limit in limits(project).items()}


def check_create(project: str, *, makes_image: bool, stages_bytes: bool) -> None:
    """Refuse a new action that would pass a quota (or that one already used up)."""
    quotas = usage(project)
    wanted = [
        PENDING_ACTIONS,
        *([IMAGE_COUNT, IMAGE_SIZE] if makes_image else []),
        *([IMAGE_STAGE] if stages_bytes else []),
    ]
    for name in wanted:
        quota = quotas[name]
        if quota.left == 0:
            raise QuotaExceeded(name, quota.limit, quota.usage)


def check_image_record(project: str) -> None:
    """Refuse a new image record (Glance's create) that would pass the image count."""
    quota = usage(project)[IMAGE_COUNT]
    if quota.left == 0:
        raise QuotaExceeded(IMAGE_COUNT, quota.limit, quota.usage)


def import_size_cap(project: str, *, own_bytes: int = 0) -> tuple[int | None, str]:
    """The most bytes one import of the project may still receive under its byte quotas
    (`own_bytes`: what this import already counts in the staging usage), and the quota that
    sets it; (None, "") when neither limits it."""
    quotas = usage(project)
    caps = []
    for name in BYTE_QUOTAS:
        quota = quotas[name]
        if quota.left is not None:
            caps.append((quota.left + (own_bytes if name == IMAGE_STAGE else 0), name))
    return min(caps) if caps else (None, "")


def quota_exceeded(project: str, quota: str) -> QuotaExceeded:
    """The error of `quota` with the project's limit and usage now (the bytes of an import
    that passed it are not in the usage: the import stopped)."""
    now = usage(project)[quota]
    return QuotaExceeded(quota, now.limit, now.usage)


def _image_making_types() -> list[str]:
    from .pipeline.registry import action_types

    return [name for name, action_type in action_types().items() if action_type.makes_images]


def _staging_types() -> list[str]:
    from .pipeline.registry import action_types

    return [name for name, action_type in action_types().items() if action_type.stages_bytes]
