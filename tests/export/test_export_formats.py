"""Export with conversion: every target format reads back in qemu-img as that format with the
image's virtual size, and a round trip through export and import keeps the raw bytes exactly."""

import hashlib

import pytest

from imageactions.formats.convert import qemu_img_info
from imageactions.models import Image
from tests.conftest import wait_for_action
from tests.images.conftest import put_image

from .conftest import download, run_export

QEMU_DRIVER = {"raw": "raw", "qcow2": "qcow2", "vmdk": "vmdk", "vpc": "vpc", "vhd": "vpc", "vhdx": "vhdx"}


@pytest.mark.parametrize("disk_format", sorted(QEMU_DRIVER))
def test_export_converted_to_each_format_reads_as_that_format_in_qemu_img(
    alice, workers, raw_image, disk_format, tmp_path
):
    image, data = raw_image
    action = run_export(alice, workers, image.pk, {"type": "download"}, disk_format=disk_format)

    assert action["status"] == "success", action["message"]
    assert action["result"]["disk_format"] == disk_format
    exported = tmp_path / f"exported.{disk_format}"
    exported.write_bytes(download(alice, action).body)
    assert action["result"]["size"] == exported.stat().st_size
    assert action["result"]["os_hash_value"] == hashlib.sha512(exported.read_bytes()).hexdigest()
    info = qemu_img_info(exported, disk_format)
    assert info["format"] == QEMU_DRIVER[disk_format]
    assert info["virtual-size"] == len(data)


def test_import_of_an_exported_qcow2_exported_back_as_raw_has_the_original_sha512(
    alice, workers, raw_image, put_server
):
    image, data = raw_image
    to_qcow2 = run_export(
        alice, workers, image.pk, {"type": "url", "url": put_server.url("/files/rt.qcow2")}, disk_format="qcow2"
    )
    assert to_qcow2["status"] == "success", to_qcow2["message"]
    qcow2_image = import_from(alice, workers, put_server.url("/files/rt.qcow2"), "round trip qcow2")
    assert qcow2_image.disk_format == "qcow2"

    to_raw = run_export(
        alice, workers, qcow2_image.pk, {"type": "url", "url": put_server.url("/files/rt.raw")}, disk_format="raw"
    )
    assert to_raw["status"] == "success", to_raw["message"]
    raw_again = import_from(alice, workers, put_server.url("/files/rt.raw"), "round trip raw")

    assert raw_again.os_hash_value == image.os_hash_value == hashlib.sha512(data).hexdigest()
    assert raw_again.size == len(data)


def test_export_of_a_qcow2_image_without_conversion_sends_its_bytes_unchanged(alice, workers, raw_image, tmp_path):
    image, _ = raw_image
    to_qcow2 = run_export(alice, workers, image.pk, {"type": "download"}, disk_format="qcow2")
    qcow2_bytes = download(alice, to_qcow2).body
    qcow2_image = put_image("project-a", qcow2_bytes, disk_format="qcow2", virtual_size=image.size)

    again = run_export(alice, workers, qcow2_image.pk, {"type": "download"}, disk_format="qcow2")
    assert again["result"]["os_hash_value"] == qcow2_image.os_hash_value
    assert download(alice, again).body == qcow2_bytes


def import_from(client, workers, url: str, name: str) -> Image:
    body = {"action_type": "import", "input": {"location": url, "image_properties": {"name": name}}}
    response = client.post("/v2/image-actions", body, format="json")
    assert response.status_code == 201, response.json()
    action = wait_for_action(response.json()["id"], workers=workers)
    assert action.status == "success", action.message
    return Image.objects.get(pk=action.result["image_ref"])
