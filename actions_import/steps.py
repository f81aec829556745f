"""The steps of an import: stage the source once (decompressing and hashing on the way), inspect
and verify it, convert it when the service stores another format, store it.

The staged file lives in the action's scratch directory, and, with a staging store
(IMAGEACTIONS_STAGING_STORE), in the staging bucket too, written in the same pass: then any step
may run on any host, which reads the staged object where it has no copy of its own (see
imageactions.pipeline.staging). `action.state` carries its size, hashes and inspection from step
to step, and the key it was stored under, so clean-up can find it.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from pathlib import Path

from django.conf import settings

from imageactions.pipeline import (
    IMAGE_HASHES,
    RECEIVED,
    ActionStatus,
    ErrorCode,
    ImageAction,
    ImageFormatError,
    SizeLimitExceeded,
    StepContext,
    StepError,
    TransferError,
    bytes_moved,
    check_announced_size,
    convert_image_file,
    copy_to_file,
    create_image,
    detect_compression,
    discard_unowned,
    error_code_of,
    fill_image,
    import_failed,
    import_size_cap,
    inspect_staged,
    inspection_state,
    local_copy,
    mark_cached,
    open_decompressed,
    qemu_format_name,
    quota_exceeded,
    stage_file,
    staged_file,
    staged_object,
    staging_enabled,
    staging_upload,
    store_image_file,
    stored_locations,
    whole_number,
)

from .serializers import UPLOAD
from .sources import open_source, parse_location

log = logging.getLogger(__name__)

STAGED = "staged"
CONVERTED = "converted"
# detect_compression needs the first 6 bytes (the xz magic); a few more cost nothing.
COMPRESSION_HEAD_SIZE = 16


def staged_path(ctx: StepContext) -> Path:
    return ctx.scratch / STAGED


def _hash_algorithms(action: ImageAction) -> tuple[str, ...]:
    requested = _requested_algorithm(action)
    return tuple(dict.fromkeys((*IMAGE_HASHES, *([requested] if requested else []))))


def stage(action: ImageAction, ctx: StepContext, source, *, size: int | None, keep_local: bool = True) -> None:
    """Copy `source` into the staged file, decompressing, hashing, capping and reporting progress.

    With a staging store the bytes go to the staged object in the same pass, and to the local
    file only with `keep_local` (a worker's cache for the next step; an API host keeps nothing).

    Compressed data (gzip, xz, bzip2, zstd) is decompressed on the way when DECOMPRESS_IMPORTS
    is on, so the staged file, its size and its hashes are those of the image itself; the bytes
    as received are hashed too (for the user's checksum) in the same pass. Progress counts the
    bytes received, against the size the source announced.
    """
    received = ReceivedBytes(source)
    compression = detect_compression(received.peek(COMPRESSION_HEAD_SIZE))
    reader, hashed = received, _hash_algorithms(action)
    if compression and settings.DECOMPRESS_IMPORTS:
        reader = open_decompressed(
            received, compression, max_output=settings.DECOMPRESS_MAX_OUTPUT, max_ratio=settings.DECOMPRESS_MAX_RATIO
        )
        # The user's checksum is of the bytes they have, the compressed ones: hashed as received.
        received.hash_with(_requested_algorithm(action))
        hashed = IMAGE_HASHES
    else:
        compression = None
    # A source may send more than it announced: the limit holds for the bytes that come, not
    # only for the announcement.
    limit, quota = receivable_bytes(action.owner)
    local = staged_path(ctx) if keep_local or not staging_enabled() else None
    try:
        check_announced_size(size, limit)
        with staging_upload(ctx, STAGED, max_size=limit) as also_to:
            result = copy_to_file(
                reader,
                local,
                hash_algorithms=hashed,
                max_size=limit,
                progress=lambda _done, _total: ctx.progress(received.bytes_read, size),
                sparse=settings.SPARSE_IMAGES,
                also_to=also_to,
            )
    except SizeLimitExceeded as error:
        raise too_large(action.owner, quota, error) from None
    except (TransferError, ImageFormatError) as error:
        raise StepError(str(error), code=error_code_of(error)) from None
    if local:
        mark_cached(ctx, STAGED)
    ctx.progress(received.bytes_read, size or received.bytes_read, force=True)
    bytes_moved(RECEIVED, received.bytes_read)
    action.state.update(
        size=result.size,
        hashes=result.hashes,
        compression=compression,
        received_size=received.bytes_read,
    )
    if compression:  # otherwise the bytes received are the staged ones: `hashes` are theirs
        action.state["received_hashes"] = received.hexdigests()


def _requested_algorithm(action: ImageAction) -> str | None:
    return (action.input.get("checksum") or {}).get("algo")


class ReceivedBytes:
    """The source's bytes as received: counted, optionally hashed, with a peek at the first few."""

    def __init__(self, source):
        self.source = source
        self.bytes_read = 0
        self._head = b""
        self._hasher = None

    def hash_with(self, algorithm: str | None) -> None:
        """Hash everything read from now on (the peeked bytes included) with `algorithm`."""
        self._hasher = hashlib.new(algorithm) if algorithm else None

    def peek(self, amount: int) -> bytes:
        """The first `amount` bytes (fewer if the source is shorter), kept for the next read()."""
        while len(self._head) < amount and (chunk := self.source.read(amount - len(self._head))):
            self._head += chunk
        return self._head

    def read(self, amount: int = -1) -> bytes:
        if self._head and amount is not None and 0 <= amount <= len(self._head):
            data, self._head = self._head[:amount], self._head[amount:]
        elif self._head:
            # The rest of the read from the source keeps reads aligned as the caller asked.
            rest = self.source.read(-1 if amount is None or amount < 0 else amount - len(self._head))
            data, self._head = self._head + rest, b""
        else:
            data = self.source.read(amount)
        self.bytes_read += len(data)
        if self._hasher is not None:
            self._hasher.update(data)
        return data

    def hexdigests(self) -> dict[str, str]:
        return {self._hasher.name: self._hasher.hexdigest()} if self._hasher else {}


# -- uploading ---------------------------------------------------------------------------


def fetch(action: ImageAction, ctx: StepContext) -> None:
    """Stream the location's bytes into staging (status `uploading`), over several connections
    when the source is large and serves ranges; `state["fetch"]` says how it was read."""
    opened = open_source(parse_location(action.input["location"]), parallel=True)
    try:
        ctx.progress(0, opened.size, force=True)
        stage(action, ctx, opened.reader, size=opened.size)
    finally:
        opened.close()
    action.state["fetch"] = opened.facts()
    log.info("action %s fetched %s: %s", action.pk, action.input["location"], action.state["fetch"])


def fetch_applies(action: ImageAction) -> bool:
    # An upload's bytes were staged by receive_data, in the API process, under this same step.
    return action.input.get("source") != UPLOAD


def receive_upload(action: ImageAction, stream, ctx: StepContext) -> None:
    """Stage the body of PUT /v2/image-actions/{id}/data (Content-Length or chunked).

    This runs on an API host: with a staging store the body goes there only, never to its disk."""
    body, announced = _request_body(stream)
    reader = _UploadReader(body, announced)
    ctx.progress(0, announced, force=True)
    stage(action, ctx, reader, size=announced, keep_local=False)
    if announced is not None and reader.bytes_read < announced:
        raise StepError(
            f"The upload was interrupted after {reader.bytes_read} bytes of the {announced} announced; "
            f"create a new import action and upload again",
            code=ErrorCode.UPLOAD_INTERRUPTED,
            details={"bytes_received": reader.bytes_read, "size_announced": announced},
        )
    if reader.bytes_read == 0 and announced is None:
        raise StepError(
            "The upload had no data. Send the image as the request body, with a Content-Length "
            "header or chunked transfer encoding",
            code=ErrorCode.EMPTY_IMAGE,
        )


def _request_body(stream):
    """The readable body and its announced length.

    Django limits its request stream to CONTENT_LENGTH, which a chunked request does not have;
    when the server says the input ends by itself (wsgi.input_terminated: gunicorn de-chunks),
    the WSGI input is read directly.
    """
    meta = getattr(stream, "META", None) or {}
    length = meta.get("CONTENT_LENGTH") or meta.get("HTTP_CONTENT_LENGTH")
    if (announced := whole_number(str(length or ""), max_digits=20) or 0) > 0:
        return stream, announced
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
                f"The upload was interrupted after {self.bytes_read} bytes; create a new import action and upload again",
                code=ErrorCode.UPLOAD_INTERRUPTED,
                details={"bytes_received": self.bytes_read},
            ) from None
        self.bytes_read += len(data)
        return data


# -- verifying ---------------------------------------------------------------------------


def verify(action: ImageAction, ctx: StepContext) -> None:
    """Check size and checksum of the received bytes, then inspect and verify the image (`verifying`)."""
    size = action.state.get("size", 0)
    if not size:
        raise StepError("The image is empty (0 bytes); check the source and try again", code=ErrorCode.EMPTY_IMAGE)
    expected = action.input.get("checksum")
    if expected:
        algo = expected["algo"]
        got = action.state.get("received_hashes", action.state["hashes"])[algo]
        if got != expected["value"]:
            compression = action.state.get("compression")
            what = f" of the {compression}-compressed data received" if compression else ""
            raise StepError(
                f"Checksum mismatch{what}: expected {algo} {expected['value']}, got {got}",
                code=ErrorCode.CHECKSUM_MISMATCH,
                details={"algo": algo, "expected": expected["value"], "actual": got},
            )
    ctx.progress(size, size, force=True)
    declared = action.input["image_properties"].get("disk_format")
    inspection = inspect_staged(ctx, STAGED, size=size, declared_format=declared)
    action.state.update(inspection_state(inspection))


# -- converting --------------------------------------------------------------------------


def convert_applies(action: ImageAction) -> bool:
    """Conversion runs when the service stores another format than the one detected."""
    target, detected = settings.IMAGE_STORE_FORMAT, action.state.get("disk_format")
    if not target or not detected or detected == "iso":  # an ISO is kept as it is: it is no disk
        return False
    return qemu_format_name(target, target=True) != qemu_format_name(detected)


def convert(action: ImageAction, ctx: StepContext) -> None:
    """Convert the verified staged image into IMAGE_STORE_FORMAT with qemu-img (`converting`).

    The source format is the inspected one, passed explicitly; the output is inspected again and
    stored instead of the staged file, so the Image's size, hashes, disk_format and virtual_size
    are those of the bytes stored. The user's checksum was checked in `verifying`, on the bytes
    received. Where this host has no copy of the staged image it is downloaded from the staging
    store; the output is staged there too, in the pass that hashes it.
    """
    if not convert_applies(action):
        return
    source_format, target = action.state["disk_format"], settings.IMAGE_STORE_FORMAT
    virtual_size = action.state.get("virtual_size") or action.state["size"]
    source = staged_file(ctx, STAGED, action.state["size"])
    converted = ctx.scratch / CONVERTED
    inspection = convert_image_file(
        ctx,
        source,
        converted,
        src_format=source_format,
        dst_format=target,
        total=virtual_size,
        what=f"The {source_format} image",
        max_size=settings.IMAGE_MAX_SIZE,
    )
    # The unavoidable second pass: the stored bytes are new, so are their size and hashes.
    hashed = stage_file(ctx, CONVERTED, progress=lambda: ctx.progress(virtual_size, virtual_size))
    # The staged file stays until `store`: a step run again after a lost worker starts from it,
    # and the state (saved when this step ends) is what says the converted file is the one to store.
    action.state.update(inspection_state(inspection))
    action.state.update(size=hashed.size, hashes=hashed.hashes, converted_from=source_format, stored_file=CONVERTED)


# -- storing -----------------------------------------------------------------------------


def store(action: ImageAction, ctx: StepContext) -> None:
    """Put the staged file into the image stores asked for (the default one if none) under a new
    image id (`storing`): copied from the staging store inside the object store's service where
    they are one, else from this host's copy, else streamed from the staging store."""
    image_id = action.state.setdefault("image_id", action.input.get("image_id") or str(uuid.uuid4()))
    name = action.state.get("stored_file", STAGED)
    store_image_file(
        ctx,
        local_copy(ctx, name, action.state["size"]),
        staged=staged_object(ctx, name),
        image_id=image_id,
        size=action.state["size"],
        stores=action.input.get("stores"),
        what="The image",
        all_must_succeed=action.input.get("all_stores_must_succeed", True),
    )
    staged_path(ctx).unlink(missing_ok=True)


def finish(action: ImageAction, ctx: StepContext) -> None:
    """Create the Image, or fill the image record the import is for (in the runner's success
    transaction), and point the result at it."""
    state, props = action.state, action.input["image_properties"]
    locations, failed_stores = stored_locations(state), state.get("failed_stores", [])
    facts = dict(
        disk_format=state.get("disk_format") or props.get("disk_format") or "raw",
        size=state["size"],
        virtual_size=state.get("virtual_size"),
        checksum=state["hashes"]["md5"],
        os_hash_algo="sha512",
        os_hash_value=state["hashes"]["sha512"],
        created_by_action=action.pk,
    )
    if action.input.get("image_id"):
        image = fill_image(action.input["image_id"], locations=locations, failed_stores=failed_stores, **facts)
    else:
        image = create_image(
            locations=locations,
            tags=props.get("tags", []),
            id=state["image_id"],
            name=props["name"],
            container_format=props.get("container_format", "bare"),
            properties=props.get("properties", {}),
            owner=action.owner,
            visibility=props.get("visibility", "private"),
            min_disk=props.get("min_disk", 0),
            min_ram=props.get("min_ram", 0),
            **facts,
        )
    action.result = {"image_ref": str(image.pk), "stores": list(locations), "failed_stores": failed_stores}


def clean_up(action: ImageAction, ctx: StepContext) -> None:
    """Remove stored bytes that no Image owns (failure or cancel after `storing`).

    Also runs when a successful action is purged: its Image owns the objects then, so they stay.
    The staged file is in the scratch directory (and the staging store), which the runner
    empties. An image record the import was for is queued again, naming the stores that failed.
    """
    store_keys = action.state.get("store_keys", {})
    if action.input.get("image_id") and action.status != ActionStatus.SUCCESS:
        failed = list(store_keys) or action.input.get("stores") or [ctx.store().name]
        import_failed(action.input["image_id"], failed, action=action)
    discard_unowned(ctx, store_keys)


def receivable_bytes(owner: str) -> tuple[int, str]:
    """The most bytes one import of the project may receive: the service's cap, or less when one
    of the project's byte quotas leaves less; and that quota's name ("" when it is the cap)."""
    quota_cap, quota = import_size_cap(owner)
    if quota_cap is None or quota_cap >= settings.IMAGE_MAX_SIZE:
        return settings.IMAGE_MAX_SIZE, ""
    return quota_cap, quota


def too_large(owner: str, quota: str, error: SizeLimitExceeded) -> StepError:
    """The failure of a source over the limit of receivable_bytes(): the quota's, or the cap's."""
    if quota:
        exceeded = quota_exceeded(owner, quota)
        return StepError(
            f"The image is larger than the project's quota allows. {exceeded}",
            code=ErrorCode.QUOTA_EXCEEDED,
            details={"quota": exceeded.quota, "limit": exceeded.limit, "usage": exceeded.usage},
        )
    return StepError(str(error), code=ErrorCode.IMAGE_TOO_LARGE, details={"limit": error.limit})
