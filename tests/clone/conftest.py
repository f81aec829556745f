"""Fixtures for clone tests: named stores in two regions (filesystem, and S3 on the real object
store), configured alike for the test process and the workers, and helpers to inspect stores."""

import json
import os
import uuid

import pytest

from imageactions.models import Image
from tests.conftest import wait_for_action
from tests.images.conftest import put_image

MiB = 1024 * 1024


def image_bytes(size: int = 3 * MiB + 17) -> bytes:
    """Bytes that are not all alike, of a size that is no multiple of any chunk size."""
    return os.urandom(64 * 1024) * (size // (64 * 1024)) + os.urandom(size % (64 * 1024))


class CloneSetup:
    """The stores of one test, and workers that see the same stores."""

    def __init__(self, settings, start_workers, stores: dict):
        self.stores, self.start_workers = stores, start_workers
        settings.IMAGE_STORES = stores
        settings.DEFAULT_IMAGE_STORE = next(iter(stores))

    def workers(self, **settings_env):
        env = {
            "IMAGEACTIONS_STORES": json.dumps(self.stores),
            "IMAGEACTIONS_DEFAULT_STORE": next(iter(self.stores)),
            **settings_env,
        }
        return self.start_workers(env=env)

    def image(self, owner="project-a", *, store=None, data=None, **fields):
        return put_image(owner, image_bytes() if data is None else data, store=store, **fields)


@pytest.fixture
def filesystem_stores(tmp_path):
    """Three filesystem stores: 'home' in region north, 'away' and 'far' in region south."""
    return {
        "home": {"type": "filesystem", "path": str(tmp_path / "home"), "region": "north"},
        "away": {"type": "filesystem", "path": str(tmp_path / "away"), "region": "south"},
        "far": {"type": "filesystem", "path": str(tmp_path / "far"), "region": "south"},
    }


@pytest.fixture
def clone_setup(settings, start_workers, filesystem_stores):
    return CloneSetup(settings, start_workers, filesystem_stores)


@pytest.fixture
def s3_prefix():
    return f"clone-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def clone_setup_with_s3(settings, start_workers, filesystem_stores, object_store, s3_prefix):
    """The filesystem stores plus 'bucket' (S3, region west) and 'bucket2' (the same endpoint and
    account, another prefix: a server-side copy can serve it)."""
    stores = {
        **filesystem_stores,
        "bucket": object_store.s3_store_config(prefix=f"{s3_prefix}/a", region="west"),
        "bucket2": object_store.s3_store_config(prefix=f"{s3_prefix}/b", region="west"),
    }
    return CloneSetup(settings, start_workers, stores)


def files_under(path) -> list[str]:
    """Every file below a filesystem store's root, partial writes (dot files) included."""
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()) if path.exists() else []


def s3_keys(object_store, prefix: str) -> list[str]:
    listing = object_store.s3_client().list_objects_v2(Bucket=object_store.bucket, Prefix=prefix)
    return sorted(item["Key"] for item in listing.get("Contents", []))


def s3_uploads(object_store, prefix: str) -> list[str]:
    """Multipart uploads begun and not completed or aborted under `prefix`."""
    listing = object_store.s3_client().list_multipart_uploads(Bucket=object_store.bucket, Prefix=prefix)
    return sorted(upload["Key"] for upload in listing.get("Uploads", []))


def clone(client, **input_data):
    return client.post("/v2/image-actions", {"action_type": "clone", "input": input_data}, format="json")


def run_clone(client, workers, timeout=60, **input_data):
    response = clone(client, **input_data)
    assert response.status_code == 201, response.json()
    action = wait_for_action(response.json()["id"], timeout=timeout, workers=workers)
    return action, client.get(f"/v2/image-actions/{action.pk}").json()


def images_made_by(action_id) -> list[Image]:
    return list(Image.objects.filter(created_by_action=action_id))
