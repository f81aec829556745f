"""The steps of an import: stage the source once (hashing on the way), verify it, store it.

The staged file lives in the action's scratch directory; `action.state` carries its size and
hashes from step to step, and the key it was stored under, so clean-up can find it.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

from django.conf import settings

from imageactions.models import Image, ImageAction, ImageTag
from imageactions.pipeline import StepError
from imageactions.stores import StoreError, get_store
from imageactions.transfer import TransferError, copy_to_file

from .serializers import UPLOAD
from .sources import open_source, parse_location

log = logging.getLogger(__name__)

STAGED = "staged"
# Glance's pair: md5 as `checksum`, sha512 as `os_hash_value`.
ALWAYS_HASHED = ("md5", "sha512")


def staged_path(ctx) -> Path:
    return ctx.scratch / STAGED


def _hash_algorithms(action: ImageAction) -> tuple[str, ...]:
    requested = (action.input.get("checksum") or {}).get("algo")
    return tuple(dict.fromkeys((*ALWAYS_HASHED, *([requested] if requested else []))))


def stage(action: ImageAction, ctx, source, *, size: int | None) -> None:
    """Copy `source` into the staged file, hashing, capping and reporting progress."""
    try:
        result = copy_to_file(
            source, staged_path(ctx), hash_algorithms=_hash_algorithms(action),
            max_size=settings.IMAGE_MAX_SIZE, total=size, progress=ctx.progress,
        )
    except TransferError as error:
        raise StepError(str(error)) from None
    ctx.progress(result.size, size or result.size, force=True)
    action.state.update(staged=True, size=result.size, hashes=result.hashes)


# -- uploading ---------------------------------------------------------------------------


def fetch(action: ImageAction, ctx) -> None:
    """Stream the location's bytes into staging (status `uploading`)."""
    opened = open_source(parse_location(action.input["location"]))
    try:
        ctx.progress(0, opened.size, force=True)
        stage(action, ctx, opened.reader, size=opened.size)
    finally:
        opened.close()


def fetch_applies(action: ImageAction) -> bool:
    # An upload's bytes were staged by receive_data, in the API process, under this same step.
    return action.input.get("source") != UPLOAD


def receive_upload(action: ImageAction, stream, ctx) -> None:
    """Stage the body of PUT /v2/image-actions/{id}/data (Content-Length or chunked)."""
    body, announced = _request_body(stream)
    reader = _UploadReader(body, announced)
    ctx.progress(0, announced, force=True)
    stage(action, ctx, reader, size=announced)
    if announced is not None and reader.bytes_read < announced:
        raise StepError(
            f"The upload was interrupted after {reader.bytes_read} bytes of the {announced} announced; "
            f"create a new import action and upload again"
        )
    if reader.bytes_read == 0 and announced is None:
        raise StepError(
            "The upload had no data. Send the image as the request body, with a Content-Length "
            "header or chunked transfer encoding"
        )


def _request_body(stream):
    """The readable body and its announced length.

    Django limits its request stream to CONTENT_LENGTH, which a chunked request does not have;
    when the server says the input ends by itself (wsgi.input_terminated: gunicorn de-chunks),
    the WSGI input is read directly.
    """
    meta = getattr(stream, "META", None) or {}
    length = meta.get("CONTENT_LENGTH") or meta.get("HTTP_CONTENT_LENGTH")
    if length and str(length).isdigit() and int(length) > 0:
        return stream, int(length)
    if meta.get("wsgi.input_terminated") and "wsgi.input" in meta:
        return meta["wsgi.input"], None
    return stream, None


class _UploadReader:
    """The request body; a client that goes away mid-body is an interrupted upload."""

    def __init__(self, body, announced: int | None):
        self.body, self.announced = body, announced
        self.bytes_read = 0

    def read(self, amount: int = -1) -> bytes:
        try:
            data = self.body.read(amount)
        except Exception as error:  # gunicorn's NoMoreData, OSError, ... depend on the server
            log.info("upload body read failed: %r", error)
            raise StepError(
                f"The upload was interrupted after {self.bytes_read} bytes; create a new import action and upload again"
            ) from None
        self.bytes_read += len(data)
        return data


# -- verifying ---------------------------------------------------------------------------


def verify(action: ImageAction, ctx) -> None:
    """Check size and checksum of the staged bytes, then inspect their format (`verifying`)."""
    size = action.state.get("size", 0)
    if not size:
        raise StepError("The image is empty (0 bytes); check the source and try again")
    expected = action.input.get("checksum")
    if expected:
        algo = expected["algo"]
        got = action.state["hashes"][algo]
        if got != expected["value"]:
            raise StepError(f"Checksum mismatch: expected {algo} {expected['value']}, got {got}")
    ctx.progress(size, size, force=True)
    inspect_staged_image(action, staged_path(ctx))


def inspect_staged_image(action: ImageAction, path: Path) -> None:
    """The format inspection hook (issue #4): fills disk_format and virtual_size in action.state.

    Uses imageactions.formats.inspect_image when it is installed; without it the declared
    disk_format (or raw) is taken as given.
    """
    declared = action.input["image_properties"].get("disk_format")
    try:
        from imageactions.formats import ImageFormatError, inspect_image
    except ImportError:
        action.state.update(disk_format=declared or "raw", virtual_size=None)
        return
    try:
        inspection = inspect_image(path, declared_format=declared)
    except ImageFormatError as error:
        raise StepError(str(error)) from None
    action.state.update(disk_format=inspection.format, virtual_size=inspection.virtual_size)


# -- storing -----------------------------------------------------------------------------


def store(action: ImageAction, ctx) -> None:
    """Move the staged file into the default image store under a new image id (`storing`)."""
    image_id = action.state.setdefault("image_id", str(uuid.uuid4()))
    image_store = ctx.store(None)
    key = f"images/{image_id}"
    action.state.update(store=image_store.name, store_key=key)
    # Persisted before the bytes move, so a worker that dies mid-store leaves a findable key.
    ImageAction.objects.filter(pk=action.pk, run_token=ctx.token).update(state=action.state)
    path = staged_path(ctx)
    size = action.state["size"]
    if not path.exists() and image_store.exists(key) and image_store.size(key) == size:
        return  # a re-run after the move already happened
    try:
        image_store.put_file(key, path, size=size, progress=ctx.progress)
    except StoreError as error:
        raise StepError(f"The image could not be stored: {error}") from None
    path.unlink(missing_ok=True)


def finish(action: ImageAction, ctx) -> None:
    """Create the Image (in the runner's success transaction) and point the result at it."""
    state, props = action.state, action.input["image_properties"]
    image = Image.objects.create(
        id=state["image_id"],
        name=props["name"],
        disk_format=state.get("disk_format") or props.get("disk_format") or "raw",
        container_format=props.get("container_format", "bare"),
        size=state["size"],
        virtual_size=state.get("virtual_size"),
        checksum=state["hashes"]["md5"],
        os_hash_algo="sha512",
        os_hash_value=state["hashes"]["sha512"],
        properties=props.get("properties", {}),
        owner=action.owner,
        visibility=props.get("visibility", "private"),
        min_disk=props.get("min_disk", 0),
        min_ram=props.get("min_ram", 0),
        store=state["store"],
        store_key=state["store_key"],
        created_by_action=action.pk,
    )
    ImageTag.objects.bulk_create(ImageTag(image=image, name=tag) for tag in props.get("tags", []))
    action.result = {"image_ref": str(image.pk)}


def clean_up(action: ImageAction) -> None:
    """Remove stored bytes that no Image owns (failure or cancel after `storing`).

    Also runs when a successful action is purged: its Image owns the object then, so it stays.
    The staged file is in the scratch directory, which the runner removes.
    """
    name, key = action.state.get("store"), action.state.get("store_key")
    if not (name and key) or Image.objects.filter(store=name, store_key=key).exists():
        return
    try:
        get_store(name).delete(key)
    except StoreError:
        log.warning("could not remove %s from store %s after action %s", key, name, action.pk, exc_info=True)

