"""Export to a URL (PUT to a loopback HTTP server) and to an operator-configured S3 store on the
real object store; what happens when a destination refuses or the export is cancelled."""

import hashlib
import json

import pytest
from django.conf import settings as django_settings

from imageactions.models import ImageAction
from imageactions.runner import scratch_dir
from tests.conftest import wait_for_action

from .conftest import run_export, start_export, wait_until

EXPORT_STORE = "exports-s3"


def test_export_to_a_url_puts_the_bytes_with_a_content_length(alice, workers, raw_image, put_server):
    image, data = raw_image
    url = put_server.url("/files/web.raw?X-Amz-Signature=secret")
    action = run_export(alice, workers, image.pk, {"type": "url", "url": url})

    assert action["status"] == "success", action["message"]
    assert put_server.files["web.raw"] == data
    request = next(r for r in put_server.requests if r["path"] == "/files/web.raw?X-Amz-Signature=secret")
    assert request["headers"]["Content-Length"] == str(len(data))
    assert "Transfer-Encoding" not in request["headers"]
    # The signature of a presigned URL is a secret: the result names the object without it.
    assert action["result"]["location"] == put_server.url("/files/web.raw")
    assert action["result"]["os_hash_value"] == hashlib.sha512(data).hexdigest()


def test_export_to_a_url_that_answers_403_fails_naming_the_answer_and_the_url(alice, workers, raw_image, put_server):
    image, _ = raw_image
    action = run_export(alice, workers, image.pk, {"type": "url", "url": put_server.url("/status/403?sig=x")})

    assert action["status"] == "failure"
    assert (
        action["message"] == f"The destination refused the upload: 403 Forbidden from '{put_server.url('/status/403')}'"
    )
    assert action["result"] == {}


def test_export_to_a_url_does_not_follow_a_redirect(alice, workers, raw_image, put_server):
    image, _ = raw_image
    action = run_export(alice, workers, image.pk, {"type": "url", "url": put_server.url("/redirect/moved.raw")})

    assert action["status"] == "failure"
    assert "307 Temporary Redirect (a redirect)" in action["message"]
    assert "redirects are not followed for uploads" in action["message"]
    assert "moved.raw" not in put_server.files


def test_export_to_a_url_where_nothing_listens_fails_saying_so(alice, workers, raw_image, closed_port):
    image, _ = raw_image
    action = run_export(alice, workers, image.pk, {"type": "url", "url": f"http://127.0.0.1:{closed_port}/x"})

    assert action["status"] == "failure"
    assert action["message"] == f"Could not upload the export. Connection refused by '127.0.0.1:{closed_port}'"


def test_cancel_during_upload_stops_the_put_and_leaves_nothing(alice, workers, raw_image, put_server):
    image, _ = raw_image
    action_id = start_export(
        alice, image.pk, {"type": "url", "url": put_server.url("/slow/cancelled.raw")}, disk_format="qcow2"
    )
    wait_until(lambda: any(r["path"] == "/slow/cancelled.raw" and r["received"] for r in put_server.requests))

    assert alice.post(f"/v2/image-actions/{action_id}/cancel").status_code == 202
    action = wait_for_action(action_id, workers=workers, timeout=20)
    assert action.status == "cancelled"
    request = next(r for r in put_server.requests if r["path"] == "/slow/cancelled.raw")
    wait_until(lambda: not request["complete"])
    assert "cancelled.raw" not in put_server.files
    assert not scratch_dir(action_id).exists()


# -- an operator-configured S3 store on the real object store ----------------------------------


@pytest.fixture
def export_store(object_store, settings, start_workers):
    """An extra S3 store "exports-s3" in the test process and in its workers."""
    stores = {**django_settings.IMAGE_STORES, EXPORT_STORE: object_store.s3_store_config(prefix="exported")}
    settings.IMAGE_STORES = stores
    workers = start_workers(env={"IMAGEACTIONS_STORES": json.dumps(stores)})
    return object_store, workers


def test_export_to_an_s3_store_writes_the_object_and_names_it(alice, raw_image, export_store):
    object_store, workers = export_store
    image, data = raw_image
    key = f"backups/{image.pk}.qcow2"
    action = run_export(
        alice, workers, image.pk, {"type": "store", "store": EXPORT_STORE, "key": key}, disk_format="qcow2"
    )

    assert action["status"] == "success", action["message"]
    assert action["result"]["location"] == f"s3://{object_store.bucket}/exported/{key}"
    stored = object_store.s3_client().get_object(Bucket=object_store.bucket, Key=f"exported/{key}")["Body"].read()
    assert len(stored) == action["result"]["size"]
    assert hashlib.sha512(stored).hexdigest() == action["result"]["os_hash_value"]
    assert stored[:4] == b"QFI\xfb"  # the qcow2 magic


def test_export_to_a_key_that_exists_fails_and_leaves_the_object_alone(alice, raw_image, export_store):
    object_store, workers = export_store
    image, _ = raw_image
    key = f"taken/{image.pk}"
    object_store.s3_client().put_object(Bucket=object_store.bucket, Key=f"exported/{key}", Body=b"someone's")
    action = run_export(alice, workers, image.pk, {"type": "store", "store": EXPORT_STORE, "key": key})

    assert action["status"] == "failure"
    assert action["message"] == (
        f"The image store '{EXPORT_STORE}' already has an object at '{key}'; choose another key, "
        f"or have it removed first"
    )
    body = object_store.s3_client().get_object(Bucket=object_store.bucket, Key=f"exported/{key}")["Body"].read()
    assert body == b"someone's"


def test_purge_of_a_store_export_keeps_the_exported_object(alice, raw_image, export_store):
    from imageactions import runner
    from imageactions.stores import get_store

    object_store, workers = export_store
    image, _ = raw_image
    key = f"kept/{image.pk}"
    action = run_export(alice, workers, image.pk, {"type": "store", "store": EXPORT_STORE, "key": key})
    assert action["status"] == "success", action["message"]

    ImageAction.objects.filter(pk=action["id"]).update(expires_at="2000-01-01T00:00:00Z")
    runner.purge()
    assert get_store(EXPORT_STORE).exists(key)
