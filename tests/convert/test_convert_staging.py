"""Conversions with a staging store (IMAGEACTIONS_STAGING_STORE): the converted file is staged in
the store's bucket in the pass that hashes it, so the store step runs on a host that shares no
scratch directory with the one that converted: it copies the staged object inside the object
store when the target store is a bucket there, else streams it; nothing is left in the bucket."""

import hashlib
import json
import subprocess
import uuid

import pytest

from imageactions.models import Image
from imageactions.runner import scratch_dir, sweep_scratch
from imageactions.stores import get_store
from tests.conftest import wait_for_action
from tests.images.conftest import put_image
from tests.staging import pools_with_core_steps

from .conftest import MiB, qemu_img_check, start_convert, varied_bytes

pytestmark = pytest.mark.objectstore


@pytest.mark.parametrize(("target", "stored_by"), [("local", "streamed from staging"), ("bucket", "server-side")])
def test_a_conversion_stored_by_another_host_takes_the_converted_file_from_the_staging_store(
    alice, staging, shared_images, start_workers, settings, tmp_path, target, stored_by
):
    # Besides the shared directory, a bucket on the staging store's endpoint.
    bucket = staging.server.s3_store_config(prefix=f"convert-staged-{uuid.uuid4().hex[:8]}")
    stores = {**settings.IMAGE_STORES, "bucket": bucket}
    settings.IMAGE_STORES = stores
    env = staging.env(**{**shared_images, "IMAGEACTIONS_STORES": json.dumps(stores)})
    _, core, core_dir = pools_with_core_steps(["convert.store"], start_workers, settings, tmp_path, env)
    data = varied_bytes(5 * MiB + 4096) + bytes(3 * MiB)
    source = put_image("project-a", data, disk_format="raw", virtual_size=len(data))

    action = wait_for_action(start_convert(alice, source.pk, "qcow2", store=target), workers=core, timeout=90)

    assert action.status == "success", action.message
    assert action.state["stored_by"] == {target: stored_by}  # the core host had no copy
    image = Image.objects.get(pk=action.result["image_ref"])
    stored = tmp_path / "stored.qcow2"
    with get_store(image.location.store).open_read(image.location.key) as reader:
        stored.write_bytes(reader.read())
    assert (image.location.store, image.disk_format, image.size) == (target, "qcow2", stored.stat().st_size)
    assert image.checksum == hashlib.md5(stored.read_bytes()).hexdigest()
    assert image.os_hash_value == hashlib.sha512(stored.read_bytes()).hexdigest()
    assert qemu_img_check(stored, "qcow2")["virtual-size"] == len(data)
    back = tmp_path / "back.raw"
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(stored), str(back)], check=True)
    assert back.read_bytes() == data
    # The staged object and its upload are gone; each host's scratch copy too (the converting
    # host's, this test's data directory, at its sweep).
    assert action.state["staging_uploads"] == {}
    staging.assert_empty()
    assert not (core_dir / "scratch" / str(action.pk)).exists()
    assert sweep_scratch(throttled=False) == [str(action.pk)]
    assert not scratch_dir(action.pk).exists()
    if target == "bucket":
        get_store("bucket").delete(image.location.key)
