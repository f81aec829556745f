"""What an export accepts when it is created, and how it fails when its image changed since."""

import uuid

import pytest

from imageactions.models import Image
from tests.conftest import wait_for_action
from tests.images.conftest import put_image

from .conftest import run_export, start_export


def create(client, input_data):
    return client.post("/v2/image-actions", {"action_type": "export", "input": input_data}, format="json")


@pytest.fixture
def image(db):
    return put_image("project-a", b"\0" * 4096, name="small")


def test_export_of_another_projects_image_is_refused_like_a_missing_one(alice, bob, image):
    foreign = create(bob, {"image_id": str(image.pk), "destination": {"type": "download"}})
    missing_id = uuid.uuid4()
    missing = create(bob, {"image_id": str(missing_id), "destination": {"type": "download"}})

    assert foreign.status_code == missing.status_code == 422
    assert foreign.json()["errors"] == {"input.image_id": [f"Image {image.pk} was not found in your project."]}
    assert missing.json()["errors"] == {"input.image_id": [f"Image {missing_id} was not found in your project."]}


def test_export_of_an_image_that_is_not_active_is_refused(alice, db):
    deleted = put_image("project-a", b"x" * 512, status="deleted")
    response = create(alice, {"image_id": str(deleted.pk), "destination": {"type": "download"}})

    assert response.status_code == 422
    assert response.json()["errors"] == {
        "input.image_id": [f"Image {deleted.pk} is not active (its status is 'deleted')."]
    }


def test_export_to_an_unknown_store_is_refused_listing_the_stores(alice, image):
    response = create(alice, {"image_id": str(image.pk), "destination": {"type": "store", "store": "nope", "key": "a"}})

    assert response.status_code == 422
    assert response.json()["errors"] == {
        "input.destination.store": ["There is no image store named 'nope'; the stores are: 'local'."]
    }


@pytest.mark.parametrize("key", ["../escape", "/absolute", "a/../b", "images/someone-elses-image", "exports/x"])
def test_export_to_a_store_key_outside_the_users_space_is_refused(alice, image, key):
    response = create(
        alice, {"image_id": str(image.pk), "destination": {"type": "store", "store": "local", "key": key}}
    )

    # A key that is no relative path breaks the schema's pattern (400); the service's own keys are a 422.
    assert response.status_code == (422 if key.startswith(("images/", "exports/")) else 400)
    assert list(response.json()["errors"]) == ["input.destination.key"]


@pytest.mark.parametrize(
    ("destination", "field", "words"),
    [
        ({"type": "url", "url": "http://169.254.169.254/latest"}, "url", "link-local/metadata addresses are refused"),
        ({"type": "url", "url": "ftp://example.com/x"}, "url", "the scheme 'ftp' is not allowed"),
        ({"type": "url"}, "url", "A url destination needs 'url'."),
        ({"type": "download", "url": "http://example.com/"}, "url", "A download destination has no 'url'; remove it."),
        ({"type": "s3"}, "type", '"s3" is not a valid choice.'),
    ],
)
def test_export_destination_is_checked_when_the_action_is_created(alice, image, destination, field, words):
    response = create(alice, {"image_id": str(image.pk), "destination": destination})

    # A URL of the schema's shape the policy refuses is a 422; a destination of the wrong shape a 400.
    assert response.status_code == (422 if destination.get("url") and destination["type"] == "url" else 400)
    assert words in response.json()["errors"][f"input.destination.{field}"][0]


def test_export_to_an_unknown_disk_format_is_refused(alice, image):
    response = create(alice, {"image_id": str(image.pk), "disk_format": "ova", "destination": {"type": "download"}})

    assert response.status_code == 400
    assert "input.disk_format" in response.json()["errors"]


def test_export_of_an_image_deleted_before_it_ran_fails_saying_it_is_not_found(alice, start_workers, raw_image):
    image, _ = raw_image
    action_id = start_export(alice, image.pk, {"type": "download"}, disk_format="qcow2")
    Image.objects.filter(pk=image.pk).delete()

    workers = start_workers()
    action = wait_for_action(action_id, workers=workers)
    assert action.status == "failure"
    assert action.message == f"Image {image.pk} was not found in your project"


def test_export_of_an_image_that_became_inactive_fails_saying_so(alice, start_workers, raw_image):
    image, _ = raw_image
    action_id = start_export(alice, image.pk, {"type": "download"})
    Image.objects.filter(pk=image.pk).update(status="deleted")

    workers = start_workers()
    action = wait_for_action(action_id, workers=workers)
    assert action.status == "failure"
    assert action.message == f"Image {image.pk} is not active (its status is 'deleted')"


def test_export_alias_creates_exports(alice, workers, raw_image):
    image, _ = raw_image
    response = alice.post(
        "/v2/image-exports", {"input": {"image_id": str(image.pk), "destination": {"type": "download"}}}, format="json"
    )
    assert response.status_code == 201, response.json()
    assert response.json()["action_type"] == "export"
    assert run_export(alice, workers, image.pk, {"type": "download"})["status"] == "success"
