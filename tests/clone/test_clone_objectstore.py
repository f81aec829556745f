"""Clones to and from S3 stores on the real object store (Swift's s3api on 127.0.0.1), by real workers."""

import hashlib
import time
from urllib.parse import urlsplit

from imageactions.models import ImageAction
from imageactions.stores import get_store
from tests.conftest import wait_for_action
from tests.http_servers import CountingRelay

from .conftest import (
    CloneSetup,
    MiB,
    clone,
    files_under,
    image_bytes,
    images_made_by,
    run_clone,
    s3_keys,
    s3_uploads,
)


def stored_sha512(store: str, key: str) -> str:
    digest = hashlib.sha512()
    with get_store(store).open_read(key) as reader:
        while chunk := reader.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


def test_clone_from_filesystem_to_s3_stores_the_same_bytes_in_the_bucket(
    alice, clone_setup_with_s3, object_store, s3_prefix
):
    workers = clone_setup_with_s3.workers()
    # Above the 8 MiB multipart threshold, so the copy is a multipart upload.
    data = image_bytes(9 * MiB + 5)
    source = clone_setup_with_s3.image(store="home", data=data, tags=["x"])

    action, body = run_clone(alice, workers, image_id=str(source.pk), stores=["bucket"])

    assert body["status"] == "success", body["message"]
    [clone_image] = images_made_by(action.pk)
    assert body["result"]["images"] == [{"id": str(clone_image.pk), "store": "bucket", "region": "west"}]
    assert s3_keys(object_store, s3_prefix) == [f"{s3_prefix}/a/images/{clone_image.pk}"]
    assert stored_sha512("bucket", clone_image.location.key) == hashlib.sha512(data).hexdigest()
    assert clone_image.checksum == hashlib.md5(data).hexdigest()
    download = alice.get(f"/v2/images/{clone_image.pk}/file")
    assert b"".join(download.streaming_content) == data


def test_clone_from_s3_to_filesystem_makes_an_equal_image_on_disk(alice, clone_setup_with_s3, tmp_path):
    workers = clone_setup_with_s3.workers()
    data = image_bytes()
    source = clone_setup_with_s3.image(store="bucket", data=data)

    action, body = run_clone(alice, workers, image_id=str(source.pk), stores=["away"])

    assert body["status"] == "success", body["message"]
    [clone_image] = images_made_by(action.pk)
    assert (tmp_path / "away" / clone_image.location.key).read_bytes() == data
    assert clone_image.properties["cloned_from"] == str(source.pk)


def test_clone_between_s3_stores_of_one_endpoint_copies_server_side_and_reads_the_copy_back(
    alice, clone_setup_with_s3, object_store, s3_prefix
):
    workers = clone_setup_with_s3.workers()
    data = image_bytes(9 * MiB)
    source = clone_setup_with_s3.image(store="bucket", data=data)

    action, body = run_clone(alice, workers, image_id=str(source.pk), stores=["bucket2"])

    assert body["status"] == "success", body["message"]
    assert action.state["targets"]["bucket2"]["copied_by"] == "server-side"
    assert action.events.filter(step="verify", outcome="success").exists()
    [clone_image] = images_made_by(action.pk)
    assert stored_sha512("bucket2", clone_image.location.key) == hashlib.sha512(data).hexdigest()


def test_a_server_side_clone_sends_no_byte_of_the_image_from_the_worker(
    alice, settings, start_workers, filesystem_stores, object_store, s3_prefix
):
    endpoint = urlsplit(object_store.s3_endpoint)
    with CountingRelay(endpoint.hostname, endpoint.port).relaying() as relay:
        # Both S3 stores reach the object store through the relay, which counts what crosses it.
        stores = {
            **filesystem_stores,
            "bucket": object_store.s3_store_config(prefix=f"{s3_prefix}/a", region="west", endpoint_url=relay.url),
            "bucket2": object_store.s3_store_config(prefix=f"{s3_prefix}/b", region="west", endpoint_url=relay.url),
        }
        setup = CloneSetup(settings, start_workers, stores)
        workers = setup.workers()
        size = 16 * MiB
        source = setup.image(store="home", data=image_bytes(size))

        # Streamed, from a filesystem store: the bytes go out through the relay.
        sent = relay.sent
        streamed, body = run_clone(alice, workers, image_id=str(source.pk), stores=["bucket"])
        assert body["status"] == "success", body["message"]
        assert streamed.state["targets"]["bucket"]["copied_by"] == "streamed"
        assert relay.sent - sent >= size
        [in_bucket] = images_made_by(streamed.pk)

        # Server-side, between the two S3 stores: requests go out, only the read-back comes in.
        sent, received = relay.sent, relay.received
        action, body = run_clone(alice, workers, image_id=str(in_bucket.pk), stores=["bucket2"])

        assert body["status"] == "success", body["message"]
        assert action.state["targets"]["bucket2"]["copied_by"] == "server-side"
        assert relay.sent - sent < MiB
        assert size <= relay.received - received < 2 * size
        [clone_image] = images_made_by(action.pk)
        assert stored_sha512("bucket2", clone_image.location.key) == source.os_hash_value


def test_clone_to_several_stores_at_once_makes_one_image_in_each(alice, clone_setup_with_s3, tmp_path):
    workers = clone_setup_with_s3.workers()
    data = image_bytes()
    source = clone_setup_with_s3.image(store="home", data=data)

    action, body = run_clone(alice, workers, image_id=str(source.pk), stores=["away", "bucket", "far"])

    assert body["status"] == "success", body["message"]
    clones = {image.location.store: image for image in images_made_by(action.pk)}
    assert [entry["store"] for entry in body["result"]["images"]] == ["away", "bucket", "far"]
    assert set(body["result"]["image_refs"]) == {str(image.pk) for image in clones.values()}
    for image in clones.values():
        assert stored_sha512(image.location.store, image.location.key) == source.os_hash_value


def test_a_corrupted_copy_to_s3_fails_verification_and_leaves_no_object(
    alice, clone_setup_with_s3, object_store, s3_prefix
):
    workers = clone_setup_with_s3.workers(IMAGEACTIONS_CLONE_STREAM_FILTER="tests.clone.faults.flip_one_byte")
    source = clone_setup_with_s3.image(store="home")

    action, body = run_clone(alice, workers, image_id=str(source.pk), stores=["bucket"])

    assert body["status"] == "failure"
    assert body["message"].startswith(
        f"The copy in store 'bucket' does not match the source: expected sha512 {source.os_hash_value}, got "
    )
    assert s3_keys(object_store, s3_prefix) == []
    assert images_made_by(action.pk) == []


def test_cancel_during_a_copy_to_s3_leaves_no_object_and_no_upload(
    alice, clone_setup_with_s3, object_store, s3_prefix, tmp_path
):
    workers = clone_setup_with_s3.workers(IMAGEACTIONS_CLONE_STREAM_FILTER="tests.clone.faults.slow_reader")
    source = clone_setup_with_s3.image(store="home", data=image_bytes(40 * MiB))
    action_id = clone(alice, image_id=str(source.pk), stores=["far", "bucket"]).json()["id"]
    deadline = time.monotonic() + 60
    # "far" is copied first (40 slow 1 MiB reads), then "bucket" in 8 MiB parts: cancel mid-bucket.
    while ImageAction.objects.get(pk=action_id).progress_done < 40 * MiB + 8 * MiB:
        assert time.monotonic() < deadline, ImageAction.objects.get(pk=action_id).progress
        time.sleep(0.05)

    assert alice.post(f"/v2/image-actions/{action_id}/cancel").status_code in (200, 202)

    action = wait_for_action(action_id, workers=workers, timeout=60)
    assert action.status == "cancelled"
    assert s3_keys(object_store, s3_prefix) == []
    assert s3_uploads(object_store, s3_prefix) == []
    assert files_under(tmp_path / "far") == []
    assert images_made_by(action_id) == []
