"""Recording Images: the one way an action type turns verified, stored bytes into an Image row.

Part of the plugin surface (imageactions.pipeline): action types call create_image() from their
`finish`, in the runner's success transaction.
"""

from __future__ import annotations

from collections.abc import Iterable

from .choices import ImageRole, ImageStatus
from .models import Image, ImageAction, ImageTag

# Glance's reserved properties of an image being imported: the stores still to go, and those
# that failed (comma-separated; empty when none).
IMPORTING_TO_STORES = "os_glance_importing_to_stores"
FAILED_IMPORT = "os_glance_failed_import"
# An image record waits for bytes (or has them staged, or being imported) in these statuses.
AWAITING_BYTES = (ImageStatus.QUEUED, ImageStatus.SAVING, ImageStatus.UPLOADING, ImageStatus.IMPORTING)


def create_image(*, tags: Iterable[str] = (), **fields) -> Image:
    """Create an Image whose bytes are already verified in `fields["store"]`, with its tags.

    `fields` are Image's columns (id, name, owner, store, store_key, size, checksum,
    os_hash_value, disk_format, ...); unknown names fail like Image(**fields) does.
    """
    image = Image.objects.create(**fields)
    ImageTag.objects.bulk_create(ImageTag(image=image, name=tag) for tag in dict.fromkeys(tags))
    return image


def tags_of(image: Image) -> list[str]:
    """The image's tags in the order they were given."""
    return list(image.tag_set.order_by("id").values_list("name", flat=True))


def image_facts(image: Image) -> dict:
    """What a copy of `image` shares with it: every column that describes the bytes or the image,
    not where the bytes are nor who made it (JSON-ready, e.g. for action.state)."""
    return {
        "name": image.name,
        "disk_format": image.disk_format,
        "container_format": image.container_format,
        "size": image.size,
        "virtual_size": image.virtual_size,
        "checksum": image.checksum,
        "os_hash_algo": image.os_hash_algo,
        "os_hash_value": image.os_hash_value,
        "properties": dict(image.properties),
        "visibility": image.visibility,
        "min_disk": image.min_disk,
        "min_ram": image.min_ram,
        "tags": tags_of(image),
    }


def fill_image(image_id, **fields) -> Image:
    """Give an image record that awaits bytes its verified, stored bytes (`fields`: size,
    hashes, disk_format, store, store_key, ...): it becomes active. Call it in the runner's
    success transaction, as create_image."""
    image = Image.objects.select_for_update().get(pk=image_id)
    for name, value in fields.items():
        setattr(image, name, value)
    image.status = ImageStatus.ACTIVE
    image.properties = {**image.properties, IMPORTING_TO_STORES: "", FAILED_IMPORT: ""}
    image.save()
    return image


def import_failed(image_id, stores: list[str], *, action_id) -> None:
    """The import `action_id` into the image record failed or was cancelled: as in Glance, the
    record is queued again (a new import may follow) and names the stores that failed."""
    image = Image.objects.filter(pk=image_id, status__in=AWAITING_BYTES).first()
    if image is None:
        return  # deleted meanwhile, or not awaiting bytes any more
    others = ImageAction.objects.pending().exclude(pk=action_id)
    if others.filter(image_links__image_id=image_id, image_links__role=ImageRole.READ).exists():
        return  # a later import works on it now (this one is being purged)
    image.status = ImageStatus.QUEUED
    image.properties = {**image.properties, IMPORTING_TO_STORES: "", FAILED_IMPORT: ",".join(stores)}
    image.save(update_fields=["status", "properties", "updated_at"])
