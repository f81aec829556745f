"""Recording Images: the one way an action type turns verified, stored bytes into an Image row.

Part of the plugin surface (imageactions.pipeline): action types call create_image() from their
`finish`, in the runner's success transaction.
"""

from __future__ import annotations

from collections.abc import Iterable

from .models import Image, ImageTag


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
