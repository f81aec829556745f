"""GET/PATCH/DELETE /v2/images: listing with filters and cursor pages, changes, deletion, owner isolation."""

import datetime
import uuid
from pathlib import Path

import pytest
from django.utils import timezone

from imageactions.models import Image, ImageAction
from imageactions.stores import default_store
from imageactions.validators import (
    MAX_IMAGE_PROPERTIES,
    MAX_IMAGE_TAGS,
    MAX_PROPERTY_KEY_LENGTH,
    MAX_PROPERTY_VALUE_LENGTH,
)

IMAGE_FIELDS = {
    "id",
    "name",
    "status",
    "disk_format",
    "container_format",
    "size",
    "virtual_size",
    "checksum",
    "os_hash_algo",
    "os_hash_value",
    "tags",
    "properties",
    "owner",
    "visibility",
    "min_disk",
    "min_ram",
    "created_at",
    "updated_at",
    "store",
    "file",
}


def names(response) -> list[str]:
    assert response.status_code == 200, response.json()
    return [image["name"] for image in response.json()["results"]]


# -- listing ---------------------------------------------------------------------------


def test_list_shows_the_projects_images_newest_first(alice, alice_colleague, bob, make_image):
    make_image("project-a", name="first")
    make_image("project-a", name="second")
    make_image("project-b", name="bobs")

    assert names(alice.get("/v2/images")) == ["second", "first"]
    assert names(alice_colleague.get("/v2/images")) == ["second", "first"]
    assert names(bob.get("/v2/images")) == ["bobs"]


def test_staff_list_every_projects_images_with_their_owner(alice, operator, make_image):
    make_image("project-a", name="alices")
    make_image("project-b", name="bobs")

    body = operator.get("/v2/images").json()

    assert {(image["name"], image["owner"]) for image in body["results"]} == {
        ("alices", "project-a"),
        ("bobs", "project-b"),
    }


def test_image_detail_has_every_documented_field(alice, make_image):
    image = make_image(
        "project-a",
        b"x" * 1000,
        name="ubuntu",
        tags=["b", "a"],
        properties={"os_distro": "ubuntu"},
        virtual_size=4096,
        min_disk=2,
        min_ram=512,
    )

    response = alice.get(f"/v2/images/{image.pk}")

    assert response.status_code == 200, response.json()
    body = response.json()
    assert set(body) == IMAGE_FIELDS
    assert body["id"] == str(image.pk)
    assert body["owner"] == "project-a"
    assert body["tags"] == ["a", "b"]
    assert body["properties"] == {"os_distro": "ubuntu"}
    assert (body["size"], body["virtual_size"], body["min_disk"], body["min_ram"]) == (1000, 4096, 2, 512)
    assert (body["checksum"], body["os_hash_value"]) == (image.checksum, image.os_hash_value)
    assert body["store"] == {"name": "local", "region": "local"}
    assert body["file"] == f"http://testserver/v2/images/{image.pk}/file"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("name=web", ["web"]),
        ("name=WEB", []),
        ("q=EB", ["web-2", "web"]),
        ("disk_format=qcow2", ["db"]),
        ("disk_format=qcow2,raw", ["web-2", "db", "web"]),
        ("visibility=shared", ["web-2"]),
        ("status=active", ["web-2", "db", "web"]),
        ("status=deleted", []),
    ],
)
def test_list_filters_by_name_status_format_and_visibility(alice, make_image, query, expected):
    make_image("project-a", name="web")
    make_image("project-a", name="db", disk_format="qcow2")
    make_image("project-a", name="web-2", visibility="shared")

    assert names(alice.get(f"/v2/images?{query}")) == expected


def test_tag_filter_keeps_images_that_have_every_given_tag(alice, make_image):
    make_image("project-a", name="both", tags=["linux", "gpu"])
    make_image("project-a", name="linux-only", tags=["linux"])
    make_image("project-a", name="untagged")

    assert names(alice.get("/v2/images?tag=linux")) == ["linux-only", "both"]
    assert names(alice.get("/v2/images?tag=linux&tag=gpu")) == ["both"]
    assert names(alice.get("/v2/images?tag=windows")) == []


def test_created_after_and_before_select_a_time_range(alice, make_image):
    now = timezone.now()
    for name, days_ago in (("old", 10), ("middle", 5), ("new", 0)):
        image = make_image("project-a", name=name)
        Image.objects.filter(pk=image.pk).update(created_at=now - datetime.timedelta(days=days_ago))
    after = (now - datetime.timedelta(days=7)).isoformat()
    before = (now - datetime.timedelta(days=1)).isoformat()

    assert names(alice.get("/v2/images", {"created_after": after})) == ["new", "middle"]
    assert names(alice.get("/v2/images", {"created_after": after, "created_before": before})) == ["middle"]


@pytest.mark.parametrize(
    ("query", "field"),
    [("visibility=public", "visibility"), ("status=gone", "status"), ("created_after=yesterday", "created_after")],
)
def test_invalid_filter_is_a_400_naming_the_filter(alice, query, field):
    response = alice.get(f"/v2/images?{query}")

    assert response.status_code == 400
    assert field in response.json()["errors"]


def test_list_pages_with_a_cursor_and_next_link(alice, make_image):
    for number in range(5):
        make_image("project-a", name=f"image-{number}")

    seen, url = [], "/v2/images?limit=2"
    while url:
        body = alice.get(url).json()
        assert len(body["results"]) <= 2
        seen += [image["name"] for image in body["results"]]
        url = body["next"]

    assert seen == [f"image-{number}" for number in reversed(range(5))]


# -- owner isolation -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [("get", "", None), ("patch", "", {"name": "mine now"}), ("delete", "", None), ("get", "/file", None)],
)
def test_another_projects_image_answers_exactly_like_a_missing_one(alice, bob, make_image, method, suffix, body):
    image = make_image("project-a", name="alices")

    missing_id = uuid.uuid4()
    foreign = getattr(bob, method)(f"/v2/images/{image.pk}{suffix}", body, format="json")
    missing = getattr(bob, method)(f"/v2/images/{missing_id}{suffix}", body, format="json")

    assert foreign.status_code == missing.status_code == 404
    assert foreign.json()["detail"].replace(str(image.pk), "ID") == missing.json()["detail"].replace(
        str(missing_id), "ID"
    )
    assert foreign.json()["code"] == missing.json()["code"] == "not_found"
    image.refresh_from_db()
    assert image.name == "alices"
    assert default_store().exists(image.store_key)


def test_malformed_image_id_is_a_json_404(alice):
    response = alice.get("/v2/images/not-a.uuid")

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_project_colleague_can_change_and_delete_the_image(alice, alice_colleague, make_image):
    image = make_image("project-a")

    assert alice_colleague.patch(f"/v2/images/{image.pk}", {"name": "renamed"}, format="json").status_code == 200
    assert alice_colleague.delete(f"/v2/images/{image.pk}").status_code == 204


# -- PATCH -----------------------------------------------------------------------------


def test_patch_changes_name_visibility_minimums_and_replaces_tags_and_properties(alice, make_image):
    image = make_image("project-a", name="old", tags=["keep", "drop"], properties={"a": "1", "b": "2"})
    before = alice.get(f"/v2/images/{image.pk}").json()
    change = {
        "name": "new",
        "tags": ["keep", "added", "added"],
        "properties": {"c": "3"},
        "visibility": "shared",
        "min_disk": 10,
        "min_ram": 2048,
    }

    response = alice.patch(f"/v2/images/{image.pk}", change, format="json")

    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["name"] == "new"
    assert body["tags"] == ["added", "keep"]
    assert body["properties"] == {"c": "3"}
    assert (body["visibility"], body["min_disk"], body["min_ram"]) == ("shared", 10, 2048)
    assert body["updated_at"] > before["updated_at"]
    assert alice.get(f"/v2/images/{image.pk}").json() == body


def test_patch_changes_only_the_fields_given(alice, make_image):
    image = make_image("project-a", name="kept", tags=["t"], properties={"p": "v"})

    body = alice.patch(f"/v2/images/{image.pk}", {"min_ram": 1}, format="json").json()

    assert (body["name"], body["tags"], body["properties"], body["min_ram"]) == ("kept", ["t"], {"p": "v"}, 1)


def test_patch_of_read_only_fields_is_a_400_naming_each_and_changes_nothing(alice, make_image):
    image = make_image("project-a", name="original")
    change = {
        "name": "sneaky",
        "size": 1,
        "checksum": "0" * 32,
        "owner": "project-b",
        "status": "deleted",
        "disk_format": "qcow2",
    }

    response = alice.patch(f"/v2/images/{image.pk}", change, format="json")

    assert response.status_code == 400
    errors = response.json()["errors"]
    assert set(errors) == {"size", "checksum", "owner", "status", "disk_format"}
    assert "cannot be changed" in errors["size"][0]
    image.refresh_from_db()
    assert (image.name, image.owner, image.size) == ("original", "project-a", len(b"disk image bytes"))


def test_patch_with_an_unknown_field_is_a_400_naming_it(alice, make_image):
    image = make_image("project-a")

    response = alice.patch(f"/v2/images/{image.pk}", {"min_ram_mb": 4}, format="json")

    assert response.status_code == 400
    assert "Unknown field 'min_ram_mb'" in response.json()["errors"]["min_ram_mb"][0]


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"properties": {f"k{n}": "v" for n in range(MAX_IMAGE_PROPERTIES + 1)}}, "properties", "at most 64"),
        ({"properties": {"k" * (MAX_PROPERTY_KEY_LENGTH + 1): "v"}}, "properties", "1 to 255 characters"),
        ({"properties": {"k": "v" * (MAX_PROPERTY_VALUE_LENGTH + 1)}}, "properties", "at most 4096"),
        ({"properties": {"k": 1}}, "properties", ""),
        ({"properties": ["k"]}, "properties", ""),
        ({"tags": "linux"}, "tags", ""),
        ({"tags": [""]}, "tags", ""),
        ({"tags": ["t" * 256]}, "tags", "at most 255"),
        ({"tags": [f"t{n}" for n in range(MAX_IMAGE_TAGS + 1)]}, "tags", "at most 50"),
        ({"visibility": "public"}, "visibility", "public"),
        ({"min_disk": -1}, "min_disk", ""),
        ({"min_ram": "lots"}, "min_ram", ""),
        ({"name": "n" * 256}, "name", "255"),
        ({"name": None}, "name", ""),
    ],
)
def test_patch_with_an_invalid_value_is_a_400_naming_the_field(alice, make_image, change, field, words):
    image = make_image("project-a", name="unchanged")

    response = alice.patch(f"/v2/images/{image.pk}", change, format="json")

    assert response.status_code == 400, response.json()
    errors = response.json()["errors"]
    assert list(errors) == [field] or all(name.startswith(field) for name in errors), errors
    assert words in " ".join(message for messages in errors.values() for message in messages)
    image.refresh_from_db()
    assert image.name == "unchanged"


def test_patch_with_a_body_that_is_not_an_object_is_a_400(alice, make_image):
    image = make_image("project-a")

    response = alice.patch(f"/v2/images/{image.pk}", ["name"], format="json")

    assert response.status_code == 400


def test_put_is_not_offered(alice, make_image):
    image = make_image("project-a")

    assert alice.put(f"/v2/images/{image.pk}", {"name": "x"}, format="json").status_code == 405


# -- DELETE ----------------------------------------------------------------------------


def test_delete_removes_the_image_and_its_bytes(alice, make_image):
    image = make_image("project-a")
    store = default_store()
    assert store.exists(image.store_key)

    response = alice.delete(f"/v2/images/{image.pk}")

    assert response.status_code == 204
    assert alice.get(f"/v2/images/{image.pk}").status_code == 404
    assert not Image.objects.filter(pk=image.pk).exists()
    assert not store.exists(image.store_key)


def test_delete_that_the_store_cannot_do_is_a_503_and_the_image_stays(alice, make_image, settings, tmp_path):
    image = make_image("project-a")
    # The store's directory is now a plain file, so removing anything under it fails (ENOTDIR).
    not_a_directory = tmp_path / "not-a-directory"
    not_a_directory.write_bytes(b"")
    settings.IMAGE_STORES = {"local": {"type": "filesystem", "path": str(not_a_directory), "region": "local"}}

    response = alice.delete(f"/v2/images/{image.pk}")

    assert response.status_code == 503
    assert response.json()["code"] == "store_unavailable"
    assert f"Image {image.pk} was not deleted" in response.json()["detail"]
    assert "local" in response.json()["detail"]
    assert Image.objects.filter(pk=image.pk).exists()


def test_delete_of_an_image_that_a_pending_action_reads_is_a_409(alice, make_image):
    image = make_image("project-a")
    # No worker runs here: the export stays pending, reading the image.
    export = {"image_id": str(image.pk), "destination": {"type": "download"}}
    action = alice.post("/v2/image-actions", {"action_type": "export", "input": export}, format="json").json()

    response = alice.delete(f"/v2/images/{image.pk}")

    assert response.status_code == 409
    assert action["id"] in response.json()["detail"]
    assert default_store().exists(image.store_key)

    ImageAction.objects.filter(pk=action["id"]).update(status="cancelled")  # ended: it reads nothing now
    assert alice.delete(f"/v2/images/{image.pk}").status_code == 204


def test_delete_keeps_bytes_that_another_image_still_uses(alice, make_image):
    image = make_image("project-a")
    twin = Image.objects.get(pk=image.pk)
    twin.pk, twin.created_by_action = uuid.uuid4(), uuid.uuid4()
    twin.save(force_insert=True)

    assert alice.delete(f"/v2/images/{image.pk}").status_code == 204

    assert default_store().exists(image.store_key)
    download = alice.get(f"/v2/images/{twin.pk}/file")
    assert b"".join(download.streaming_content) == b"disk image bytes"


def test_deleted_images_bytes_are_gone_from_the_filesystem(alice, make_image):
    image = make_image("project-a")
    path = Path(default_store().local_path(image.store_key))

    alice.delete(f"/v2/images/{image.pk}")

    assert not path.exists()
