"""The steps of a clone: copy the image's bytes into each target store, read every copy back to
verify it against the source's sha512, then record one new Image per store.

`action.state["targets"]` maps each target store to the new image's id and key, chosen once, so a
re-run step overwrites its own objects and clean-up knows every key that may exist.
"""

from __future__ import annotations

import logging
import uuid

from django.conf import settings
from django.utils.module_loading import import_string

from imageactions.pipeline import (
    CHUNK_SIZE,
    Image,
    ImageAction,
    ImageStatus,
    ImageStore,
    ObjectNotFound,
    ParallelHasher,
    RetryableStepError,
    StepContext,
    StepError,
    StoreError,
    StoreUnavailable,
    create_image,
    image_facts,
)

log = logging.getLogger(__name__)

NOTHING_CLONED = "nothing was cloned"


def _store(ctx: StepContext, name: str) -> ImageStore:
    try:
        return ctx.store(name)
    except StoreError as error:  # the store was removed from the configuration after the request
        raise StepError(f"{error}; {NOTHING_CLONED}. Choose a store listed by GET /v2/stores.") from None


# -- copying -----------------------------------------------------------------------------


def copy_image(action: ImageAction, ctx: StepContext) -> None:
    """Copy the source's bytes into every target store (status `copying`)."""
    source = _source_image(action)
    action.state["source"] = {**image_facts(source), "store": source.store, "key": source.store_key}
    targets = plan_targets(action, ctx)
    source_store = _store(ctx, source.store)
    size = source.size
    total = size * len(targets)
    ctx.progress(0, total, force=True)
    for index, (name, target) in enumerate(targets.items()):
        target_store = _store(ctx, name)
        target["region"] = target_store.region

        def report(done, _size, offset=index * size):
            ctx.progress(offset + done, total)

        try:
            target["copied_by"] = copy_object(source_store, source.store_key, target_store, target["key"], size, report)
        except ObjectNotFound:
            raise StepError(
                f"The bytes of image {source.pk} are missing from store '{source.store}'; {NOTHING_CLONED}. "
                f"Tell an operator: the image cannot be read."
            ) from None
        except StoreUnavailable as error:  # the runner retries the step; the keys stay the same
            raise RetryableStepError(
                f"The image could not be copied to store '{name}': {error}; {NOTHING_CLONED}."
            ) from None
        except StoreError as error:
            raise StepError(f"The image could not be copied to store '{name}': {error}; {NOTHING_CLONED}.") from None
    ctx.progress(total, total, force=True)


def _source_image(action: ImageAction) -> Image:
    image = Image.objects.filter(pk=action.input["image_id"], status=ImageStatus.ACTIVE).first()
    if image is None:
        raise StepError(
            f"The image {action.input['image_id']} was deleted before it could be copied; {NOTHING_CLONED}."
        )
    return image


def plan_targets(action: ImageAction, ctx: StepContext) -> dict[str, dict]:
    """The new image id and key in each target store, chosen on the first run and kept after."""
    targets = action.state.setdefault("targets", {})
    for name in action.input["stores"]:
        if name not in targets:
            image_id = str(uuid.uuid4())
            targets[name] = {"image_id": image_id, "key": f"images/{image_id}"}
    # Persisted before any byte moves, so a worker that dies mid-copy leaves keys clean-up can find.
    ctx.save_state()
    return targets


def copy_object(
    source_store: ImageStore, source_key: str, target_store: ImageStore, target_key: str, size: int, progress
) -> str:
    """Copy one object between stores; returns how ("server-side" or "streamed")."""
    if copies_server_side(target_store) and target_store.server_side_copy(source_store, source_key, target_key):
        progress(size, size)
        return "server-side"
    with source_store.open_read(source_key) as reader:
        target_store.put_stream(target_key, stream_filter()(reader), size=size, progress=progress)
    return "streamed"


def copies_server_side(target_store: ImageStore) -> bool:
    # S3 copies inside one endpoint without the bytes passing through here. A filesystem store's
    # "server-side copy" is a hard link: one inode, so a damaged block would damage source and
    # clone alike, while a clone is meant to be a second, independent copy.
    return target_store.kind == "s3"


def stream_filter():
    """The fault-injection point of the test settings (CLONE_STREAM_FILTER): wraps the source reader
    of a streamed copy, e.g. to change a byte in flight. The identity elsewhere: the product's
    settings have no such knob."""
    dotted_path = getattr(settings, "CLONE_STREAM_FILTER", "")
    if not dotted_path:
        return lambda reader: reader
    return import_string(dotted_path)


# -- verifying ---------------------------------------------------------------------------


def verify(action: ImageAction, ctx: StepContext) -> None:
    """Read every copy back and compare its size and sha512 with the source's (status `verifying`).

    A hash over the bytes the copy step sent would prove nothing about what the store holds (a
    store, a proxy on the way or a server-side copy can change them), so each copy is read again.
    """
    source, targets = action.state["source"], action.state["targets"]
    size, expected = source["size"], source["os_hash_value"]
    total = size * len(targets)
    ctx.progress(0, total, force=True)
    for index, (name, target) in enumerate(targets.items()):
        target_store = _store(ctx, name)

        def report(done, offset=index * size):
            ctx.progress(offset + done, total)

        try:
            found_size = target_store.size(target["key"])
            if found_size != size:
                raise StepError(
                    f"The copy in store '{name}' has {found_size} bytes where the source has {size}; "
                    f"{NOTHING_CLONED}. Try again; if it happens again, tell an operator."
                )
            got = sha512_of(target_store, target["key"], report)
        except StoreUnavailable as error:
            raise RetryableStepError(
                f"The copy in store '{name}' could not be read back: {error}; {NOTHING_CLONED}."
            ) from None
        except StoreError as error:
            raise StepError(f"The copy in store '{name}' could not be read back: {error}; {NOTHING_CLONED}.") from None
        if got != expected:
            raise StepError(_mismatch_message(ctx, name, source, got))
    ctx.progress(total, total, force=True)


def sha512_of(store: ImageStore, key: str, progress=None) -> str:
    done = 0
    with store.open_read(key) as reader, ParallelHasher(("sha512",)) as hasher:
        while chunk := reader.read(CHUNK_SIZE):
            hasher.update(chunk)
            done += len(chunk)
            if progress:
                progress(done)
        return hasher.hexdigests()["sha512"]


def _mismatch_message(ctx: StepContext, name: str, source: dict, got: str) -> str:
    """Whose bytes are wrong: the copy's, or (checked only now, on this rare path) the source's."""
    try:
        source_now = sha512_of(ctx.store(source["store"]), source["key"])
    except StoreError:
        source_now = source["os_hash_value"]  # unreadable now: say what is certain, the copy differs
    if source_now != source["os_hash_value"]:
        return (
            f"The source image's bytes in store '{source['store']}' no longer match its sha512 "
            f"(recorded {source['os_hash_value']}, read {source_now}); {NOTHING_CLONED}. "
            f"Tell an operator: the source image is damaged."
        )
    return (
        f"The copy in store '{name}' does not match the source: expected sha512 {source['os_hash_value']}, "
        f"got {got}; {NOTHING_CLONED}. Try again; if it happens again, tell an operator."
    )


# -- finishing and cleaning up -----------------------------------------------------------


def finish(action: ImageAction, ctx: StepContext) -> None:
    """Create the new Images (in the runner's success transaction) and list them in the result."""
    source = action.state["source"]
    shared = {
        key: source[key]
        for key in (
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
    }
    images = []
    for name, target in action.state["targets"].items():
        image = create_image(
            **shared,
            id=target["image_id"],
            name=action.input.get("name", source["name"]),
            properties={**source["properties"], "cloned_from": action.input["image_id"]},
            owner=action.owner,
            store=name,
            store_key=target["key"],
            created_by_action=action.pk,
        )
        images.append({"id": str(image.pk), "store": name, "region": target["region"]})
    action.result = {"image_refs": [image["id"] for image in images], "images": images}


def clean_up(action: ImageAction, ctx: StepContext) -> None:
    """Remove every copy no Image owns (after failure or cancel; on purge the Images own them)."""
    for name, target in action.state.get("targets", {}).items():
        if Image.objects.filter(store=name, store_key=target["key"]).exists():
            continue
        try:
            ctx.store(name).delete(target["key"])
        except StoreError:
            log.warning(
                "could not remove %s from store %s after action %s", target["key"], name, action.pk, exc_info=True
            )
