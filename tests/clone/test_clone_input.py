"""What POST /v2/image-actions accepts as a clone's input, and the 400s for what it refuses."""

import uuid

import pytest

from imageactions.models import ImageAction
from tests.images.conftest import put_image

from .conftest import clone


@pytest.fixture
def stores(settings, filesystem_stores):
    settings.IMAGE_STORES = filesystem_stores
    settings.DEFAULT_IMAGE_STORE = "home"


@pytest.fixture
def source(stores, db):
    return put_image("project-a", store="home")


def input_errors(response, status: int = 400) -> dict:
    assert response.status_code == status, response.json()
    return response.json()["errors"]


def test_clone_to_named_stores_is_accepted_and_waits(alice, source):
    response = clone(alice, image_id=str(source.pk), stores=["away", "far"], name="copy")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "waiting"
    assert body["input"] == {
        "image_id": str(source.pk),
        "stores": ["away", "far"],
        "name": "copy",
        "same_image": False,
        "all_stores_must_succeed": True,
    }
    assert body["image_properties"] == {"cloned_from": str(source.pk), "name": "copy"}


def test_clone_by_region_resolves_to_the_stores_of_that_region(alice, source):
    response = clone(alice, image_id=str(source.pk), regions=["south"])
    assert response.status_code == 201, response.json()
    assert response.json()["input"]["stores"] == ["away", "far"]


def test_clone_by_region_leaves_out_the_images_own_store(alice, stores):
    image = put_image("project-a", store="away")
    response = clone(alice, image_id=str(image.pk), regions=["south", "north"])
    assert response.status_code == 201, response.json()
    assert response.json()["input"]["stores"] == ["home", "far"]


def test_clone_to_an_unknown_store_is_refused_listing_the_known_stores(alice, source):
    errors = input_errors(clone(alice, image_id=str(source.pk), stores=["away", "moon"]), 422)
    assert errors["input.stores"] == [
        "There is no image store named 'moon'; the stores are: home, away, far (GET /v2/stores)."
    ]
    assert not ImageAction.objects.exists()


def test_clone_to_an_unknown_region_is_refused_listing_the_known_regions(alice, source):
    errors = input_errors(clone(alice, image_id=str(source.pk), regions=["east"]), 422)
    assert errors["input.regions"] == [
        "There is no region named 'east'; the regions are 'north', 'south' (GET /v2/stores)."
    ]


def test_clone_into_the_images_own_store_is_refused(alice, source):
    errors = input_errors(clone(alice, image_id=str(source.pk), stores=["home"]), 422)
    assert errors["input.stores"] == ["The image is already in store 'home'; name only other stores."]


def test_clone_to_a_region_holding_only_the_images_own_store_is_refused(alice, source):
    errors = input_errors(clone(alice, image_id=str(source.pk), regions=["north"]), 422)
    assert "Every store of the regions 'north' holds the image already ('home')" in errors["input.regions"][0]


@pytest.mark.parametrize("targets", [{}, {"stores": ["away"], "regions": ["south"]}])
def test_clone_needs_exactly_one_of_stores_or_regions(alice, source, targets):
    errors = input_errors(clone(alice, image_id=str(source.pk), **targets))
    assert errors["input.stores"] == [
        'Give the targets as exactly one of "stores" (store names) or "regions" (region names).'
    ]


def test_clone_with_an_empty_store_list_is_refused(alice, source):
    errors = input_errors(clone(alice, image_id=str(source.pk), stores=[]))
    assert "input.stores" in errors


def test_bob_cannot_clone_alices_image_and_learns_nothing_about_it(alice, bob, source):
    foreign = input_errors(clone(bob, image_id=str(source.pk), stores=["away"]), 422)["input.image_id"][0]
    missing_id = uuid.uuid4()
    missing = input_errors(clone(bob, image_id=str(missing_id), stores=["away"]), 422)["input.image_id"][0]
    assert foreign == missing.replace(str(missing_id), str(source.pk))
    assert foreign == f"There is no active image {source.pk} in your project; check the id with GET /v2/images."
    assert not ImageAction.objects.exists()


def test_a_deleted_image_cannot_be_cloned(alice, stores):
    image = put_image("project-a", store="home", status="deleted")
    errors = input_errors(clone(alice, image_id=str(image.pk), stores=["away"]), 422)
    assert "There is no active image" in errors["input.image_id"][0]


def test_clone_alias_accepts_the_input_alone(alice, source):
    response = alice.post(
        "/v2/image-clones", {"input": {"image_id": str(source.pk), "stores": ["away"]}}, format="json"
    )
    assert response.status_code == 201, response.json()
    assert response.json()["action_type"] == "clone"
