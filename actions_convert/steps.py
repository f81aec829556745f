"""The steps of a conversion: read the image's bytes, convert them with qemu-img, inspect and verify
the output as hostile data exactly like an import's, hash it, store it; then record the new Image.

The converted file lives in the action's scratch directory, and, with a staging store
(IMAGEACTIONS_STAGING_STORE), in the staging bucket too, uploaded in the pass that hashes it: the
store step may then run on another host, which copies the staged object into the target store
(inside the object store's service where it can). `action.state` carries the converted file's
size, hashes and inspection from step to step, and the key it was stored under, so clean-up can
find it.
"""

from __future__ import annotations

import uuid

from django.conf import settings

from imageactions.pipeline import (
    ErrorCode,
    Image,
    ImageAction,
    StepContext,
    StepError,
    convert_image_file,
    create_image,
    discard_unowned,
    image_facts,
    image_file,
    inspect_and_verify,
    inspection_state,
    local_copy,
    stage_file,
    staged_object,
    store_image_file,
    stored_locations,
)

from .serializers import ImageNotConvertible, convertible_image

CONVERTED = "converted"


def source_image(action: ImageAction) -> Image:
    """The image to convert, if it is still the owner's and active (it may have changed since)."""
    try:
        return convertible_image(action.input["image_id"], action.owner)
    except ImageNotConvertible as error:
        raise StepError(
            error.detail["image_id"][0], code=ErrorCode.IMAGE_NOT_FOUND, details={"image_id": action.input["image_id"]}
        ) from None


def convert(action: ImageAction, ctx: StepContext) -> None:
    """Convert the image into the scratch directory, then inspect and verify the output, and hash
    it (staging it on the way when there is a staging store) (`converting`)."""
    image = source_image(action)
    target = action.input["disk_format"]
    converted = ctx.scratch / CONVERTED
    convert_image_file(
        ctx,
        image_file(ctx, image),
        converted,
        src_format=image.disk_format,
        dst_format=target,
        total=image.virtual_size or image.size,
        what=f"Image {image.pk}",
        max_size=settings.IMAGE_MAX_SIZE,
    )
    # The output is new bytes: the operator's verifiers judge it as they judge an import.
    inspection = inspect_and_verify(converted, declared_format=target)
    hashed = stage_file(ctx, CONVERTED)
    action.state.update(
        inspection_state(inspection),
        source=image_facts(image),
        size=hashed.size,
        hashes=hashed.hashes,
    )


def store(action: ImageAction, ctx: StepContext) -> None:
    """Put the converted file into the target store under a new image id (`storing`): copied from
    the staging store inside the object store's service where they are one, else from this host's
    copy, else streamed from the staging store."""
    image_id = action.state.setdefault("image_id", str(uuid.uuid4()))
    size = action.state["size"]
    store_image_file(
        ctx,
        local_copy(ctx, CONVERTED, size),
        staged=staged_object(ctx, CONVERTED),
        image_id=image_id,
        size=size,
        stores=[action.input["store"]],
        what="The converted image",
    )


def finish(action: ImageAction, ctx: StepContext) -> None:
    """Create the new Image (in the runner's success transaction) and point the result at it."""
    state, source = action.state, action.state["source"]
    image = create_image(
        id=state["image_id"],
        name=action.input.get("name", source["name"]),
        disk_format=state["disk_format"],
        container_format=source["container_format"],
        size=state["size"],
        virtual_size=state["virtual_size"],
        checksum=state["hashes"]["md5"],
        os_hash_algo="sha512",
        os_hash_value=state["hashes"]["sha512"],
        properties={**source["properties"], "converted_from": action.input["image_id"]},
        tags=source["tags"],
        owner=action.owner,
        visibility=source["visibility"],
        min_disk=source["min_disk"],
        min_ram=source["min_ram"],
        locations=stored_locations(state),
        created_by_action=action.pk,
    )
    action.result = {"image_ref": str(image.pk)}


def clean_up(action: ImageAction, ctx: StepContext) -> None:
    """Remove stored bytes that no Image owns (failure or cancel after `storing`).

    On purge of a successful action its Image owns the object, so it stays. The converted file is
    in the scratch directory, which the runner removes, with its staged copy.
    """
    discard_unowned(ctx, action.state.get("store_keys", {}))
