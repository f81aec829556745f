"""Exports with a staging store (IMAGEACTIONS_STAGING_STORE): the converted file is staged in the
store's bucket, so the upload step runs on a host that shares no scratch directory with the one
that converted, and nothing is left in the bucket when the export ends."""

import hashlib

import pytest

from imageactions.formats.convert import qemu_img_info
from imageactions.models import ImageAction
from imageactions.runner import scratch_dir, sweep_scratch
from tests.images.conftest import put_image
from tests.staging import pools_with_core_steps

from .conftest import MiB, download, patterned_bytes, run_export

pytestmark = pytest.mark.objectstore


def test_an_export_converted_on_one_host_is_uploaded_by_another_from_the_staging_store(
    alice, staging, shared_images, start_workers, settings, tmp_path
):
    _, core, core_dir = pools_with_core_steps(["export.upload"], start_workers, settings, tmp_path,
                                              staging.env(**shared_images))  # fmt: skip
    data = patterned_bytes(6 * MiB, seed=41) + bytes(4 * MiB)
    image = put_image("project-a", data, disk_format="raw", virtual_size=len(data))

    shown = run_export(alice, core, image.pk, {"type": "download"}, disk_format="qcow2", timeout=90)

    assert shown["status"] == "success", shown["message"]
    action = ImageAction.objects.get(pk=shown["id"])
    # The core host had no copy of the converted file: it downloaded the staged one.
    assert action.state["staging_cached"]["converted"].endswith(str(core_dir / "scratch"))
    exported = tmp_path / "exported.qcow2"
    exported.write_bytes(download(alice, shown).body)
    result = shown["result"]
    assert (result["disk_format"], result["size"]) == ("qcow2", exported.stat().st_size)
    assert result["size"] == action.state["converted_size"]
    assert result["checksum"] == hashlib.md5(exported.read_bytes()).hexdigest()
    assert result["os_hash_value"] == hashlib.sha512(exported.read_bytes()).hexdigest()
    info = qemu_img_info(exported, "qcow2")
    assert (info["format"], info["virtual-size"]) == ("qcow2", len(data))
    # The staged object and its upload are gone; each host's scratch copy too (the converting
    # host's, this test's data directory, at its sweep).
    assert action.state["staging_uploads"] == {}
    staging.assert_empty()
    assert not (core_dir / "scratch" / str(action.pk)).exists()
    assert sweep_scratch(throttled=False) == [str(action.pk)]
    assert not scratch_dir(action.pk).exists()
