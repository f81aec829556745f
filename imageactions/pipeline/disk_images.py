"""Work on image bytes that several action types share: inspecting and verifying a file as
hostile data, reaching an Image's bytes as a local file, and converting with qemu-img."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from django.conf import settings

from ..choices import ErrorCode
from ..formats import ImageFormatError, Inspection, inspect_image
from ..formats.convert import ConversionTimedOut, convert_and_reinspect, qemu_format_name
from ..formats.errors import describe_size
from ..formats.inspect import inspect_open_image
from ..formats.reader import ImageReader
from ..formats.verifiers import configured_verifiers, needs_file, run_verifiers
from ..images import in_use
from ..metrics import STORED, bytes_moved
from ..models import Image
from ..stores import ImageStore, ObjectNotFound, StoreError, StoreUnavailable
from ..stores.base import ReaderAdapter
from ..transfer import TransferError, TransferResult, copy_to_file
from .context import StepContext
from .errors import RetryableStepError, StepError, error_code_of

log = logging.getLogger(__name__)

IMAGE_COPY = "image-copy"  # the scratch file holding an Image's bytes when its store is not local
# The disk formats images are converted into (vhd is another name of vpc). One list, so the
# schema shows one enum for every input that asks for a conversion (settings.SPECTACULAR_SETTINGS).
CONVERSION_FORMATS = ["raw", "qcow2", "vmdk", "vpc", "vhd", "vhdx"]


def inspect_and_verify(
    path: Path | None,
    *,
    declared_format: str | None = None,
    reader: ImageReader | None = None,
    fetch_file: Callable[[], Path] | None = None,
) -> Inspection:
    """Inspect the file as hostile data, then run the operator's verifiers on it.

    An image that is not on this host is inspected through `reader` instead (ranged reads from
    the staging store), with `path` None; `fetch_file()` brings its bytes here only when one of
    the verifiers needs the file. Any refusal is a StepError in the inspector's or the
    verifier's own words.
    """
    try:
        if reader is None:
            inspection = inspect_image(
                path, declared_format=declared_format, max_virtual_size=settings.IMAGE_MAX_VIRTUAL_SIZE
            )
        else:
            inspection = inspect_open_image(
                reader, declared_format=declared_format, max_virtual_size=settings.IMAGE_MAX_VIRTUAL_SIZE
            )
        verifiers = configured_verifiers()
        if path is None and any(needs_file(verifier) for verifier in verifiers):
            path = fetch_file()
        run_verifiers(path, inspection, verifiers)
    except ImageFormatError as error:
        raise StepError(str(error), code=error_code_of(error)) from None
    return inspection


def inspection_state(inspection: Inspection) -> dict:
    """What `action.state` keeps of an inspection: an Image's disk_format and virtual_size are
    those of the bytes it will have."""
    # Details come from hostile headers; keep them JSON-safe.
    details = json.loads(json.dumps(inspection.details, default=str))
    return {
        "disk_format": inspection.format,
        "virtual_size": inspection.virtual_size,
        "inspection": {"format": inspection.format, "virtual_size": inspection.virtual_size, "details": details},
    }


def image_file(ctx: StepContext, image: Image) -> Path:
    """A file qemu-img can read with the image's bytes: the store's own file when it is local,
    else a copy in the action's scratch space (removed with it)."""
    location = image.location
    if location is None:
        raise StepError(f"Image {image.pk} has no bytes to read; tell an operator", code=ErrorCode.IMAGE_DATA_MISSING)
    try:
        store = ctx.store(location.store)
        path = store.local_path(location.key)
        if path is not None:
            if not path.is_file():  # qemu-img would only say it cannot open 'source'
                raise ObjectNotFound(f"Object '{location.key}' was not found in image store '{store.name}'")
            return path
        copy = ctx.scratch / IMAGE_COPY
        download(ctx, store, location.key, copy, size=image.size)
    except (StoreError, TransferError) as error:
        raise StepError(
            f"The bytes of image {image.pk} could not be read: {error}; tell an operator",
            code=ErrorCode.IMAGE_DATA_MISSING if isinstance(error, ObjectNotFound) else ErrorCode.STORE_UNAVAILABLE,
            details={"store": location.store},
        ) from None
    return copy


def download(ctx: StepContext, store: ImageStore, key: str, path: Path, *, size: int) -> TransferResult:
    """Copy the object `key` of `store` into the file `path` on this host, reporting the step's
    progress (holes kept with SPARSE_IMAGES). Faults are the store's StoreError or a
    TransferError, for the caller to put in its own words."""
    ctx.progress(0, size, force=True)
    with store.open_read(key) as reader:
        return copy_to_file(
            reader, path, hash_algorithms=(), total=size, progress=ctx.progress, sparse=settings.SPARSE_IMAGES
        )


def convert_image_file(
    ctx: StepContext,
    source: Path,
    output: Path,
    *,
    src_format: str,
    dst_format: str,
    total: int,
    what: str,
    max_size: int | None = None,
) -> Inspection:
    """Convert `source` (already inspected as `src_format`) into `output` with qemu-img, then
    inspect the output again as hostile data; progress counts `total` bytes.

    qemu-img runs for at most QEMU_TIMEOUT, and never past the step's own time limit (the worker
    would be killed mid-conversion). `max_size` caps the output (a raw target is refused up front
    when `total`, the virtual size, is already over it). Failures are StepErrors that start
    with `what` ("The qcow2 image", "Image 1234...").
    """
    if max_size is not None and qemu_format_name(dst_format, target=True) == "raw" and total > max_size:
        raise StepError(
            f"The image would be {describe_size(total)} stored as raw, more than the "
            f"{describe_size(max_size)} limit on image size; use a smaller disk",
            code=ErrorCode.IMAGE_TOO_LARGE,
            details={"size": total, "limit": max_size},
        )
    timeout = settings.QEMU_TIMEOUT if ctx.step is None else min(settings.QEMU_TIMEOUT, ctx.step.timeout)
    ctx.progress(0, total, force=True)
    try:
        inspection = convert_and_reinspect(
            source,
            output,
            src_format=src_format,
            dst_format=dst_format,
            timeout=timeout,
            max_memory=settings.QEMU_MAX_MEMORY,
            max_cpu_seconds=settings.QEMU_MAX_CPU_SECONDS,
            max_virtual_size=settings.IMAGE_MAX_VIRTUAL_SIZE,
            progress=lambda percent: ctx.progress(int(total * percent / 100), total),
            sparse=settings.SPARSE_IMAGES,
        )
    except ConversionTimedOut as error:
        raise StepError(
            f"{what} could not be converted to {dst_format}: {error}",
            code=ErrorCode.TIMED_OUT,
            details={"seconds": timeout},
        ) from None
    except ImageFormatError as error:
        raise StepError(
            f"{what} could not be converted to {dst_format}: {error}", code=ErrorCode.CONVERSION_FAILED
        ) from None
    if max_size is not None and output.stat().st_size > max_size:
        size = output.stat().st_size
        output.unlink(missing_ok=True)
        raise StepError(
            f"The image converted to {dst_format} is {describe_size(size)}, more than the "
            f"{describe_size(max_size)} limit on image size",
            code=ErrorCode.IMAGE_TOO_LARGE,
            details={"size": size, "limit": max_size},
        )
    ctx.progress(total, total, force=True)
    return inspection


# How store_image_file() put the bytes into a store (state["stored_by"]), besides copy_from()'s
# COPIED_SERVER_SIDE and COPIED_BY_KERNEL.
FROM_LOCAL_FILE, STREAMED_FROM_STAGING, FOUND_STORED = "local file", "streamed from staging", "found stored"


def store_image_file(
    ctx: StepContext,
    path: Path | None,
    *,
    image_id: str,
    size: int,
    stores: list[str] | None,
    what: str,
    all_must_succeed: bool = True,
    staged: tuple[ImageStore, str] | None = None,
) -> None:
    """Put a file of the action's scratch space into the image stores `stores` (None: the default
    store) as the bytes of image `image_id`, then remove the file.

    `staged` (staging store, key) holds the same bytes in the staging store: each store copies
    them from there with copy_from() when it can (inside the object store's service: no byte
    passes through here), else from the file when this host has it (`path` may be None), else
    streamed from the staging store. `state["stored_by"]` says which, per store.

    The keys are saved in `action.state["store_keys"]` (store -> key) before any byte moves, so a
    clean-up after a crash finds them; a re-run skips the stores written already. Store faults are
    StepErrors starting with `what` (RetryableStepError when passing, so the runner retries the
    step). With `all_must_succeed` False, a store that cannot be written is listed in
    `state["failed_stores"]` instead, as long as another store took the bytes. stored_locations()
    gives where the bytes are afterwards.
    """
    state = ctx.action.state
    failed = f"{what} could not be stored"
    try:
        targets = [ctx.store(name) for name in stores or [None]]
    except StoreError as error:  # the store was removed from the configuration since the action began
        raise StepError(f"{failed}: {error}", code=ErrorCode.STORE_UNAVAILABLE, details={"stores": stores}) from None
    key = f"images/{image_id}"
    state["store_keys"] = {target.name: key for target in targets}
    written, failed_stores = state.setdefault("stored", []), state.setdefault("failed_stores", [])
    ctx.save_state()
    pending = [target for target in targets if target.name not in written and target.name not in failed_stores]
    if pending and staged is not None:
        staged = _checked_staged(staged, size=size, path=path, what=what)
    total = size * len(targets)
    for index, target in enumerate(pending):
        offset = size * (len(targets) - len(pending) + index)

        def report(done, _total, offset=offset):
            ctx.progress(offset + done, total)

        try:
            how = _put(
                target, key, path, size=size, move=index == len(pending) - 1, progress=report, what=what, staged=staged
            )
        except ImageLost as error:
            raise StepError(str(error), code=ErrorCode.IMAGE_DATA_MISSING) from None
        except StagingFault as fault:  # the staging store's fault: the target is not to blame
            raise staging_read_failed(fault.error, what=what) from None
        except StoreError as error:
            if all_must_succeed:
                retryable = isinstance(error, StoreUnavailable)
                where = f" in store '{target.name}'" if len(targets) > 1 else ""  # else the error names it
                message = f"{failed}{where}: {error}"
                raise (RetryableStepError if retryable else StepError)(
                    message, code=ErrorCode.STORE_UNAVAILABLE, details={"store": target.name}
                ) from None
            failed_stores.append(target.name)
        else:
            written.append(target.name)
            state.setdefault("stored_by", {})[target.name] = how
        ctx.save_state()
    if not written:
        raise StepError(
            f"{failed} in any of the stores {', '.join(failed_stores)}",
            code=ErrorCode.STORE_UNAVAILABLE,
            details={"failed_stores": failed_stores},
        )
    if path is not None:
        path.unlink(missing_ok=True)


class ImageLost(StoreError):
    """The file to store is gone and no store has its bytes: nothing to retry."""


class StagingFault(Exception):
    """A staging store's StoreError met while a target store took the staged bytes. Not a
    StoreError, so that no target store takes it for its own."""

    def __init__(self, error: StoreError):
        super().__init__(str(error))
        self.error = error


def read_staged(staging: ImageStore, key: str) -> BinaryIO:
    """open_read() of a staged object whose faults, opening or reading, are StagingFaults."""
    try:
        body = staging.open_read(key)
    except StoreError as error:
        raise StagingFault(error) from error

    def read_some(amount: int) -> bytes:
        try:
            return body.read(amount)
        except StoreError as error:
            raise StagingFault(error) from error

    return ReaderAdapter(read_some, body.close)


def _checked_staged(staged: tuple[ImageStore, str], *, size: int, path: Path | None, what: str):
    """`staged` when its object has the `size` bytes staged, else None when this host's copy
    (`path`) can stand in for it; a StepError when neither has the bytes, or the staging store
    cannot be reached (checked once here, so that no target store is blamed for it)."""
    staging, key = staged
    try:
        found = staging.size(key)
    except ObjectNotFound:
        found = None
    except StoreError as error:
        raise staging_read_failed(error, what=what) from None
    if found == size:
        return staged
    if path is not None and path.exists():
        log.warning("the staged object %s has %s bytes, %d were staged: storing this host's copy", key, found, size)
        return None
    where = "is no longer" if found is None else f"has {found} bytes where {size} were staged"
    raise StepError(
        f"{what} {where} in the staging store, and this host has no copy; start the action again",
        code=ErrorCode.IMAGE_DATA_MISSING,
        details={"store": staging.name, "key": key},
    )


def staging_read_failed(error: StoreError | TransferError, *, what: str) -> StepError:
    """The failure of a step that could not read a staged object (`what`): gone from the staging
    store, the staging store's fault (staging_failed), or a read broken off."""
    if isinstance(error, TransferError):
        return RetryableStepError(
            f"{what} could not be read from the staging store: {error}",
            code=ErrorCode.STORE_UNAVAILABLE,
            details={"store": "staging"},
        )
    if isinstance(error, ObjectNotFound):
        return StepError(
            f"{what} is no longer in the staging store ({error}); start the action again",
            code=ErrorCode.IMAGE_DATA_MISSING,
        )
    return staging_failed(error)


def staging_failed(error: StoreError) -> StepError:
    """The failure of a step whose staging store failed (a passing fault: worth another try)."""
    retryable = isinstance(error, StoreUnavailable)
    return (RetryableStepError if retryable else StepError)(
        f"The staging store failed: {error}", code=ErrorCode.STORE_UNAVAILABLE, details={"store": "staging"}
    )


def _put(target, key: str, path: Path | None, *, size: int, move: bool, progress, what: str, staged) -> str:
    """One store's copy of the bytes, and how it was made; `move`: the last copy, which may take
    the file itself."""
    if staged is not None:
        how = target.copy_from(*staged, key, size=size, progress=progress)
        if how:
            bytes_moved(STORED, size)
            return how
    if path is not None and path.exists():
        if move:
            target.put_file(key, path, size=size, progress=progress)
        else:
            with open(path, "rb") as source:
                target.put_stream(key, source, size=size, progress=progress)
        bytes_moved(STORED, size)
        return FROM_LOCAL_FILE
    if staged is not None:
        with read_staged(*staged) as source:
            target.put_stream(key, source, size=size, progress=progress)
        bytes_moved(STORED, size)
        return STREAMED_FROM_STAGING
    if target.exists(key) and target.size(key) == size:
        return FOUND_STORED  # a re-run after the file was moved into this store
    raise ImageLost(f"{what} was lost: its worker's scratch space is gone. Start the action again")


def stored_locations(state: dict) -> dict[str, str]:
    """Where store_image_file() put the bytes: store name -> key, in the order they were written
    (a list keeps it; the keys of a JSON object in PostgreSQL do not)."""
    keys = state.get("store_keys", {})
    return {name: keys[name] for name in state.get("stored", [])}


def discard_unowned(ctx: StepContext, store_keys: dict[str, str]) -> None:
    """Remove the objects (store name -> key) that no image's location holds: what a failed or
    cancelled action wrote. Best effort: a store that cannot be reached is logged, not retried."""
    for name, key in store_keys.items():
        if in_use(name, key):
            continue
        try:
            ctx.store(name).delete(key)
        except StoreError:
            log.warning("could not remove %s from store %s after action %s", key, name, ctx.action.pk, exc_info=True)
