"""Fixtures for convert tests: two filesystem stores (and the real object store for S3), configured
alike for the test process and the workers, and raw images put straight into a store."""

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from imageactions.images import create_image
from imageactions.models import Image
from imageactions.stores import get_store
from tests.images.conftest import put_image

MiB = 1024 * 1024


def varied_bytes(size: int) -> bytes:
    """Bytes whose 64 KiB blocks differ, so a misplaced block changes every hash."""
    block = os.urandom(64 * 1024)
    blocks = (index.to_bytes(8, "big") + block[8:] for index in range(size // len(block) + 1))
    return b"".join(blocks)[:size]


class ConvertSetup:
    """The stores of one test, and workers that see the same stores and settings."""

    def __init__(self, settings, start_workers, stores: dict):
        self.settings, self.stores, self.start_workers = settings, stores, start_workers
        settings.IMAGE_STORES = stores
        settings.DEFAULT_IMAGE_STORE = next(iter(stores))

    def workers(self, **settings_env):
        env = {"IMAGEACTIONS_STORES": json.dumps(self.stores), "IMAGEACTIONS_DEFAULT_STORE": next(iter(self.stores))}
        return self.start_workers(env={**env, **settings_env})

    def raw_image(self, data: bytes, *, owner="project-a", store=None, **fields) -> Image:
        return put_image(owner, data, store=store, disk_format="raw", virtual_size=len(data), **fields)

    def large_raw_image(self, size: int, tmp_path: Path, *, owner="project-a") -> Image:
        """A raw image of `size` bytes written from a file, never held in memory whole."""
        path = tmp_path / "large.raw"
        with open(path, "wb") as out:
            for _ in range(size // MiB):
                out.write(os.urandom(MiB))
        store = get_store(self.settings.DEFAULT_IMAGE_STORE)
        image_id = uuid.uuid4()
        store.put_file(f"images/{image_id}", path, size=size)
        path.unlink(missing_ok=True)  # a store on the same file system took it by renaming
        return create_image(
            id=image_id,
            owner=owner,
            name="large",
            disk_format="raw",
            size=size,
            virtual_size=size,
            checksum="0" * 32,
            os_hash_value="0" * 128,
            locations={store.name: f"images/{image_id}"},
        )

    def keys(self, store: str) -> set[str]:
        """Every object key in a filesystem store."""
        root = Path(self.stores[store]["path"])
        return {str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()}


@pytest.fixture
def convert_setup(settings, start_workers, tmp_path):
    """Stores 'home' (the default) and 'away', each a directory of this test."""
    stores = {
        "home": {"type": "filesystem", "path": str(tmp_path / "home"), "region": "north"},
        "away": {"type": "filesystem", "path": str(tmp_path / "away"), "region": "south"},
    }
    return ConvertSetup(settings, start_workers, stores)


@pytest.fixture
def convert_setup_with_s3(settings, start_workers, tmp_path, object_store):
    """Store 'bucket' (S3 on the real object store, the default) and 'home' (a directory)."""
    stores = {
        "bucket": object_store.s3_store_config(prefix=f"convert-test-{uuid.uuid4().hex[:12]}", region="west"),
        "home": {"type": "filesystem", "path": str(tmp_path / "home"), "region": "north"},
    }
    return ConvertSetup(settings, start_workers, stores)


def start_convert(client, image_id, disk_format: str, *, path="/v2/image-actions", **fields) -> str:
    body = {"input": {"image_id": str(image_id), "disk_format": disk_format, **fields}}
    if path == "/v2/image-actions":
        body["action_type"] = "convert"
    response = client.post(path, body, format="json")
    assert response.status_code == 201, response.json()
    return response.json()["id"]


def qemu_img_check(path: Path, fmt: str) -> dict:
    """What qemu-img itself says of a file: its format and virtual size."""
    info = subprocess.run(
        ["qemu-img", "info", "--output=json", "-f", fmt, str(path)], check=True, capture_output=True, text=True
    )
    return json.loads(info.stdout)
