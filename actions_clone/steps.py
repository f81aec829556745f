"""The steps of a clone: copy the image's bytes into each target store, read every copy back to
verify it against the source's sha512, then record one new Image per store, or each copy as a
location of the image itself (`same_image`: Glance's copy-image).

`action.state["targets"]` maps each target store to the new image's id and key, chosen once, so a
re-run step overwrites its own objects and clean-up knows every key that may exist, and to how far
it got (its status and bytes, shown as progress.targets). With `all_stores_must_succeed` false, a
target that cannot be copied or verified is listed in `action.state["failed_stores"]` (why in
`target_errors`: message, error code and details) and its object removed, and the others go on.
"""

from __future__ import annotations

import logging
import uuid

from django.conf import settings
from django.utils.module_loading import import_string

from imageactions.pipeline import (
    CHUNK_SIZE,
    ActionStatus,
    ErrorCode,
    Image,
    ImageAction,
    ImageStatus,
    ImageStore,
    ObjectNotFound,
    ParallelHasher,
    QuotaExceeded,
    RetryableStepError,
    StepContext,
    StepError,
    StoreError,
    StoreUnavailable,
    add_locations,
    check_stored_bytes,
    create_image,
    discard_unowned,
    human_size,
    image_facts,
    import_failed,
)

log = logging.getLogger(__name__)

NOTHING_CLONED = "nothing was cloned"

# Each target's status in the action's progress.targets, in the order a target goes through them.
WAITING, COPYING, WRITTEN, VERIFYING, COPIED, FAILED = "waiting", "copying", "written", "verifying", "copied", "failed"
# How a copy went when the stores could not copy it themselves (see ImageStore.copy_from).
STREAMED = "streamed"


def _store(ctx: StepContext, name: str) -> ImageStore:
    try:
        return ctx.store(name)
    except StoreError as error:  # the store was removed from the configuration after the request
        raise StepError(
            f"{error}; {NOTHING_CLONED}. Choose a store listed by GET /v2/stores.",
            code=ErrorCode.STORE_UNAVAILABLE,
            details={"store": name},
        ) from None


# -- copying -----------------------------------------------------------------------------


def copy_image(action: ImageAction, ctx: StepContext) -> None:
    """Copy the source's bytes into every target store (status `copying`)."""
    source = _source_image(action)
    location = source.location
    action.state["source"] = {**image_facts(source), "store": location.store, "key": location.key}
    targets = plan_targets(action, ctx)
    source_store = _store(ctx, location.store)
    size = source.size
    live = _live(action, targets)
    _check_quota(action, size, len(live))
    for _name, target in live:
        target.update(status=WAITING, bytes_done=0)
    total = size * len(targets)
    _progress(action, ctx, 0, total, force=True)
    for index, (name, target) in enumerate(live):
        target_store = _store(ctx, name)
        target["region"] = target_store.region
        target["status"] = COPYING

        def report(done, _size, offset=index * size, target=target):
            target["bytes_done"] = done
            _progress(action, ctx, offset + done, total)

        try:
            target["copied_by"], target["copy_sha512"] = copy_object(
                source_store, location.key, target_store, target["key"], size, report
            )
        except ObjectNotFound:
            raise StepError(
                f"The bytes of image {source.pk} are missing from store '{location.store}'; {NOTHING_CLONED}. "
                f"Tell an operator: the image cannot be read.",
                code=ErrorCode.IMAGE_DATA_MISSING,
                details={"image_id": str(source.pk), "store": location.store},
            ) from None
        except StoreError as error:
            _target_failed(
                action,
                ctx,
                name,
                f"The image could not be copied to store '{name}': {error}",
                code=ErrorCode.STORE_UNAVAILABLE,
                details={"store": name},
                retryable=isinstance(error, StoreUnavailable),
            )
            continue
        target.update(status=WRITTEN, bytes_done=size)
    _progress(action, ctx, total, total, force=True)


def _check_quota(action: ImageAction, size: int, copies: int) -> None:
    """The copies count against the project's stored bytes: a quota that cannot take them all
    fails the clone before any byte moves (checked at create too, but images came since)."""
    try:
        check_stored_bytes(action.owner, size * copies)
    except QuotaExceeded as error:
        raise StepError(
            f"The {copies} copies of {human_size(size)} would pass the project's quota; {NOTHING_CLONED}. {error}",
            code=ErrorCode.QUOTA_EXCEEDED,
            details={"quota": error.quota, "limit": error.limit, "usage": error.usage, "adding": size * copies},
        ) from None


def _progress(action: ImageAction, ctx: StepContext, done: int, total: int, *, force: bool = False) -> None:
    """The clone's progress, with each target store's (progress.targets)."""
    _show_targets(action, ctx)
    ctx.progress(done, total, force=force)


def _show_targets(action: ImageAction, ctx: StepContext) -> None:
    """Each target store's status and bytes, in the order asked, for progress.targets."""
    size = action.state["source"]["size"]
    targets = action.state["targets"]
    ctx.show_targets(
        {
            name: {
                "status": targets[name].get("status", WAITING),
                "bytes_done": targets[name].get("bytes_done", 0),
                "bytes_total": size,
            }
            for name in action.input["stores"]
            if name in targets
        }
    )


def _live(action: ImageAction, targets: dict) -> list[tuple[str, dict]]:
    """The targets that did not fail (a tolerated failure is final for its store), in the order
    the input names them (the keys of a JSON object in PostgreSQL lose theirs)."""
    failed = action.state.get("failed_stores", [])
    return [(name, targets[name]) for name in action.input["stores"] if name in targets and name not in failed]


def _target_failed(
    action: ImageAction,
    ctx: StepContext,
    name: str,
    what: str,
    *,
    code: str,
    details: dict | None = None,
    advice: str = "",
    retryable: bool = False,
) -> None:
    """One target store failed (`what` happened; `advice` says what to do): the whole step does
    (the runner retries a passing fault), unless the action tolerates it, then the store is
    listed as failed with its message and code, and its object removed. A step with no target
    left fails."""
    target = action.state["targets"][name]
    target["status"] = FAILED
    _show_targets(action, ctx)  # saved with the state, by save_state() below or by the runner
    details = {"store": name, **(details or {})}
    advice = f" {advice}" if advice else ""
    if action.input.get("all_stores_must_succeed", True):
        error = RetryableStepError if retryable else StepError
        raise error(f"{what}; {NOTHING_CLONED}.{advice}", code=code, details=details) from None
    message = f"{what}; the store was left out.{advice}"
    log.warning("clone %s: store %s left out: %s", action.pk, name, message)
    failed = action.state.setdefault("failed_stores", [])
    failed.append(name)
    action.state.setdefault("target_errors", {})[name] = {
        "message": message,
        "error_code": code,
        "error_details": details,
    }
    discard_unowned(ctx, {name: target["key"]})
    ctx.save_state()
    if len(failed) == len(action.state["targets"]):
        errors = action.state["target_errors"]
        codes = {store: _target_error(errors, store)["error_code"] for store in failed}
        raise StepError(
            f"No target store took a verified copy: {', '.join(failed)}; {NOTHING_CLONED}.",
            # One code for the clone: the stores' own when they agree, else the first store's.
            code=codes[failed[0]],
            details={"error_codes": codes},
        )


def _target_error(errors: dict, name: str) -> dict:
    """A failed target's message, code and details (clones made before codes kept only a message)."""
    error = errors.get(name, "")
    if isinstance(error, str):
        return {"message": error, "error_code": ErrorCode.STEP_FAILED, "error_details": {}}
    return error


def _source_image(action: ImageAction) -> Image:
    image = Image.objects.filter(pk=action.input["image_id"], status=ImageStatus.ACTIVE).first()
    if image is None:
        raise StepError(
            f"The image {action.input['image_id']} was deleted before it could be copied; {NOTHING_CLONED}.",
            code=ErrorCode.IMAGE_NOT_FOUND,
            details={"image_id": action.input["image_id"]},
        )
    return image


def plan_targets(action: ImageAction, ctx: StepContext) -> dict[str, dict]:
    """The new image id and key in each target store, chosen on the first run and kept after."""
    targets = action.state.setdefault("targets", {})
    for name in action.input["stores"]:
        if name not in targets:
            image_id = str(uuid.uuid4())
            targets[name] = {"image_id": image_id, "key": f"images/{image_id}", "status": WAITING, "bytes_done": 0}
    # Persisted before any byte moves, so a worker that dies mid-copy leaves keys clean-up can find.
    ctx.save_state()
    return targets


def copy_object(
    source_store: ImageStore, source_key: str, target_store: ImageStore, target_key: str, size: int, progress
) -> tuple[str, str | None]:
    """Copy one object between stores: by the stores themselves where they can (S3's server-side
    copy, the kernel's copy between two files), else through this process. Returns how, and the
    sha512 of the copy when the target store read it back while copying (None: `verify` reads it)."""
    fault = stream_filter()
    if fault is None:
        read = 0
        with ParallelHasher(("sha512",)) as hasher:

            def read_back(chunk: bytes) -> None:
                nonlocal read
                hasher.update(chunk)
                read += len(chunk)

            copied_by = target_store.copy_from(
                source_store, source_key, target_key, size=size, progress=progress, read_back=read_back
            )
            if copied_by:
                return copied_by, hasher.hexdigests()["sha512"] if read == size else None
    with source_store.open_read(source_key) as reader:
        target_store.put_stream(target_key, fault(reader) if fault else reader, size=size, progress=progress)
    return STREAMED, None


def stream_filter():
    """The fault-injection point of the test settings (CLONE_STREAM_FILTER): wraps the source reader
    of a copy, which then streams, e.g. to change a byte in flight. None elsewhere: the product's
    settings have no such knob."""
    dotted_path = getattr(settings, "CLONE_STREAM_FILTER", "")
    return import_string(dotted_path) if dotted_path else None


# -- verifying ---------------------------------------------------------------------------


def verify(action: ImageAction, ctx: StepContext) -> None:
    """Read every copy back and compare its size and sha512 with the source's (status `verifying`).

    A hash over the bytes the copy step sent would prove nothing about what the store holds (a
    store, a proxy on the way or a server-side copy can change them), so each copy is read back
    once: here, or already by the copy step where the store read it back while copying.
    """
    source, targets = action.state["source"], action.state["targets"]
    size, expected = source["size"], source["os_hash_value"]
    total = size * len(targets)
    live = _live(action, targets)
    for _name, target in live:
        target.update(status=WRITTEN, bytes_done=size)
    _progress(action, ctx, 0, total, force=True)
    for index, (name, target) in enumerate(live):
        target_store = _store(ctx, name)
        target.update(status=VERIFYING, bytes_done=0)

        def report(done, offset=index * size, target=target):
            target["bytes_done"] = done
            _progress(action, ctx, offset + done, total)

        try:
            found_size = target_store.size(target["key"])
            if found_size != size:
                _target_failed(
                    action,
                    ctx,
                    name,
                    f"The copy in store '{name}' has {found_size} bytes where the source has {size}",
                    code=ErrorCode.CHECKSUM_MISMATCH,
                    details={"expected_size": size, "actual_size": found_size},
                    advice="Try again; if it happens again, tell an operator.",
                )
                continue
            got = target.get("copy_sha512") or sha512_of(target_store, target["key"], report)
        except StoreError as error:
            _target_failed(
                action,
                ctx,
                name,
                f"The copy in store '{name}' could not be read back: {error}",
                code=ErrorCode.STORE_UNAVAILABLE,
                retryable=isinstance(error, StoreUnavailable),
            )
            continue
        if got != expected:
            _target_failed(action, ctx, name, **_mismatch(ctx, name, source, got))
            continue
        target.update(status=COPIED, bytes_done=size)
    _progress(action, ctx, total, total, force=True)


def sha512_of(store: ImageStore, key: str, progress=None) -> str:
    done = 0
    with store.open_read(key) as reader, ParallelHasher(("sha512",)) as hasher:
        while chunk := reader.read(CHUNK_SIZE):
            hasher.update(chunk)
            done += len(chunk)
            if progress:
                progress(done)
        return hasher.hexdigests()["sha512"]


def _mismatch(ctx: StepContext, name: str, source: dict, got: str) -> dict:
    """Whose bytes are wrong: the copy's, or (checked only now, on this rare path) the source's."""
    try:
        source_now = sha512_of(ctx.store(source["store"]), source["key"])
    except StoreError:
        source_now = source["os_hash_value"]  # unreadable now: say what is certain, the copy differs
    if source_now != source["os_hash_value"]:
        return {
            "what": f"The source image's bytes in store '{source['store']}' no longer match its sha512 "
            f"(recorded {source['os_hash_value']}, read {source_now})",
            "advice": "Tell an operator: the source image is damaged.",
            "code": ErrorCode.CHECKSUM_MISMATCH,
            "details": {
                "algo": "sha512",
                "expected": source["os_hash_value"],
                "actual": source_now,
                "damaged": "source",
                "source_store": source["store"],
            },
        }
    return {
        "what": f"The copy in store '{name}' does not match the source: expected sha512 {source['os_hash_value']}, "
        f"got {got}",
        "advice": "Try again; if it happens again, tell an operator.",
        "code": ErrorCode.CHECKSUM_MISMATCH,
        "details": {"algo": "sha512", "expected": source["os_hash_value"], "actual": got, "damaged": "copy"},
    }


# -- finishing and cleaning up -----------------------------------------------------------


def finish(action: ImageAction, ctx: StepContext) -> None:
    """Record the verified copies (in the runner's success transaction): new Images, or locations
    of the image itself; the result lists them."""
    source, failed = action.state["source"], action.state.get("failed_stores", [])
    copies = _live(action, action.state["targets"])
    if action.input.get("same_image"):
        image_id = action.input["image_id"]
        add_locations(
            image_id, {name: target["key"] for name, target in copies}, failed_stores=failed, action_id=action.pk
        )
        images = [{"id": image_id, "store": name, "region": target["region"]} for name, target in copies]
        action.result = {
            "image_refs": [],
            "images": images,
            "failed_stores": failed,
            "targets": _outcomes(action, images),
        }
        _final_progress(action, ctx)
        return
    shared = {key: source[key] for key in SHARED_FACTS}
    images = []
    for name, target in copies:
        image = create_image(
            **shared,
            locations={name: target["key"]},
            id=target["image_id"],
            name=action.input.get("name", source["name"]),
            properties={**source["properties"], "cloned_from": action.input["image_id"]},
            owner=action.owner,
            created_by_action=action.pk,
        )
        images.append({"id": str(image.pk), "store": name, "region": target["region"]})
    action.result = {
        "image_refs": [image["id"] for image in images],
        "images": images,
        "failed_stores": failed,
        "targets": _outcomes(action, images),
    }
    _final_progress(action, ctx)


def _final_progress(action: ImageAction, ctx: StepContext) -> None:
    """Each target's progress at the end says what result.targets says: copied or failed."""
    size = action.state["source"]["size"]
    outcomes = {target["store"]: target["outcome"] for target in action.result["targets"]}
    ctx.show_targets(
        {
            name: {
                "status": COPIED if outcome == "copied" else FAILED,
                "bytes_done": size if outcome == "copied" else action.state["targets"][name].get("bytes_done", 0),
                "bytes_total": size,
            }
            for name, outcome in outcomes.items()
        }
    )


def _outcomes(action: ImageAction, images: list[dict]) -> list[dict]:
    """Each target store's outcome, in the order the input names them: the copy it got, or why
    it got none (only with all_stores_must_succeed false; otherwise a failure fails the clone)."""
    copied = {image["store"]: image for image in images}
    errors = action.state.get("target_errors", {})
    return [
        {"store": name, "outcome": "copied", "image_id": copied[name]["id"], "region": copied[name]["region"]}
        if name in copied
        else {"store": name, "outcome": "failed", **_target_error(errors, name)}
        for name in action.input["stores"]
    ]


# What a new image shares with its source, besides its name and properties.
SHARED_FACTS = (
    "disk_format",
    "container_format",
    "size",
    "virtual_size",
    "checksum",
    "os_hash_algo",
    "os_hash_value",
    "visibility",
    "min_disk",
    "min_ram",
    "tags",
)


def clean_up(action: ImageAction, ctx: StepContext) -> None:
    """Remove every copy no image owns (after failure or cancel; on purge the images own them).
    A copy into the image itself that failed names its stores on the image, as Glance does."""
    if action.input.get("same_image") and action.status != ActionStatus.SUCCESS:
        import_failed(action.input["image_id"], action.input["stores"], action=action)
    discard_unowned(ctx, {name: target["key"] for name, target in action.state.get("targets", {}).items()})
