"""Imports from s3:// and swift:// objects in a real Swift (with s3api) on 127.0.0.1."""

import io
import json
import re
import uuid

import pytest

from actions_import.sources import open_source, parse_location
from imageactions.models import ImageAction
from imageactions.pipeline import StepError
from imageactions.swift import SwiftClient
from tests.objectstore import object_store  # noqa: F401  (the session fixture)

from .conftest import assert_image_of, assert_left_nothing, random_image, run_import

pytestmark = pytest.mark.objectstore
MiB = 1024 * 1024


def s3_source(store) -> dict:
    return {
        "endpoint_url": store.s3_endpoint,
        "access_key": store.s3_access_key,
        "secret_key": store.s3_secret_key,
        "region_name": store.s3_region,
        "addressing_style": "path",
    }


@pytest.fixture
def objectstore_workers(object_store, start_workers_with, settings):  # noqa: F811
    """Workers, and the API, configured to read s3:// and swift:// from the test object store."""
    settings.S3_SOURCE = s3_source(object_store)
    settings.SWIFT_CREDENTIALS = object_store.swift_credentials()
    return start_workers_with(
        IMAGEACTIONS_S3_SOURCE=json.dumps(settings.S3_SOURCE),
        IMAGEACTIONS_SWIFT_CREDENTIALS=json.dumps(settings.SWIFT_CREDENTIALS),
    )


def test_s3_import_creates_the_image_from_the_object(alice, object_store, objectstore_workers):  # noqa: F811
    data = random_image(6 * MiB + 3, seed=20)
    key = f"sources/{uuid.uuid4()}.img"
    object_store.s3_client().put_object(Bucket=object_store.bucket, Key=key, Body=data)
    action = run_import(alice, objectstore_workers, {"location": f"s3://{object_store.bucket}/{key}"})
    assert_image_of(action, data)
    assert action.progress_total == len(data)


def test_s3_import_of_a_missing_key_fails_naming_key_and_bucket(alice, object_store, objectstore_workers):  # noqa: F811
    location = f"s3://{object_store.bucket}/no/such.img"
    action = run_import(alice, objectstore_workers, {"location": location})
    assert action.status == "failure"
    assert action.message == (
        f"Could not retrieve image. The object 'no/such.img' does not exist in bucket '{object_store.bucket}' ({location})"
    )
    assert_left_nothing(action)


def test_s3_import_from_a_missing_bucket_fails_naming_the_bucket(alice, objectstore_workers):
    action = run_import(alice, objectstore_workers, {"location": "s3://no-such-bucket-here/x.img"})
    assert action.status == "failure"
    assert action.message == (
        "Could not retrieve image. The bucket 'no-such-bucket-here' does not exist (s3://no-such-bucket-here/x.img)"
    )


def test_s3_import_with_wrong_credentials_fails_as_access_denied(alice, object_store, start_workers_with, settings):  # noqa: F811
    settings.S3_SOURCE = {**s3_source(object_store), "secret_key": "wrong"}
    workers = start_workers_with(IMAGEACTIONS_S3_SOURCE=json.dumps(settings.S3_SOURCE))
    location = f"s3://{object_store.bucket}/x.img"
    action = run_import(alice, workers, {"location": location})
    assert action.status == "failure"
    assert action.message.startswith(f"Could not retrieve image. Access to '{location}' was denied (")


def test_swift_import_creates_the_image_from_the_object(alice, object_store, objectstore_workers):  # noqa: F811
    data = random_image(3 * MiB + 11, seed=21)
    with SwiftClient(object_store.swift_auth_url, object_store.swift_user, object_store.swift_key) as swift:
        swift.authenticate()
        account = swift.storage_url.rsplit("/", 1)[1]
        swift.create_container("import-sources")
        swift.put_object("import-sources", "disk.img", io.BytesIO(data))
    location = f"swift://{object_store.hostport}/{account}/import-sources/disk.img"
    action = run_import(alice, objectstore_workers, {"location": location})
    assert_image_of(action, data)


def test_swift_import_of_a_missing_object_fails_with_not_found(alice, object_store, objectstore_workers):  # noqa: F811
    with SwiftClient(object_store.swift_auth_url, object_store.swift_user, object_store.swift_key) as swift:
        swift.authenticate()
        account = swift.storage_url.rsplit("/", 1)[1]
    location = f"swift://{object_store.hostport}/{account}/import-sources/missing.img"
    action = run_import(alice, objectstore_workers, {"location": location})
    assert action.status == "failure"
    assert action.message == (
        f"Could not retrieve image. Object 'import-sources/missing.img' was not found in Swift at "
        f"{object_store.hostport} ({location})"
    )
    assert_left_nothing(action)


# -- parallel ranged fetch -----------------------------------------------------------------

PARALLEL = {
    "FETCH_CONNECTIONS": 4,
    "FETCH_PART_SIZE": MiB,
    "FETCH_PARALLEL_THRESHOLD": 2 * MiB,
}


def put_source(object_store, kind: str, data: bytes) -> str:  # noqa: F811
    """Put `data` in the test object store; its location as an s3:// or swift:// URL."""
    if kind == "s3":
        key = f"sources/{uuid.uuid4()}.img"
        object_store.s3_client().put_object(Bucket=object_store.bucket, Key=key, Body=data)
        return f"s3://{object_store.bucket}/{key}"
    name = f"{uuid.uuid4()}.img"
    with SwiftClient(object_store.swift_auth_url, object_store.swift_user, object_store.swift_key) as swift:
        swift.authenticate()
        account = swift.storage_url.rsplit("/", 1)[1]
        swift.create_container("import-sources")
        swift.put_object("import-sources", name, io.BytesIO(data))
    return f"swift://{object_store.hostport}/{account}/import-sources/{name}"


@pytest.mark.parametrize("kind", ["s3", "swift"])
def test_a_large_object_is_fetched_over_several_connections_with_the_right_bytes(
    alice,
    object_store,  # noqa: F811
    start_workers_with,
    settings,
    kind,
):
    settings.S3_SOURCE = s3_source(object_store)
    settings.SWIFT_CREDENTIALS = object_store.swift_credentials()
    workers = start_workers_with(
        IMAGEACTIONS_S3_SOURCE=json.dumps(settings.S3_SOURCE),
        IMAGEACTIONS_SWIFT_CREDENTIALS=json.dumps(settings.SWIFT_CREDENTIALS),
        **{f"IMAGEACTIONS_{name}": str(value) for name, value in PARALLEL.items()},
    )
    data = random_image(7 * MiB + 5, seed=22)
    action = run_import(alice, workers, {"location": put_source(object_store, kind, data)})
    assert_image_of(action, data)
    facts = ImageAction.objects.get(pk=action.pk).state["fetch"]
    assert (facts["connections"], facts["parts"], facts["resumes"]) == (4, 8, 0)
    assert 0 < facts["buffer_peak_bytes"] <= facts["buffer_cap_bytes"] == 4 * MiB


@pytest.mark.parametrize("kind", ["s3", "swift"])
def test_an_object_overwritten_during_a_parallel_fetch_fails_instead_of_mixing_versions(
    object_store,  # noqa: F811
    settings,
    kind,
):
    settings.S3_SOURCE = s3_source(object_store)
    settings.SWIFT_CREDENTIALS = object_store.swift_credentials()
    for name, value in PARALLEL.items():
        setattr(settings, name, value)
    data = random_image(10 * MiB, seed=23)
    location = put_source(object_store, kind, data)
    opened = open_source(parse_location(location), parallel=True)
    try:
        assert opened.facts()["connections"] == 4
        # The parts past the first four are asked for only once the first is read: after this.
        if kind == "s3":
            bucket, key = location.removeprefix("s3://").split("/", 1)
            object_store.s3_client().put_object(Bucket=bucket, Key=key, Body=data[::-1])
        else:
            account, container, name = location.split("/", 3)[3].split("/", 2)
            with SwiftClient(object_store.swift_auth_url, object_store.swift_user, object_store.swift_key) as swift:
                swift.put_object(container, name, io.BytesIO(data[::-1]), account=account)
        with pytest.raises(StepError, match=re.escape(f"The image at '{location}' changed while it was downloaded")):
            opened.reader.read(-1)
    finally:
        opened.close()
