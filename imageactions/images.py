"""Recording Images: the one way an action type turns verified, stored bytes into an Image row.

Part of the plugin surface (imageactions.pipeline): action types call create_image(),
fill_image() or add_locations() from their `finish`, in the runner's success transaction;
in_use() says whether an object is an image's (imageactions.pipeline.discard_unowned asks it).
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction

from .choices import ImageRole, ImageStatus
from .models import Image, ImageAction, ImageLocation, ImageTag

# Glance's reserved properties of an image being imported: the stores still to go, and those
# that failed (comma-separated; empty when none).
IMPORTING_TO_STORES = "os_glance_importing_to_stores"
FAILED_IMPORT = "os_glance_failed_import"
# An image record waits for bytes (or has them staged, or being imported) in these statuses.
AWAITING_BYTES = (ImageStatus.QUEUED, ImageStatus.SAVING, ImageStatus.UPLOADING, ImageStatus.IMPORTING)


def create_image(*, locations: dict[str, str], tags: Iterable[str] = (), **fields) -> Image:
    """Create an Image whose bytes are already verified in `locations` (store name -> key), with
    its tags.

    `fields` are Image's columns (id, name, owner, size, checksum, os_hash_value, disk_format,
    created_by_action, ...); unknown names fail like Image(**fields) does.
    """
    image = Image.objects.create(**fields)
    ImageTag.objects.bulk_create(ImageTag(image=image, name=tag) for tag in dict.fromkeys(tags))
    _add(image, locations, fields.get("created_by_action"))
    return image


def _add(image: Image, locations: dict[str, str], action_id) -> None:
    # A store the image has a copy in already keeps that copy (two copy-image requests that
    # raced); the second object is no image's, so its action's clean-up removes it on purge.
    ImageLocation.objects.bulk_create(
        (
            ImageLocation(image=image, store=store, key=key, created_by_action=action_id)
            for store, key in locations.items()
        ),
        ignore_conflicts=True,
    )


def in_use(store: str, key: str) -> bool:
    """Whether an image's bytes are the object `key` of `store` (then it must stay)."""
    return ImageLocation.objects.filter(store=store, key=key).exists()


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


def fill_image(image_id, *, locations: dict[str, str], failed_stores: Iterable[str] = (), **fields) -> Image:
    """Give an image record that awaits bytes its verified bytes, stored in `locations` (store
    name -> key; `failed_stores`: those the import was asked for but could not write), and its
    facts (`fields`: size, hashes, disk_format, created_by_action, ...): it becomes active. Call
    it in the runner's success transaction, as create_image."""
    image = Image.objects.select_for_update().get(pk=image_id)
    for name, value in fields.items():
        setattr(image, name, value)
    image.status = ImageStatus.ACTIVE
    image.properties = _import_ended(image, failed_stores)
    image.save()
    _add(image, locations, fields.get("created_by_action"))
    return image


def add_locations(image_id, locations: dict[str, str], *, failed_stores: Iterable[str] = (), action_id) -> Image:
    """Record verified copies of an active image's bytes in more stores (Glance's copy-image), in
    the runner's success transaction; `failed_stores` are those the copy could not write."""
    image = Image.objects.select_for_update().get(pk=image_id)
    _add(image, locations, action_id)
    image.properties = _import_ended(image, failed_stores)
    image.save(update_fields=["properties", "updated_at"])
    return image


def _import_ended(image: Image, failed_stores: Iterable[str]) -> dict:
    return {**image.properties, IMPORTING_TO_STORES: "", FAILED_IMPORT: ",".join(failed_stores)}


def import_started(image_id, stores: list[str]) -> None:
    """An import (or a copy) of the image's bytes into `stores` begins: Glance's reserved
    properties say where it goes and no longer name an earlier failure. Call it before the
    action can run, so its end is the last to write them."""
    with transaction.atomic():
        image = Image.objects.select_for_update().get(pk=image_id)
        image.properties = {**image.properties, IMPORTING_TO_STORES: ",".join(stores), FAILED_IMPORT: ""}
        image.save(update_fields=["properties", "updated_at"])


def import_failed(image_id, stores: list[str], *, action: ImageAction) -> None:
    """The import `action` into the image failed or was cancelled and wrote nothing: as in
    Glance, a record awaiting bytes is queued again (a new import may follow), and the image
    names the stores that failed (an active image that was being copied stays active)."""
    from .pipeline.registry import action_types  # at call time: the registry's package imports this module

    image = Image.objects.filter(pk=image_id, status__in=(*AWAITING_BYTES, ImageStatus.ACTIVE)).first()
    if image is None:
        return  # deleted meanwhile, or no longer importing
    importers = [action_type.name for action_type in action_types().values() if action_type.import_methods]
    later = ImageAction.objects.filter(created_at__gt=action.created_at, action_type__in=importers)
    if later.exclude(pk=action.pk).filter(image_links__image_id=image_id, image_links__role=ImageRole.READ).exists():
        return  # a later import or copy has the image now (this one is being purged)
    fields = ["properties", "updated_at"]
    if image.status != ImageStatus.ACTIVE:
        image.status = ImageStatus.QUEUED
        fields.append("status")
    image.properties = _import_ended(image, stores)
    image.save(update_fields=fields)
