"""Export to a download link: the bytes, their checksums, ranges, who may fetch them, and expiry."""

import hashlib
from datetime import timedelta

from django.utils import timezone

from imageactions import runner
from imageactions.models import ImageAction
from imageactions.runner import scratch_dir
from imageactions.stores import default_store

from .conftest import download, run_export


def test_export_to_a_download_link_serves_the_image_bytes_with_their_checksums(alice, workers, raw_image):
    image, data = raw_image
    action = run_export(alice, workers, image.pk, {"type": "download"})

    assert action["status"] == "success", action["message"]
    result = action["result"]
    assert result["location"] == f"http://testserver/v2/image-actions/{action['id']}/file"
    assert result["size"] == len(data)
    assert result["disk_format"] == "raw"
    assert result["checksum"] == hashlib.md5(data).hexdigest()
    assert (result["os_hash_algo"], result["os_hash_value"]) == ("sha512", hashlib.sha512(data).hexdigest())
    assert result["expires_at"] == action["expires_at"]
    response = download(alice, action)
    assert response.status_code == 200
    assert response.body == data
    assert response["Content-Disposition"] == 'attachment; filename="web_server.raw"'
    assert not scratch_dir(action["id"]).exists()


def test_export_download_supports_byte_ranges_and_etags(alice, workers, raw_image):
    image, data = raw_image
    action = run_export(alice, workers, image.pk, {"type": "download"})

    partial = download(alice, action, HTTP_RANGE="bytes=1000-1999")
    assert partial.status_code == 206
    assert partial.body == data[1000:2000]
    assert partial["Content-Range"] == f"bytes 1000-1999/{len(data)}"
    unchanged = alice.get(action["result"]["location"], HTTP_IF_NONE_MATCH=partial["ETag"])
    assert unchanged.status_code == 304
    past_the_end = alice.get(action["result"]["location"], HTTP_RANGE=f"bytes={len(data)}-")
    assert past_the_end.status_code == 416


def test_export_download_link_is_404_for_another_project(alice, bob, workers, raw_image):
    image, _ = raw_image
    action = run_export(alice, workers, image.pk, {"type": "download"})

    response = bob.get(action["result"]["location"])
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_export_download_link_is_gone_after_expiry_and_its_bytes_are_removed_by_purge(alice, workers, raw_image):
    image, _ = raw_image
    action = run_export(alice, workers, image.pk, {"type": "download"})
    row = ImageAction.objects.get(pk=action["id"])
    key = row.state["written_key"]
    assert default_store().exists(key)

    ImageAction.objects.filter(pk=row.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    gone = alice.get(action["result"]["location"])
    assert gone.status_code == 410
    assert "expired" in gone.json()["detail"]

    runner.purge()
    assert alice.get(action["result"]["location"]).status_code == 404
    assert not default_store().exists(key)


def test_file_of_an_action_without_one_is_404(alice, workers, raw_image, put_server):
    image, _ = raw_image
    action = run_export(alice, workers, image.pk, {"type": "url", "url": put_server.url("/files/no-link.raw")})
    assert action["status"] == "success", action["message"]

    response = alice.get(f"/v2/image-actions/{action['id']}/file")
    assert response.status_code == 404
    assert "no file to download" in response.json()["detail"]


def test_export_never_changes_the_image(alice, workers, raw_image):
    image, data = raw_image
    before = alice.get(f"/v2/images/{image.pk}").json()
    run_export(alice, workers, image.pk, {"type": "download"}, disk_format="qcow2")

    assert alice.get(f"/v2/images/{image.pk}").json() == before
    with default_store().open_read(image.location.key) as stored:
        assert stored.read() == data


def test_export_of_an_image_whose_stored_bytes_changed_fails_and_leaves_no_export(alice, workers, raw_image):
    image, data = raw_image
    stored = default_store().local_path(image.location.key)
    stored.write_bytes(b"X" + data[1:])  # bit rot in the store
    action = run_export(alice, workers, image.pk, {"type": "download"})

    assert action["status"] == "failure"
    assert action["message"] == (
        f"The stored bytes of image {image.pk} do not match its recorded sha512 (they changed in the store); "
        f"the export was stopped. Tell an operator"
    )
    assert not default_store().exists(ImageAction.objects.get(pk=action["id"]).state["written_key"])


def test_export_download_stays_downloadable_after_the_image_is_deleted(alice, workers, raw_image):
    image, data = raw_image
    action = run_export(alice, workers, image.pk, {"type": "download"})
    assert alice.delete(f"/v2/images/{image.pk}").status_code == 204

    assert download(alice, action).body == data
