"""Convert actions through the API with real workers: a new verified Image in another disk format,
in the same or another store; refusals at create; cancel and failure leave nothing behind."""

import hashlib
import subprocess
import time

import pytest

from imageactions.models import Image
from imageactions.runner import scratch_dir
from tests.conftest import wait_for_action
from tests.convert.conftest import MiB, qemu_img_check, start_convert, varied_bytes


def downloaded(client, image_id, tmp_path, name="download") -> bytes:
    response = client.get(f"/v2/images/{image_id}/file")
    assert response.status_code == 200
    data = b"".join(response.streaming_content)
    (tmp_path / name).write_bytes(data)
    return data


def raw_bytes_of(path, fmt, tmp_path) -> bytes:
    """The guest's view of an image file: qemu-img converts it back to raw."""
    out = tmp_path / "back.raw"
    subprocess.run(["qemu-img", "convert", "-f", fmt, "-O", "raw", str(path), str(out)], check=True)
    return out.read_bytes()


@pytest.mark.parametrize("disk_format", ["qcow2", "vmdk", "vhdx"])
def test_a_raw_image_becomes_a_new_verified_image_in_the_asked_format(alice, convert_setup, tmp_path, disk_format):
    data = varied_bytes(8 * MiB + 4096)
    source = convert_setup.raw_image(data, name="web", tags=["base"], properties={"os_distro": "debian"})
    workers = convert_setup.workers()

    action_id = start_convert(alice, source.pk, disk_format)
    action = wait_for_action(action_id, workers=workers)
    assert action.status == "success", action.message

    shown = alice.get(f"/v2/image-actions/{action_id}").json()
    new_id = shown["result"]["image_ref"]
    image = alice.get(f"/v2/images/{new_id}").json()
    assert image["disk_format"] == disk_format
    assert image["name"] == "web"
    assert image["tags"] == ["base"]
    # Glance's shape: free-form properties at the top level.
    assert (image["os_distro"], image["converted_from"]) == ("debian", str(source.pk))
    assert image["virtual_size"] == len(data)
    stored = downloaded(alice, new_id, tmp_path)
    assert image["size"] == len(stored)
    assert image["checksum"] == hashlib.md5(stored).hexdigest()
    assert image["os_hash_value"] == hashlib.sha512(stored).hexdigest()
    assert qemu_img_check(tmp_path / "download", disk_format)["format"] == disk_format
    assert raw_bytes_of(tmp_path / "download", disk_format, tmp_path) == data
    # The original is untouched and still downloads its own bytes.
    assert downloaded(alice, source.pk, tmp_path, "original") == data
    assert convert_setup.keys("home") == {f"images/{source.pk}", f"images/{new_id}"}
    assert not scratch_dir(action_id).exists()


def test_a_conversion_back_to_raw_gives_the_original_bytes_in_another_store_via_the_alias(
    alice, convert_setup, tmp_path
):
    data = varied_bytes(4 * MiB)
    source = convert_setup.raw_image(data)
    workers = convert_setup.workers()
    to_qcow2 = wait_for_action(start_convert(alice, source.pk, "qcow2"), workers=workers)
    qcow2_id = to_qcow2.result["image_ref"]

    action_id = start_convert(alice, qcow2_id, "raw", path="/v2/image-conversions", store="away", name="back to raw")
    action = wait_for_action(action_id, workers=workers)
    assert action.status == "success", action.message
    raw = Image.objects.get(pk=action.result["image_ref"])
    assert (raw.location.store, raw.disk_format, raw.name) == ("away", "raw", "back to raw")
    assert raw.properties["converted_from"] == qcow2_id
    assert raw.os_hash_value == hashlib.sha512(data).hexdigest()
    assert downloaded(alice, raw.pk, tmp_path) == data
    assert convert_setup.keys("away") == {f"images/{raw.pk}"}


@pytest.mark.objectstore
def test_an_image_in_an_s3_store_is_converted_into_a_filesystem_store(alice, convert_setup_with_s3, tmp_path):
    data = varied_bytes(6 * MiB + 512)
    source = convert_setup_with_s3.raw_image(data)  # in 'bucket', the default store
    workers = convert_setup_with_s3.workers()
    action = wait_for_action(start_convert(alice, source.pk, "qcow2", store="home"), workers=workers)
    assert action.status == "success", action.message
    image = Image.objects.get(pk=action.result["image_ref"])
    assert image.location.store == "home"
    downloaded(alice, image.pk, tmp_path)
    assert raw_bytes_of(tmp_path / "download", "qcow2", tmp_path) == data
    assert not scratch_dir(action.pk).exists()  # the copy read from S3 went with the scratch space


def test_image_id_finds_the_conversions_that_read_or_made_an_image(alice, convert_setup):
    source = convert_setup.raw_image(varied_bytes(MiB))
    workers = convert_setup.workers()
    action = wait_for_action(start_convert(alice, source.pk, "qcow2"), workers=workers)
    made = action.result["image_ref"]
    for image_id in (source.pk, made):
        listed = alice.get("/v2/image-actions", {"image_id": str(image_id)}).json()["results"]
        assert [item["id"] for item in listed] == [str(action.pk)]


def test_a_conversion_into_the_images_own_format_is_refused(alice, convert_setup):
    source = convert_setup.raw_image(varied_bytes(MiB))
    response = alice.post(
        "/v2/image-conversions", {"input": {"image_id": str(source.pk), "disk_format": "raw"}}, format="json"
    )
    assert response.status_code == 422
    assert response.json()["errors"]["input.disk_format"] == [
        f"Image {source.pk} is already a raw image; choose another format."
    ]


def test_another_projects_image_cannot_be_converted_and_is_not_revealed(alice, bob, convert_setup):
    source = convert_setup.raw_image(varied_bytes(MiB))  # project-a's
    response = bob.post(
        "/v2/image-conversions", {"input": {"image_id": str(source.pk), "disk_format": "qcow2"}}, format="json"
    )
    assert response.status_code == 422
    assert response.json()["errors"]["input.image_id"] == [f"Image {source.pk} was not found in your project."]


def test_an_unknown_store_is_refused_naming_the_stores(alice, convert_setup):
    source = convert_setup.raw_image(varied_bytes(MiB))
    response = alice.post(
        "/v2/image-conversions",
        {"input": {"image_id": str(source.pk), "disk_format": "qcow2", "store": "elsewhere"}},
        format="json",
    )
    assert response.status_code == 422
    assert response.json()["errors"]["input.store"] == [
        "There is no image store named 'elsewhere'; the stores are: 'home', 'away'."
    ]


def test_cancel_during_converting_stops_qemu_img_and_leaves_nothing_behind(alice, convert_setup, tmp_path):
    source = convert_setup.large_raw_image(768 * MiB, tmp_path)
    workers = convert_setup.workers()
    action_id = start_convert(alice, source.pk, "qcow2")

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        shown = alice.get(f"/v2/image-actions/{action_id}").json()
        if shown["status"] == "converting" and shown["progress"]["bytes_done"] > 0:
            break
        assert shown["status"] in ("waiting", "converting"), shown
        time.sleep(0.02)
    else:
        raise AssertionError(f"the conversion never showed progress\n{workers.log_tail()}")
    assert alice.post(f"/v2/image-actions/{action_id}/cancel").status_code == 202

    action = wait_for_action(action_id, workers=workers)
    assert action.status == "cancelled"
    assert action.message == "The action was cancelled."
    assert not Image.objects.filter(properties__converted_from=str(source.pk)).exists()
    assert convert_setup.keys("home") == {f"images/{source.pk}"}
    assert not scratch_dir(action_id).exists()
    still_running = subprocess.run(["pgrep", "-f", str(scratch_dir(action_id))], capture_output=True)
    assert still_running.returncode == 1, still_running.stdout  # no qemu-img left writing


def test_a_conversion_that_qemu_img_cannot_do_fails_and_leaves_nothing_behind(alice, convert_setup):
    # Bytes recorded as a qcow2 image that are no qcow2 (a damaged store): qemu-img refuses them.
    source = convert_setup.raw_image(varied_bytes(2 * MiB))
    Image.objects.filter(pk=source.pk).update(disk_format="qcow2")
    workers = convert_setup.workers()
    action = wait_for_action(start_convert(alice, source.pk, "raw"), workers=workers)
    assert action.status == "failure"
    assert action.message.startswith(f"Image {source.pk} could not be converted to raw: ")
    assert "qcow2" in action.message
    assert action.error_code == "conversion_failed"
    assert Image.objects.count() == 1
    assert convert_setup.keys("home") == {f"images/{source.pk}"}
    assert not scratch_dir(action.pk).exists()


def test_an_image_deleted_before_its_conversion_ran_is_image_not_found(alice, convert_setup):
    source = convert_setup.raw_image(varied_bytes(MiB))
    action_id = start_convert(alice, source.pk, "qcow2")
    Image.objects.filter(pk=source.pk).update(status="deleted")
    action = wait_for_action(action_id, workers=convert_setup.workers())
    assert action.status == "failure"
    assert (action.error_code, action.error_details) == ("image_not_found", {"image_id": str(source.pk)})


def test_a_converted_image_the_verifiers_refuse_fails_like_an_import_and_leaves_nothing(alice, convert_setup):
    source = convert_setup.raw_image(varied_bytes(2 * MiB))
    # The operator accepts no vmdk images: what a conversion makes is judged like an upload.
    workers = convert_setup.workers(IMAGEACTIONS_IMAGE_ALLOWED_FORMATS="raw,qcow2")
    action = wait_for_action(start_convert(alice, source.pk, "vmdk"), workers=workers)
    assert action.status == "failure"
    assert "vmdk" in action.message
    assert Image.objects.count() == 1
    assert convert_setup.keys("home") == {f"images/{source.pk}"}
    assert not scratch_dir(action.pk).exists()
