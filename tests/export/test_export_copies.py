"""Exports of unconverted images between filesystem stores, by real workers: from another file
system (tmpfs) the kernel copies the bytes and the copy is read back while it is written; from the
same store the export is a hard link, read back. Either way the hashes are the copy's."""

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from imageactions.models import ImageAction
from imageactions.stores import default_store, get_store
from tests.images.conftest import put_image

from .conftest import MiB, download, patterned_bytes, run_export

MEMORY_STORE = "memory"


@pytest.fixture
def memory_store(settings, start_workers, tmp_path):
    """A filesystem store "memory" on /dev/shm (a file system other than the default store's),
    in the test process and in its workers."""
    root = Path(tempfile.mkdtemp(prefix="export-test-", dir="/dev/shm")) if Path("/dev/shm").is_dir() else None
    if root is None or root.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on a file system of its own")
    stores = {**django_settings.IMAGE_STORES, MEMORY_STORE: {"type": "filesystem", "path": str(root)}}
    settings.IMAGE_STORES = stores
    yield start_workers(env={"IMAGEACTIONS_STORES": json.dumps(stores)})
    shutil.rmtree(root, ignore_errors=True)


def written_file(action: dict) -> Path:
    return default_store().local_path(ImageAction.objects.get(pk=action["id"]).state["written_key"])


def test_export_from_another_file_system_is_a_copy_of_its_own_with_the_copys_checksums(alice, memory_store):
    data = patterned_bytes(9 * MiB + 7)
    image = put_image("project-a", data, store=MEMORY_STORE)

    action = run_export(alice, memory_store, image.pk, {"type": "download"})

    assert action["status"] == "success", action["message"]
    assert action["result"]["checksum"] == hashlib.md5(data).hexdigest()
    assert action["result"]["os_hash_value"] == hashlib.sha512(data).hexdigest()
    assert action["progress"]["bytes_done"] == action["progress"]["bytes_total"] == len(data)
    exported = written_file(action)
    assert exported.read_bytes() == data
    assert exported.stat().st_nlink == 1  # not a link to the image's file, which is on tmpfs anyway
    assert download(alice, action).body == data


def test_export_from_another_file_system_of_damaged_bytes_fails_as_a_checksum_mismatch(alice, memory_store):
    data = patterned_bytes(4 * MiB)
    image = put_image("project-a", data, store=MEMORY_STORE)
    stored = get_store(MEMORY_STORE).local_path(image.location.key)
    stored.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # bit rot in the image's store

    action = run_export(alice, memory_store, image.pk, {"type": "download"})

    assert action["status"] == "failure"
    assert action["error_code"] == "checksum_mismatch"
    assert action["message"].startswith(f"The stored bytes of image {image.pk} do not match its recorded sha512")
    assert not written_file(action).exists()


def test_export_from_the_same_store_links_the_file_and_reads_it_back(alice, workers, transactional_db):
    data = patterned_bytes(3 * MiB)
    image = put_image("project-a", data)

    action = run_export(alice, workers, image.pk, {"type": "download"})

    assert action["status"] == "success", action["message"]
    assert action["result"]["os_hash_value"] == hashlib.sha512(data).hexdigest()
    assert written_file(action).stat().st_ino == default_store().local_path(image.location.key).stat().st_ino
