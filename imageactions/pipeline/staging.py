"""Staged bytes: what an action keeps between its steps (an import's staged and converted image).

Without a staging store (IMAGEACTIONS_STAGING_STORE unset) they are files in the action's
scratch directory on the worker, which every pool must share. With one, they are objects
`<prefix><action id>/<name>` in its S3 bucket, written in the same pass as the local file
(a multipart upload whose id is in `action.state` before its first part is sent), and the
worker's file is only a cache: a step that runs on another host reads the object instead (ranged
reads to inspect it, a download where a whole file is needed). The runner discards an action's
staged objects, and aborts its recorded uploads, when the action ends (discard_staged).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings

from ..choices import ErrorCode
from ..formats import Inspection
from ..formats.reader import RangedImageReader
from ..stores import ImageStore, StoreError, staging_store
from ..transfer import IMAGE_HASHES, Sink, TransferError, TransferResult, hash_file
from .context import StepContext, scratch_dir
from .disk_images import download, inspect_and_verify, staging_failed, staging_read_failed
from .errors import StepError

log = logging.getLogger(__name__)

# action.state keys: name -> id of a multipart upload under way into the staging store (what a
# re-run or the clean-up aborts); name -> the scratch directory ("host:path") holding a copy.
UPLOADS = "staging_uploads"
CACHED = "staging_cached"
INSPECTED = "inspected"  # where inspect_staged() read the image: a local copy, or ranges of the object
# The names the action staged (recorded before their upload began), and whether discard_staged()
# removed them all: then nothing is left to remove, and a purge asks the staging store nothing.
OBJECTS = "staging_objects"
DISCARDED = "staging_discarded"
# What an import stages; discarded even where an older state recorded no OBJECTS.
KNOWN_NAMES = ("staged", "converted")


def staging_enabled() -> bool:
    return bool(settings.STAGING_STORE)


def staged_key(action_id, name: str) -> str:
    """The key of an action's staged object in the staging store (under its prefix)."""
    return f"{action_id}/{name}"


def this_scratch() -> str:
    """This host's scratch directory, as `state[CACHED]` names where a copy is."""
    return f"{socket.gethostname()}:{settings.SCRATCH_DIR}"


def staged_object(ctx: StepContext, name: str) -> tuple[ImageStore, str] | None:
    """(staging store, key) of the action's staged `name`, None without a staging store."""
    store = staging_store()
    return None if store is None else (store, staged_key(ctx.action.pk, name))


@contextmanager
def staging_upload(ctx: StepContext, name: str, *, max_size: int) -> Iterator[Sink | None]:
    """The sink of the bytes of the action's staged `name` (None without a staging store): a
    multipart upload into the staging store, completed when the block ends, aborted on any error.

    An upload an earlier run of the step recorded (its host died) is aborted first; the new
    upload's id is saved in the action's state before its first part is sent.
    """
    store = staging_store()
    if store is None:
        yield None
        return
    key, uploads = staged_key(ctx.action.pk, name), ctx.action.state.setdefault(UPLOADS, {})
    try:
        if earlier := uploads.pop(name, None):
            store.abort_upload(key, earlier)
        upload = store.start_upload(key, max_size=max_size)
    except StoreError as error:
        raise staging_failed(error) from None
    uploads[name] = upload.upload_id
    if name not in (names := ctx.action.state.setdefault(OBJECTS, [])):
        names.append(name)
    try:
        ctx.save_state()  # a run superseded meanwhile, or a database fault: the new upload is aborted
        yield upload.write
        upload.complete()
    except StoreError as error:
        upload.abort()
        raise staging_failed(error) from None
    except BaseException:
        upload.abort()
        raise
    del uploads[name]  # saved with the step's end; a clean-up that still finds it aborts nothing


def stage_file(
    ctx: StepContext,
    name: str,
    *,
    hash_algorithms: Iterable[str] = IMAGE_HASHES,
    progress: Callable[[], None] | None = None,
) -> TransferResult:
    """Read the action's file `name` in this host's scratch directory (a step's output) in one
    pass that hashes it and, with a staging store, uploads it as the staged `name`, so that the
    next step finds it on any host (staged_file; store_image_file with `staged`)."""
    path = ctx.scratch / name
    with staging_upload(ctx, name, max_size=path.stat().st_size) as also_to:
        result = hash_file(path, hash_algorithms=hash_algorithms, progress=progress, also_to=also_to)
    mark_cached(ctx, name)
    return result


def mark_cached(ctx: StepContext, name: str) -> None:
    """Record that this host's scratch directory holds the whole staged `name`."""
    if staging_enabled():
        ctx.action.state.setdefault(CACHED, {})[name] = this_scratch()


def local_copy(ctx: StepContext, name: str, size: int) -> Path | None:
    """The staged `name` in this host's scratch directory, None when it is not here.

    Without a staging store that is always the file (the scratch directory is shared). With one,
    only a copy this host wrote whole and of the right size counts: a file left by a run that
    died part-way is no copy.
    """
    if not staging_enabled():
        return ctx.scratch / name
    path = scratch_dir(ctx.action.pk) / name
    cached_here = ctx.action.state.get(CACHED, {}).get(name) == this_scratch()
    if cached_here and path.is_file() and path.stat().st_size == size:
        return path
    return None


def staged_file(ctx: StepContext, name: str, size: int) -> Path:
    """The staged `name` as a file on this host: the local copy, else downloaded from staging."""
    return local_copy(ctx, name, size) or download_staged(ctx, name, size)


def download_staged(ctx: StepContext, name: str, size: int) -> Path:
    """Copy the staged object `name` into this host's scratch directory (a cache from then on)."""
    store, key = staged_object(ctx, name)
    path = ctx.scratch / name
    try:
        copied = download(ctx, store, key, path, size=size)
    except (StoreError, TransferError) as error:
        raise staging_read_failed(error, what="The staged image") from None
    if copied.size != size:
        path.unlink(missing_ok=True)
        raise StepError(
            f"The staged image has {copied.size} bytes in the staging store, {size} were staged; start the action again",
            code=ErrorCode.IMAGE_DATA_MISSING,
        )
    mark_cached(ctx, name)
    return path


def inspect_staged(ctx: StepContext, name: str, *, size: int, declared_format: str | None) -> Inspection:
    """inspect_and_verify() of the staged `name`: the local copy when this host has one, else
    with ranged reads of the staged object (downloaded only for a verifier that needs the file)."""
    local = local_copy(ctx, name, size)
    if local is not None:
        if staging_enabled():
            ctx.action.state[INSPECTED] = {"from": "local copy"}
        return inspect_and_verify(local, declared_format=declared_format)
    store, key = staged_object(ctx, name)

    def read_range(offset: int, length: int) -> bytes:
        with store.open_read(key, start=offset, end=offset + length) as body:
            return body.read()

    reader = RangedImageReader(read_range, size)

    try:
        return inspect_and_verify(
            None, declared_format=declared_format, reader=reader, fetch_file=lambda: download_staged(ctx, name, size)
        )
    except StoreError as error:
        raise staging_read_failed(error, what="The staged image") from None
    finally:  # a refusal is saved with the state too
        ctx.action.state[INSPECTED] = {"from": "staging store", "range_requests": reader.requests}


def discard_staged(action_id, state: dict) -> bool:
    """Abort the action's recorded uploads and delete its staged objects, by their keys (no
    listing). True when that is done now and `state` says so (DISCARDED: the caller saves it);
    False when there was nothing to do or some is left. Best effort: at the staging store's first
    fault (unreachable, a missing bucket) it gives up, logged, rather than wait out a timeout per
    object, and clean_staging removes the rest later."""
    state = state if state is not None else {}
    store = staging_store()
    if store is None or state.get(DISCARDED) or UPLOADS not in state:
        return False  # nothing staged: an upload's id is recorded before any object exists
    # Every name with an upload or a cached copy was recorded in OBJECTS when its upload began.
    names = dict.fromkeys([*KNOWN_NAMES, *state.get(OBJECTS, [])])
    try:
        for name, upload_id in state.get(UPLOADS, {}).items():
            store.abort_upload(staged_key(action_id, name), upload_id)
        for name in names:
            store.delete(staged_key(action_id, name))
    except StoreError as error:
        log.warning("the staged objects of action %s stay for clean_staging: %s", action_id, error)
        return False
    state[DISCARDED] = True
    return True
