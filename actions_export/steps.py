"""The steps of an export: convert the image's bytes when another format is asked, then stream
them to the destination, hashing on the way. The Image itself is never changed.

The converted file lives in the action's scratch directory, and, with a staging store
(IMAGEACTIONS_STAGING_STORE), in the staging bucket too: the upload step may then run on another
host, which downloads it from there. `action.state` carries the converted file's name and size and
where the bytes were written, so that clean-up finds them after a failure, a cancel or the purge
of the action.
"""

from __future__ import annotations

import logging

from imageactions.pipeline import (
    EXPORTED,
    IMAGE_HASHES,
    ActionStatus,
    ErrorCode,
    Image,
    ImageAction,
    ImageStore,
    StepContext,
    StepError,
    StoredFile,
    StoreError,
    bytes_moved,
    convert_image_file,
    error_code_of,
    image_file,
    qemu_format_name,
    safe_filename,
    stage_file,
    staged_file,
    staging_enabled,
)

from .destinations import FAILED, ExportedBytes, put_to_url, store_failed, write_to_store
from .serializers import DOWNLOAD, STORE, URL, ImageNotExportable, exportable_image, without_query

log = logging.getLogger(__name__)

CONVERTED = "converted"


def exported_image(action: ImageAction) -> Image:
    """The image to export, if it is still the caller's and active (it may have changed since the action was created)."""
    try:
        return exportable_image(action.input["image_id"], action.owner)
    except ImageNotExportable as error:
        raise StepError(
            str(error), code=ErrorCode.IMAGE_NOT_FOUND, details={"image_id": action.input["image_id"]}
        ) from None


def target_format(action: ImageAction, image: Image) -> str:
    return action.input.get("disk_format") or image.disk_format


# -- converting ------------------------------------------------------------------------------


def convert_applies(action: ImageAction) -> bool:
    wanted = action.input.get("disk_format")
    if not wanted:
        return False
    image = Image.objects.filter(pk=action.input["image_id"]).only("disk_format").first()
    if image is None:
        return True  # the convert step says what became of the image
    return qemu_format_name(wanted, target=True) != qemu_format_name(image.disk_format)


def convert(action: ImageAction, ctx: StepContext) -> None:
    """Convert the image's bytes into the scratch directory with qemu-img (`converting`), and
    stage them when there is a staging store."""
    image = exported_image(action)
    converted, total = ctx.scratch / CONVERTED, image.virtual_size or image.size
    convert_image_file(
        ctx,
        image_file(ctx, image),
        converted,
        src_format=image.disk_format,
        dst_format=action.input["disk_format"],
        total=total,
        what=f"Image {image.pk}",
    )
    if staging_enabled():  # unhashed: the upload hashes the bytes it sends
        stage_file(ctx, CONVERTED, hash_algorithms=(), progress=lambda: ctx.progress(total, total))
    action.state.update(converted=CONVERTED, converted_size=converted.stat().st_size)


def _image_bytes(ctx: StepContext, image: Image) -> tuple[ImageStore, str]:
    """The store and key to read the image's bytes from."""
    location = image.location
    if location is None:
        raise StepError(
            f"The bytes of image {image.pk} cannot be reached: the image has no location; tell an operator",
            code=ErrorCode.IMAGE_DATA_MISSING,
        )
    try:
        return ctx.store(location.store), location.key
    except StoreError as error:
        raise StepError(
            f"The bytes of image {image.pk} cannot be reached: {error}; tell an operator",
            code=ErrorCode.STORE_UNAVAILABLE,
            details={"store": location.store},
        ) from None


# -- uploading -------------------------------------------------------------------------------


def upload(action: ImageAction, ctx: StepContext) -> None:
    """Stream the (converted or original) bytes to the destination (`uploading`)."""
    image = exported_image(action)
    disk_format = target_format(action, image)
    exported = _open_export(action, image, ctx)
    destination = action.input["destination"]
    ctx.progress(0, exported.size, force=True)
    try:
        if destination["type"] == URL:
            put_to_url(destination["url"], exported, ctx.progress)
            location = without_query(destination["url"])
        else:
            location = _write_to_a_store(action, ctx, image, disk_format, exported)
        hashes = exported.hexdigests()
    finally:
        exported.close()
    bytes_moved(EXPORTED, exported.size)
    if not action.state.get("converted"):
        hashes = _as_recorded(image, hashes)
    ctx.progress(exported.size, exported.size, force=True)
    action.result = {
        "location": location,
        "size": exported.size,
        "disk_format": disk_format,
        "checksum": hashes["md5"],
        "os_hash_algo": "sha512",
        "os_hash_value": hashes["sha512"],
    }


def _as_recorded(image: Image, hashes: dict[str, str]) -> dict[str, str]:
    """The hashes of exported bytes that should be the image's own, checked against its record.

    Only sha512 is computed for them: once it matches, the bytes are the image's, so its md5 is
    the recorded one, and the export costs one hash instead of two.
    """
    if image.os_hash_algo != "sha512":
        return hashes  # both were computed (see _open_export)
    if hashes["sha512"] != image.os_hash_value:
        raise StepError(
            f"The stored bytes of image {image.pk} do not match its recorded sha512 (they changed in the "
            f"store); the export was stopped. Tell an operator",
            code=ErrorCode.CHECKSUM_MISMATCH,
            details={"algo": "sha512", "expected": image.os_hash_value, "actual": hashes["sha512"]},
        )
    return {"md5": image.checksum, "sha512": hashes["sha512"]}


def _open_export(action: ImageAction, image: Image, ctx: StepContext) -> ExportedBytes:
    if name := action.state.get("converted"):
        # This host's copy, else the staged one downloaded (with a staging store).
        path = staged_file(ctx, name, action.state.get("converted_size", 0))
        if not path.exists():
            raise StepError(
                "The converted image was lost (its worker's scratch space is gone); start the export again",
                code=ErrorCode.IMAGE_DATA_MISSING,
            )
        return ExportedBytes(open(path, "rb"), path.stat().st_size)
    source_store, source_key = _image_bytes(ctx, image)
    try:
        reader = source_store.open_read(source_key)
    except StoreError as error:
        raise StepError(
            f"The bytes of image {image.pk} could not be read: {error}; tell an operator",
            code=error_code_of(error),
            details={"store": source_store.name},
        ) from None
    algorithms = ("sha512",) if image.os_hash_algo == "sha512" else IMAGE_HASHES
    return ExportedBytes(reader, image.size, algorithms)


def _write_to_a_store(
    action: ImageAction, ctx: StepContext, image: Image, disk_format: str, exported: ExportedBytes
) -> str:
    destination = action.input["destination"]
    if destination["type"] == DOWNLOAD:
        store = ctx.store()
        filename = safe_filename(image.name, disk_format, str(image.pk))
        key = f"exports/{action.pk}/{filename}"
        action.state.update(written_store=store.name, written_key=key, filename=filename)
        ctx.save_state()  # before bytes move: clean-up must find them after a crash
        _write_or_copy(action, ctx, image, store, key, exported)
        return f"/v2/image-actions/{action.pk}/file"
    store = _destination_store(ctx, destination["store"])
    key = destination["key"]
    ours = (action.state.get("written_store"), action.state.get("written_key")) == (store.name, key)
    if not ours and _exists(store, key):
        # Overwriting would let one project replace an object another project exported.
        raise StepError(
            f"The image store '{store.name}' already has an object at '{key}'; choose another key, "
            f"or have it removed first",
            code=ErrorCode.DESTINATION_REFUSED,
            details={"store": store.name, "key": key},
        )
    action.state.update(written_store=store.name, written_key=key)
    ctx.save_state()
    _write_or_copy(action, ctx, image, store, key, exported)
    return store.location(key)


def _write_or_copy(
    action: ImageAction, ctx: StepContext, image: Image, store: ImageStore, key: str, exported: ExportedBytes
) -> None:
    """Stream the bytes to `store`; unconverted bytes the stores can copy themselves (a hard link,
    the kernel's copy between two files, an S3 server-side copy) are copied that way and read
    back once, so that their hashes are the copy's: by the store while it copies where it can
    (the kernel's copy), else after the copy."""
    if not action.state.get("converted"):
        source_store, source_key = _image_bytes(ctx, image)
        try:
            copied = store.server_side_copy(source_store, source_key, key) or store.copy_from(
                source_store, source_key, key, size=image.size, progress=ctx.progress, read_back=exported.take
            )
        except StoreError as error:
            raise store_failed(error, store.name) from None
        if copied:
            if exported.bytes_read < exported.size:  # not read back while copying
                _read_copy_back(ctx, store, key, exported)
            return
    write_to_store(store, key, exported, ctx.progress)


def _read_copy_back(ctx: StepContext, store: ImageStore, key: str, exported: ExportedBytes) -> None:
    exported.source.close()
    try:
        exported.source = store.open_read(key)
    except StoreError as error:
        raise StepError(
            f"{FAILED} The copy could not be read back: {error}",
            code=ErrorCode.STORE_UNAVAILABLE,
            details={"store": store.name},
        ) from None
    exported.read_to_end(ctx.progress)


def _destination_store(ctx: StepContext, name: str) -> ImageStore:
    try:
        return ctx.store(name)
    except StoreError as error:  # the store was removed from the configuration since the action was created
        raise StepError(f"{FAILED} {error}", code=ErrorCode.STORE_UNAVAILABLE, details={"store": name}) from None


def _exists(store: ImageStore, key: str) -> bool:
    try:
        return store.exists(key)
    except StoreError as error:
        raise StepError(f"{FAILED} {error}", code=ErrorCode.STORE_UNAVAILABLE, details={"store": store.name}) from None


# -- the runner's hooks ------------------------------------------------------------------------


def finish(action: ImageAction, ctx: StepContext) -> None:
    """A download link lives as long as the action: its expiry is the action's."""
    if action.input["destination"]["type"] == DOWNLOAD:
        action.result["expires_at"] = action.expires_at.isoformat().replace("+00:00", "Z")


def present_result(result: dict, absolute_uri) -> dict:
    """A download link is stored as a path under this API (the worker that made it cannot know
    the host name clients reach the API by) and shown as an absolute URL."""
    location = result.get("location")
    if isinstance(location, str) and location.startswith("/v2/"):
        return {**result, "location": absolute_uri(location)}
    return result


def result_file(action: ImageAction) -> StoredFile | None:
    """The exported bytes of a download destination, for GET /v2/image-actions/{id}/file."""
    state, result = action.state, action.result
    if action.input.get("destination", {}).get("type") != DOWNLOAD or not state.get("written_key"):
        return None
    return StoredFile(
        store=state["written_store"],
        key=state["written_key"],
        size=result["size"],
        filename=state["filename"],
        md5=result["checksum"],
    )


def clean_up(action: ImageAction, ctx: StepContext) -> None:
    """Remove exported bytes the export no longer offers.

    A download's bytes go when the action failed, was cancelled or is purged; a store
    destination's object only when the export did not succeed (it is the user's after that).
    The converted file is in the scratch directory, which the runner removes, with its staged copy.
    """
    name, key = action.state.get("written_store"), action.state.get("written_key")
    if not (name and key):
        return
    kind = action.input.get("destination", {}).get("type")
    if kind == STORE and action.status == ActionStatus.SUCCESS:
        return
    try:
        ctx.store(name).delete(key)
    except StoreError:
        log.warning("could not remove %s from store %s after export %s", key, name, action.pk, exc_info=True)
