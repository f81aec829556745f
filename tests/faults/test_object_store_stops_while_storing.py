"""The S3 image store goes away while an import is storing: the step is retried with backoff,
then the action fails saying the store could not be reached, and nothing is left half-visible."""

import json
import time

from imageactions.models import ActionEvent, Image, ImageAction
from imageactions.runner import scratch_dir
from tests.conftest import wait_for_action
from tests.import_.conftest import start_import

from .conftest import MiB, embedded_only, patterned_bytes, wait_until

pytestmark = embedded_only


def test_store_that_stops_mid_upload_is_retried_then_fails_clearly_leaving_no_image_and_no_object(
    alice, start_workers, faulty_server, private_swift
):
    swift = private_swift.start()
    store = swift.s3_store_config(multipart_chunksize=5 * MiB, multipart_threshold=5 * MiB, connect_timeout=2)
    workers = start_workers(
        env={
            "IMAGEACTIONS_STORES": json.dumps({"private": store}),
            "IMAGEACTIONS_DEFAULT_STORE": "private",
        }
    )
    url = faulty_server.add("to-store.img", patterned_bytes(256 * MiB, seed=3))
    action_id = start_import(alice, {"location": url})
    wait_until(
        lambda: ImageAction.objects.filter(pk=action_id, status="storing", progress_done__gt=0).exists(),
        timeout=60,
        what="the first stored bytes",
        interval=0.01,
    )
    private_swift.crash_proxy()
    crashed_at = time.monotonic()

    action = wait_for_action(action_id, workers=workers, timeout=60)
    assert action.status == "failure", action.message
    assert action.message.startswith(
        f"The image could not be stored: The image store 'private' could not be reached at {swift.s3_endpoint}"
    ), action.message
    outcomes = list(
        ActionEvent.objects.filter(action_id=action_id, step="store")
        .order_by("started_at")
        .values_list("outcome", flat=True)
    )
    assert outcomes == ["retry", "retry", "failure"]
    print(f"failed {time.monotonic() - crashed_at:.1f} s after the store stopped")

    assert not Image.objects.filter(created_by_action=action_id).exists()
    wait_until(lambda: not scratch_dir(action_id).exists(), timeout=10, what="scratch removal")
    private_swift.stop()
    swift = private_swift.start()  # the store comes back: nothing of the import is in it
    listing = swift.s3_client().list_objects_v2(Bucket=swift.bucket)
    assert listing["KeyCount"] == 0, [item["Key"] for item in listing.get("Contents", [])]
