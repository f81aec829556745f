"""An export's failures carry error codes: the destination's answer, the image and its bytes,
the conversion; each reached through a real failure with real workers."""

import pytest
from django.conf import settings

from imageactions.models import Image
from imageactions.stores import default_store, get_store
from tests.conftest import wait_for_action
from tests.images.conftest import put_image

from .conftest import patterned_bytes, run_export, start_export

KiB = 1024


@pytest.fixture
def small_image(transactional_db):
    data = patterned_bytes(256 * KiB, seed=5)
    return put_image("project-a", data, name="small", disk_format="raw", virtual_size=len(data)), data


def export_failure(client, workers, image_id, destination, **fields) -> dict:
    action = run_export(client, workers, image_id, destination, **fields)
    assert action["status"] == "failure", action
    return action


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/status/404", "destination_not_found"),
        ("/status/410", "destination_not_found"),
        ("/status/403", "destination_refused"),
        ("/redirect/moved.raw", "destination_refused"),
        ("/status/503", "destination_unreachable"),
    ],
)
def test_a_url_destinations_answer_has_its_code(alice, workers, small_image, put_server, path, code):
    image, _ = small_image
    action = export_failure(alice, workers, image.pk, {"type": "url", "url": put_server.url(path + "?sig=secret")})
    assert action["error_code"] == code, action["message"]
    assert action["error_details"]["url"] == put_server.url(path)  # without the signature
    assert action["error_details"]["status"] == int(path.split("/")[2]) if "status" in path else 307


def test_a_url_destination_where_nothing_listens_is_destination_unreachable(alice, workers, small_image, closed_port):
    image, _ = small_image
    action = export_failure(alice, workers, image.pk, {"type": "url", "url": f"http://127.0.0.1:{closed_port}/x"})
    assert action["error_code"] == "destination_unreachable"


def test_a_store_key_that_is_taken_is_destination_refused(alice, workers, small_image):
    image, _ = small_image
    store = default_store()
    store.put_stream("taken/x.raw", __import__("io").BytesIO(b"someone's"), size=9)
    action = export_failure(alice, workers, image.pk, {"type": "store", "store": store.name, "key": "taken/x.raw"})
    assert action["error_code"] == "destination_refused"
    assert action["error_details"] == {"store": store.name, "key": "taken/x.raw"}


def test_an_image_deleted_before_the_export_ran_is_image_not_found(alice, start_workers, small_image):
    image, _ = small_image
    action_id = start_export(alice, image.pk, {"type": "download"})
    Image.objects.filter(pk=image.pk).update(status="deleted")
    workers = start_workers()
    wait_for_action(action_id, workers=workers)
    action = alice.get(f"/v2/image-actions/{action_id}").json()
    assert action["error_code"] == "image_not_found", action["message"]
    assert action["error_details"] == {"image_id": str(image.pk)}


@pytest.mark.parametrize("disk_format", [None, "qcow2"])
def test_an_image_whose_bytes_are_gone_from_its_store_is_image_data_missing(alice, workers, small_image, disk_format):
    image, _ = small_image
    get_store(image.location.store).delete(image.location.key)
    fields = {"disk_format": disk_format} if disk_format else {}
    action = export_failure(alice, workers, image.pk, {"type": "download"}, **fields)
    assert action["error_code"] == "image_data_missing", action["message"]


def test_stored_bytes_that_changed_are_a_checksum_mismatch(alice, workers, small_image, put_server):
    image, data = small_image
    path = get_store(image.location.store).local_path(image.location.key)
    path.write_bytes(b"\xff" + data[1:])
    action = export_failure(alice, workers, image.pk, {"type": "url", "url": put_server.url("/files/changed.raw")})
    assert action["error_code"] == "checksum_mismatch"
    assert action["error_details"]["algo"] == "sha512"
    assert action["error_details"]["expected"] == image.os_hash_value


def test_a_conversion_past_qemu_imgs_time_limit_is_timed_out(alice, start_workers, small_image):
    image, _ = small_image
    workers = start_workers(env={"IMAGEACTIONS_QEMU_TIMEOUT": "0.001"})
    action = export_failure(alice, workers, image.pk, {"type": "download"}, disk_format="qcow2")
    assert action["error_code"] == "timed_out", action["message"]
    assert "took longer than the 0.001 s limit" in action["message"]
    assert action["error_details"] == {"seconds": 0.001}
    assert settings.QEMU_TIMEOUT > 1  # only the workers' limit was changed
