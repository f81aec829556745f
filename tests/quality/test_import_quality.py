"""Imports through the API and real workers: real disk images are accepted with the format and
virtual size they have; the hostile corpus fails with a message naming the problem, leaving nothing."""

import hashlib
import threading
import time

import pytest

from imageactions.formats.convert import qemu_img_info
from imageactions.models import Image
from imageactions.runner import scratch_dir
from tests.conftest import wait_for_action
from tests.import_.conftest import start_import

from .conftest import COMPRESSORS, MiB, assert_refused_cleanly, gzip_bomb, import_file

REAL_IMAGES = [
    "v2.qcow2",
    "v3.qcow2",
    "monolithic-sparse.vmdk",
    "stream-optimized.vmdk",
    "fixed.vhd",
    "dynamic.vhd",
    "disk.vhdx",
    "dynamic.vdi",
    "disk.raw",
    "gpt.raw",
    "plain.iso",
]


def assert_imported_as(action, data: bytes, disk_format: str, virtual_size: int) -> Image:
    assert action.status == "success", action.message
    image = Image.objects.get(pk=action.result["image_ref"])
    assert (image.disk_format, image.virtual_size) == (disk_format, virtual_size)
    assert image.size == len(data)
    assert image.checksum == hashlib.md5(data).hexdigest()
    assert image.os_hash_value == hashlib.sha512(data).hexdigest()
    assert action.state["inspection"]["format"] == disk_format
    return image


def downloaded(client, image: Image, path):
    response = client.get(f"/v2/images/{image.pk}/file")
    assert response.status_code == 200
    with open(path, "wb") as out:
        out.writelines(response.streaming_content)
    return path


# -- real images ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", REAL_IMAGES)
def test_real_image_imports_with_its_detected_format_and_virtual_size(name, alice, workers, image_server, real_images):
    real = real_images[name]
    action = import_file(alice, image_server, workers, real.path)
    assert_imported_as(action, real.path.read_bytes(), real.format, real.virtual_size)


def test_image_declared_as_vhd_imports_as_vpc(alice, workers, image_server, real_images):
    real = real_images["dynamic.vhd"]
    action = import_file(alice, image_server, workers, real.path, disk_format="vhd")
    assert_imported_as(action, real.path.read_bytes(), "vpc", real.virtual_size)


@pytest.mark.parametrize("compression", sorted(COMPRESSORS))
def test_compressed_qcow2_is_decompressed_during_the_fetch_and_stored_as_qcow2(
    compression, alice, workers, image_server, data_qcow2
):
    image_bytes = data_qcow2[0].read_bytes()
    compressed = COMPRESSORS[compression](image_bytes)
    checksum = {"algo": "sha256", "value": hashlib.sha256(compressed).hexdigest()}
    action = import_file(alice, image_server, workers, compressed, name=f"disk.qcow2.{compression}", checksum=checksum)
    assert_imported_as(action, image_bytes, "qcow2", 64 * MiB)
    assert action.state["compression"] == compression
    assert action.state["received_size"] == len(compressed)


def test_checksum_of_a_compressed_import_is_compared_with_the_bytes_received(alice, workers, image_server, data_qcow2):
    image_bytes = data_qcow2[0].read_bytes()
    compressed = COMPRESSORS["gzip"](image_bytes)
    of_decompressed = hashlib.sha256(image_bytes).hexdigest()
    action = import_file(
        alice, image_server, workers, compressed, checksum={"algo": "sha256", "value": of_decompressed}
    )
    assert_refused_cleanly(
        action,
        f"Checksum mismatch of the gzip-compressed data received: expected sha256 {of_decompressed}, "
        f"got {hashlib.sha256(compressed).hexdigest()}",
    )


def test_uploaded_compressed_image_is_decompressed_too(alice, workers, data_qcow2):
    image_bytes = data_qcow2[0].read_bytes()
    action_id = start_import(alice, {"source": "upload"}, disk_format="qcow2")
    response = alice.generic(
        "PUT",
        f"/v2/image-actions/{action_id}/data",
        COMPRESSORS["zstd"](image_bytes),
        content_type="application/octet-stream",
    )
    assert response.status_code == 200, response.json()
    action = wait_for_action(action_id, workers=workers)
    assert_imported_as(action, image_bytes, "qcow2", 64 * MiB)


# -- conversion ----------------------------------------------------------------------------


def test_qcow2_is_stored_raw_when_the_service_stores_raw(alice, start_workers, image_server, data_qcow2, tmp_path):
    workers = start_workers(env={"IMAGEACTIONS_IMAGE_STORE_FORMAT": "raw"})
    qcow2, source_raw = data_qcow2
    action = import_file(alice, image_server, workers, qcow2, disk_format="qcow2")
    assert action.status == "success", action.message
    image = Image.objects.get(pk=action.result["image_ref"])
    assert (image.disk_format, image.virtual_size, image.size) == ("raw", 64 * MiB, 64 * MiB)
    path = downloaded(alice, image, tmp_path / "stored.raw")
    info = qemu_img_info(path, "raw")
    assert (info["format"], info["virtual-size"]) == ("raw", 64 * MiB)
    stored = path.read_bytes()
    assert stored == source_raw.read_bytes()
    assert image.os_hash_value == hashlib.sha512(stored).hexdigest()
    assert image.checksum == hashlib.md5(stored).hexdigest()
    assert action.state["converted_from"] == "qcow2"


def test_vmdk_is_stored_as_qcow2_when_the_service_stores_qcow2(
    alice, start_workers, image_server, real_images, tmp_path
):
    workers = start_workers(env={"IMAGEACTIONS_IMAGE_STORE_FORMAT": "qcow2"})
    vmdk = real_images["stream-optimized.vmdk"]
    action = import_file(alice, image_server, workers, vmdk.path)
    assert action.status == "success", action.message
    image = Image.objects.get(pk=action.result["image_ref"])
    assert (image.disk_format, image.virtual_size) == ("qcow2", vmdk.virtual_size)
    path = downloaded(alice, image, tmp_path / "stored.qcow2")
    info = qemu_img_info(path, "qcow2")
    assert (info["format"], info["virtual-size"]) == ("qcow2", vmdk.virtual_size)
    stored = path.read_bytes()
    assert image.size == len(stored)
    assert image.os_hash_value == hashlib.sha512(stored).hexdigest()


def test_iso_is_kept_as_it_is_when_the_service_stores_raw(alice, start_workers, image_server, real_images):
    workers = start_workers(env={"IMAGEACTIONS_IMAGE_STORE_FORMAT": "raw"})
    iso = real_images["plain.iso"]
    action = import_file(alice, image_server, workers, iso.path)
    assert_imported_as(action, iso.path.read_bytes(), "iso", iso.virtual_size)
    assert "converted_from" not in action.state


# -- the hostile corpus --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "declared", "fragments"),
    [
        ("backing-passwd.qcow2", None, ["backing file", "/etc/passwd"]),
        ("data-file.qcow2", None, ["external data file"]),
        ("descriptor-shadow.vmdk", None, ["/etc/shadow"]),
        ("second-extent.vmdk", None, ["/etc/shadow"]),
        ("truncated-90.qcow2", None, ["header is truncated", "upload the whole image"]),
        ("truncated-16k.vmdk", None, ["truncated"]),
        ("raw-with-qcow2-header.raw", "raw", ["declared as raw but its data is a qcow2 image"]),
    ],
)
def test_hostile_image_fails_naming_the_problem_and_leaves_nothing(
    name, declared, fragments, alice, workers, image_server, hostile_images
):
    properties = {"disk_format": declared} if declared else {}
    action = import_file(alice, image_server, workers, hostile_images[name], **properties)
    assert_refused_cleanly(action, *fragments)


def test_qcow2_declared_as_raw_fails_naming_both_formats(alice, workers, image_server, real_images):
    action = import_file(alice, image_server, workers, real_images["v3.qcow2"].path, disk_format="raw")
    assert_refused_cleanly(action, "declared as raw but its data is a qcow2 image")


def test_mp4_video_fails_saying_it_is_a_video(alice, workers, image_server, non_images):
    action = import_file(alice, image_server, workers, non_images["video.mp4"])
    assert_refused_cleanly(action, "looks like an MP4 video")


def test_uploaded_mp4_video_fails_saying_it_is_a_video(alice, workers, non_images):
    action_id = start_import(alice, {"source": "upload"})
    alice.generic(
        "PUT",
        f"/v2/image-actions/{action_id}/data",
        non_images["video.mp4"].read_bytes(),
        content_type="application/octet-stream",
    )
    assert_refused_cleanly(wait_for_action(action_id, workers=workers), "looks like an MP4 video")


def test_gzip_bomb_fails_early_without_staging_more_than_the_cap(alice, start_workers, image_server):
    cap = 8 * MiB
    # Written densely, so that the staged file grows as the bomb expands: sparse, its zeros
    # would not be written at all and the watcher would have nothing to measure.
    workers = start_workers(env={"IMAGEACTIONS_DECOMPRESS_MAX_OUTPUT": str(cap), "IMAGEACTIONS_SPARSE_IMAGES": "false"})
    bomb = gzip_bomb(1024 * MiB)  # 1 GiB of zeros in about 1 MiB
    url = image_server.add("bomb.img.gz", bomb)
    action_id = start_import(alice, {"location": url})
    largest_staged, started = 0, time.monotonic()
    staged = scratch_dir(action_id) / "staged"
    ended = threading.Event()

    def watch_staged_size():
        nonlocal largest_staged
        while not ended.is_set():
            try:
                largest_staged = max(largest_staged, staged.stat().st_size)
            except FileNotFoundError:
                pass
            time.sleep(0.002)

    watcher = threading.Thread(target=watch_staged_size)
    watcher.start()
    try:
        action = wait_for_action(action_id, workers=workers, timeout=60)
    finally:
        ended.set()
        watcher.join()
    assert_refused_cleanly(action, "The gzip data expands beyond the 8 MiB limit on decompressed images")
    assert 0 < largest_staged <= cap, "the watcher must have seen the staged file, or the bound proves nothing"
    assert time.monotonic() - started < 15
    assert action.progress_done < len(bomb) // 10  # it stopped reading the source early


def test_data_expanding_beyond_the_ratio_cap_is_refused_as_a_bomb(alice, start_workers, image_server):
    workers = start_workers(env={"IMAGEACTIONS_DECOMPRESS_MAX_RATIO": "100"})
    action = import_file(alice, image_server, workers, gzip_bomb(64 * MiB))
    assert_refused_cleanly(action, "The gzip data expands more than 100x; refused as a possible decompression bomb")


def test_compressed_image_is_refused_when_decompression_is_off(alice, start_workers, image_server, data_qcow2):
    workers = start_workers(env={"IMAGEACTIONS_DECOMPRESS_IMPORTS": "0"})
    action = import_file(alice, image_server, workers, COMPRESSORS["gzip"](data_qcow2[0].read_bytes()))
    assert_refused_cleanly(action, "The data is gzip-compressed; decompress it before uploading")


def test_virtual_size_beyond_the_cap_fails_naming_both_sizes(alice, start_workers, image_server, real_images):
    workers = start_workers(env={"IMAGEACTIONS_IMAGE_MAX_VIRTUAL_SIZE": str(32 * MiB)})
    action = import_file(alice, image_server, workers, real_images["v3.qcow2"].path)
    assert_refused_cleanly(action, "64 MiB (67108864 bytes)", "32 MiB (33554432 bytes)")


def test_format_outside_the_allowed_formats_fails_listing_the_accepted_ones(
    alice, start_workers, image_server, real_images
):
    workers = start_workers(env={"IMAGEACTIONS_IMAGE_ALLOWED_FORMATS": "qcow2,raw"})
    action = import_file(alice, image_server, workers, real_images["dynamic.vdi"].path)
    assert_refused_cleanly(action, "Images in vdi format are not accepted here; accepted formats: qcow2, raw")
