"""A staging store for tests (IMAGEACTIONS_STAGING_STORE): a bucket of the test Swift of the test's
own, an image store every process sees at one path, and worker pools split so that some steps run
on "another host" (a data directory of its own: no copy of what the first host staged)."""

import json
import uuid
from dataclasses import dataclass

import pytest


@dataclass
class Staging:
    """A staging bucket of the test's own, and the settings that point every process at it."""

    server: object
    bucket: str
    config: dict

    def env(self, **extra) -> dict:
        return {"IMAGEACTIONS_STAGING_STORE": json.dumps(self.config), **extra}

    def objects(self) -> list[str]:
        listed = self.server.s3_client().list_objects_v2(Bucket=self.bucket)
        return [item["Key"] for item in listed.get("Contents", [])]

    def uploads(self) -> list[dict]:
        return self.server.s3_client().list_multipart_uploads(Bucket=self.bucket).get("Uploads", [])

    def assert_empty(self):
        assert (self.objects(), self.uploads()) == ([], [])


@pytest.fixture
def staging(object_store, settings):
    bucket = f"staging-{uuid.uuid4().hex[:12]}"
    object_store.create_bucket(bucket)
    config = object_store.s3_store_config(bucket=bucket)
    del config["region"]
    settings.STAGING_STORE = config
    return Staging(object_store, bucket, config)


@pytest.fixture
def shared_images(settings, tmp_path) -> dict:
    """A filesystem image store at one path for every process, whatever its data directory."""
    stores = {"local": {"type": "filesystem", "path": str(tmp_path / "images"), "region": "local"}}
    settings.IMAGE_STORES, settings.DEFAULT_IMAGE_STORE = stores, "local"
    return {"IMAGEACTIONS_STORES": json.dumps(stores), "IMAGEACTIONS_DEFAULT_STORE": "local"}


def pools_with_core_steps(core_steps: list[str], start_workers, settings, tmp_path, env: dict):
    """A default pool, and a "core" pool with a data directory of its own (another host) that
    runs `core_steps` ("<action type>.<step>")."""
    step_pools = dict.fromkeys(core_steps, "core")
    settings.STEP_POOLS, settings.WORKER_POOLS = step_pools, ["core", "default"]
    env = {**env, "IMAGEACTIONS_STEP_POOLS": json.dumps(step_pools)}
    core_dir = tmp_path / "core-host"
    edge = start_workers(workers=1, env=env)
    core = start_workers(pool="core", workers=1, env={**env, "IMAGEACTIONS_DATA_DIR": str(core_dir)})
    return edge, core, core_dir
