"""/v2/images as the Glance Image API v2: records, listing with Glance's filters, sorting and
markers, JSON-patch, tags, (de)activation, deletion, owner isolation, and Glance's error shape."""

import datetime
import json
import uuid
from pathlib import Path

import pytest
from django.utils import timezone

from imageactions.models import Image, ImageAction
from imageactions.stores import default_store
from imageactions.validators import MAX_IMAGE_PROPERTIES, MAX_IMAGE_TAGS

PATCH = "application/openstack-images-v2.1-json-patch"
GLANCE_FIELDS = {
    "id",
    "name",
    "status",
    "visibility",
    "protected",
    "os_hidden",
    "checksum",
    "os_hash_algo",
    "os_hash_value",
    "owner",
    "size",
    "virtual_size",
    "min_ram",
    "min_disk",
    "container_format",
    "disk_format",
    "created_at",
    "updated_at",
    "tags",
    "self",
    "file",
    "schema",
}


def names(response) -> list[str]:
    assert response.status_code == 200, response.json()
    return [image["name"] for image in response.json()["images"]]


def error_of(response, code: int) -> str:
    """The message of an error answer in Glance's shape, which glanceclient parses."""
    assert response.status_code == code, response.content
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code
    return body["error"]["message"]


def patch(client, image_id, *operations, content_type=PATCH):
    body = json.dumps(list(operations))
    return client.generic("PATCH", f"/v2/images/{image_id}", data=body, content_type=content_type)


# -- creating records ---------------------------------------------------------------------


def test_create_makes_a_queued_record_with_custom_properties(alice):
    response = alice.post(
        "/v2/images",
        {
            "name": "web",
            "disk_format": "qcow2",
            "container_format": "bare",
            "tags": ["a", "a", "b"],
            "os_distro": "debian",
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert response["Location"].endswith(f"/v2/images/{body['id']}")
    assert response["OpenStack-image-import-methods"] == "copy-image,glance-direct,web-download"
    assert set(body) == GLANCE_FIELDS | {"os_distro"}
    assert (body["status"], body["visibility"], body["owner"]) == ("queued", "shared", "project-a")
    assert (body["size"], body["checksum"], body["os_hash_algo"], body["os_hash_value"]) == (None, None, None, None)
    assert body["tags"] == ["a", "b"] and body["os_distro"] == "debian"
    assert body["self"] == f"/v2/images/{body['id']}" and body["schema"] == "/v2/schemas/image"
    assert body["created_at"].endswith("Z") and "." not in body["created_at"]
    assert alice.get(f"/v2/images/{body['id']}/file").status_code == 204  # no data yet


def test_create_honours_a_given_id_once(alice):
    image_id = str(uuid.uuid4())
    assert alice.post("/v2/images", {"id": image_id}, format="json").json()["id"] == image_id
    assert "exists already" in error_of(alice.post("/v2/images", {"id": image_id}, format="json"), 409)


@pytest.mark.parametrize("field", ["status", "size", "checksum", "os_hash_value", "owner", "self", "stores"])
def test_create_refuses_read_only_attributes_with_403(alice, field):
    assert error_of(alice.post("/v2/images", {field: "x"}, format="json"), 403) == f"Attribute '{field}' is read-only."


def test_create_refuses_reserved_and_badly_typed_properties(alice):
    assert "reserved" in error_of(alice.post("/v2/images", {"os_glance_x": "1"}, format="json"), 403)
    assert "must be a string" in error_of(alice.post("/v2/images", {"cores": 4}, format="json"), 400)
    assert "'visibility'" in error_of(alice.post("/v2/images", {"visibility": "everyone"}, format="json"), 400)
    assert "'disk_format'" in error_of(alice.post("/v2/images", {"disk_format": "mp4"}, format="json"), 400)


# -- reading and listing ------------------------------------------------------------------


def test_list_shows_own_and_public_images_newest_first_never_another_projects(alice, bob, make_image):
    make_image("project-a", name="old")
    make_image("project-b", name="bobs private")
    make_image("project-b", name="bobs public", visibility="public")
    make_image("project-b", name="bobs community", visibility="community")
    make_image("project-a", name="new")
    body = alice.get("/v2/images").json()
    assert [image["name"] for image in body["images"]] == ["new", "bobs public", "old"]
    assert body["first"] == "/v2/images" and body["schema"] == "/v2/schemas/images" and "next" not in body
    assert names(alice.get("/v2/images", {"visibility": "community"})) == ["bobs community"]


def test_staff_list_every_projects_images(operator, make_image):
    make_image("project-a", name="a")
    make_image("project-b", name="b")
    assert sorted(names(operator.get("/v2/images"))) == ["a", "b"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"name": "web"}, ["web"]),
        ({"disk_format": "qcow2"}, ["web"]),
        ({"status": "deactivated"}, ["db"]),
        ({"visibility": "private"}, ["db"]),
        ({"tag": ["gold", "lts"]}, ["web"]),
        ({"protected": "true"}, ["web"]),
        ({"size_min": "5"}, ["web"]),
        ({"size_max": "4"}, ["db"]),
        ({"os_distro": "debian"}, ["web"]),
        ({"os_hidden": "true"}, ["hidden"]),
    ],
)
def test_list_filters_as_glance_does(alice, make_image, query, expected):
    make_image("project-a", b"12345678", name="web", disk_format="qcow2", visibility="shared", protected=True,
               properties={"os_distro": "debian"}, tags=["gold", "lts"])  # fmt: skip
    make_image("project-a", b"123", name="db", status="deactivated", tags=["gold"])
    make_image("project-a", name="hidden", os_hidden=True, visibility="shared")
    assert names(alice.get("/v2/images", query)) == expected


def test_created_at_filters_with_an_operator(alice, make_image):
    old = make_image("project-a", name="old")
    Image.objects.filter(pk=old.pk).update(created_at=timezone.now() - datetime.timedelta(days=3))
    make_image("project-a", name="new")
    since = (timezone.now() - datetime.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert names(alice.get("/v2/images", {"created_at": f"gte:{since}"})) == ["new"]
    assert names(alice.get("/v2/images", {"created_at": f"lt:{since}"})) == ["old"]


@pytest.mark.parametrize(
    "query",
    [{"limit": "many"}, {"sort_key": "owner"}, {"sort_dir": "up"}, {"marker": str(uuid.uuid4())}, {"size_min": "x"},
     {"protected": "maybe"}, {"visibility": "everyone"}, {"created_at": "yesterday"}],
)  # fmt: skip
def test_a_bad_list_parameter_is_a_400_saying_what_to_send(alice, query):
    assert error_of(alice.get("/v2/images", query), 400)


def test_sorting_by_keys_and_directions(alice, make_image):
    for name, size in (("b", 3), ("a", 5), ("c", 1)):
        make_image("project-a", b"x" * size, name=name)
    assert names(alice.get("/v2/images", {"sort_key": "name", "sort_dir": "asc"})) == ["a", "b", "c"]
    assert names(alice.get("/v2/images", {"sort": "size:desc"})) == ["a", "b", "c"]
    assert names(alice.get("/v2/images", {"sort": "size:asc,name"})) == ["c", "b", "a"]


def test_pages_follow_next_with_the_marker_and_keep_limit_literally(alice, make_image):
    for index in range(5):
        make_image("project-a", name=f"image-{index}")
    seen, url = [], "/v2/images?sort_key=name&sort_dir=asc&limit=2"
    while url:
        body = alice.get(url).json()
        seen += [image["name"] for image in body["images"]]
        url = body.get("next")
        if url:
            assert url.startswith("/v2/images?") and "limit=2" in url and "marker=" in url
    assert seen == [f"image-{index}" for index in range(5)]


def test_another_projects_private_image_answers_exactly_like_a_missing_one(alice, make_image):
    image, missing = make_image("project-b"), uuid.uuid4()
    for suffix in ("", "/file", "/tasks"):
        assert error_of(alice.get(f"/v2/images/{image.pk}{suffix}"), 404) == f"No image found with ID {image.pk}"
        assert error_of(alice.get(f"/v2/images/{missing}{suffix}"), 404) == f"No image found with ID {missing}"
    assert error_of(alice.delete(f"/v2/images/{image.pk}"), 404) == f"No image found with ID {image.pk}"
    assert error_of(alice.get("/v2/images/not-a-uuid"), 404) == "No image found with ID not-a-uuid"


def test_a_public_image_of_another_project_is_readable_but_not_changeable(alice, make_image):
    image = make_image("project-b", name="shared base", visibility="public")
    assert alice.get(f"/v2/images/{image.pk}").json()["name"] == "shared base"
    assert "another project" in error_of(patch(alice, image.pk, {"op": "replace", "path": "/name", "value": "x"}), 403)
    assert "another project" in error_of(alice.delete(f"/v2/images/{image.pk}"), 403)


# -- changing -------------------------------------------------------------------------------


def test_json_patch_replaces_adds_and_removes(alice, make_image):
    image = make_image("project-a", name="web", properties={"os_distro": "debian", "old": "x"}, tags=["a"])
    response = patch(
        alice,
        image.pk,
        {"op": "replace", "path": "/name", "value": "web 2"},
        {"op": "add", "path": "/min_ram", "value": 512},  # add on an attribute replaces it, as in Glance
        {"op": "replace", "path": "/visibility", "value": "community"},
        {"op": "replace", "path": "/tags", "value": ["b", "c"]},
        {"op": "add", "path": "/hw_disk_bus", "value": "virtio"},
        {"op": "replace", "path": "/os_distro", "value": "ubuntu"},
        {"op": "remove", "path": "/old"},
        {"op": "replace", "path": "/protected", "value": True},
    )
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["name"], body["min_ram"], body["visibility"], body["protected"]) == ("web 2", 512, "community", True)
    assert body["tags"] == ["b", "c"]
    assert (body["hw_disk_bus"], body["os_distro"], "old" in body) == ("virtio", "ubuntu", False)


def test_only_admins_make_an_image_public_as_in_glance(alice, operator, make_image):
    image = make_image("project-a")
    refused = patch(alice, image.pk, {"op": "replace", "path": "/visibility", "value": "public"})
    assert "public ('publicize') needs one of the roles: admin" in error_of(refused, 403)
    body = {"name": "p", "disk_format": "raw", "container_format": "bare", "visibility": "public"}
    assert alice.post("/v2/images", body, format="json").status_code == 403
    upload = {
        "action_type": "import",
        "input": {"source": "upload", "image_properties": {"name": "p", "visibility": "public"}},
    }
    assert alice.post("/v2/image-actions", upload, format="json").status_code == 422  # forbidden by the roles
    assert patch(operator, image.pk, {"op": "replace", "path": "/visibility", "value": "public"}).status_code == 200
    assert patch(alice, image.pk, {"op": "replace", "path": "/name", "value": "still public"}).status_code == 200


def test_json_patch_needs_its_media_type(alice, make_image):
    image = make_image("project-a")
    response = patch(alice, image.pk, {"op": "replace", "path": "/name", "value": "x"}, content_type="application/json")
    assert error_of(response, 415)


@pytest.mark.parametrize(
    ("operation", "code", "words"),
    [
        ({"op": "replace", "path": "/size", "value": 1}, 403, "read-only"),
        ({"op": "replace", "path": "/os_glance_failed_import", "value": ""}, 403, "reserved"),
        ({"op": "remove", "path": "/name"}, 403, "cannot be removed"),
        ({"op": "replace", "path": "/disk_format", "value": "raw"}, 403, "queued"),
        ({"op": "replace", "path": "/missing", "value": "x"}, 409, "does not exist"),
        ({"op": "remove", "path": "/missing"}, 409, "does not exist"),
        ({"op": "replace", "path": "/min_disk", "value": -1}, 400, "min_disk"),
        ({"op": "replace", "path": "/name", "value": "x" * 256}, 400, "255"),
        ({"op": "replace", "path": "/tags", "value": [f"t{i}" for i in range(MAX_IMAGE_TAGS + 1)]}, 400, "tags"),
        ({"op": "add", "path": "/cores", "value": 4}, 400, "must be a string"),
        ({"op": "move", "path": "/name"}, 400, "add, replace or remove"),
        ({"op": "add", "path": "/a/b", "value": "x"}, 400, "one attribute"),
    ],
)
def test_a_refused_patch_says_why_and_changes_nothing(alice, make_image, operation, code, words):
    image = make_image("project-a", name="web", disk_format="raw")
    before = alice.get(f"/v2/images/{image.pk}").json()
    assert words in error_of(patch(alice, image.pk, operation), code)
    assert alice.get(f"/v2/images/{image.pk}").json() == before


def test_too_many_properties_are_refused(alice, make_image):
    image = make_image("project-a")
    operations = [{"op": "add", "path": f"/p{i}", "value": "v"} for i in range(MAX_IMAGE_PROPERTIES + 1)]
    assert "at most" in error_of(patch(alice, image.pk, *operations), 400)


def test_tags_are_added_and_removed_one_by_one(alice, make_image):
    image = make_image("project-a", tags=["a"])
    assert alice.put(f"/v2/images/{image.pk}/tags/b").status_code == 204
    assert alice.put(f"/v2/images/{image.pk}/tags/b").status_code == 204  # a tag given twice is one tag
    assert alice.get(f"/v2/images/{image.pk}").json()["tags"] == ["a", "b"]
    assert alice.delete(f"/v2/images/{image.pk}/tags/a").status_code == 204
    assert error_of(alice.delete(f"/v2/images/{image.pk}/tags/a"), 404)
    assert alice.get(f"/v2/images/{image.pk}").json()["tags"] == ["b"]


def test_a_deactivated_image_keeps_its_bytes_but_cannot_be_downloaded_until_reactivated(alice, make_image):
    image = make_image("project-a", b"bytes")
    assert alice.post(f"/v2/images/{image.pk}/actions/deactivate").status_code == 204
    assert alice.get(f"/v2/images/{image.pk}").json()["status"] == "deactivated"
    assert "deactivated" in error_of(alice.get(f"/v2/images/{image.pk}/file"), 403)
    assert alice.post(f"/v2/images/{image.pk}/actions/reactivate").status_code == 204
    assert b"".join(alice.get(f"/v2/images/{image.pk}/file").streaming_content) == b"bytes"
    queued = alice.post("/v2/images", {"name": "empty"}, format="json").json()
    assert error_of(alice.post(f"/v2/images/{queued['id']}/actions/deactivate"), 403)


def test_put_on_an_image_is_not_offered(alice, make_image):
    image = make_image("project-a")
    assert alice.put(f"/v2/images/{image.pk}", {"name": "x"}, format="json").status_code == 405


# -- deleting -------------------------------------------------------------------------------


def test_delete_removes_the_image_and_its_bytes(alice, make_image):
    image = make_image("project-a")
    path = Path(default_store().local_path(image.location.key))

    assert alice.delete(f"/v2/images/{image.pk}").status_code == 204

    assert alice.get(f"/v2/images/{image.pk}").status_code == 404
    assert not Image.objects.filter(pk=image.pk).exists()
    assert not path.exists()


def test_a_protected_image_is_not_deleted(alice, make_image):
    image = make_image("project-a", protected=True)
    assert "protected" in error_of(alice.delete(f"/v2/images/{image.pk}"), 403)
    assert Image.objects.filter(pk=image.pk).exists()


def test_delete_that_the_store_cannot_do_is_a_503_and_the_image_stays(alice, make_image, settings, tmp_path):
    image = make_image("project-a")
    # The store's directory is now a plain file, so removing anything under it fails (ENOTDIR).
    not_a_directory = tmp_path / "not-a-directory"
    not_a_directory.write_bytes(b"")
    settings.IMAGE_STORES = {"local": {"type": "filesystem", "path": str(not_a_directory), "region": "local"}}

    message = error_of(alice.delete(f"/v2/images/{image.pk}"), 503)

    assert f"Image {image.pk} was not deleted" in message and "local" in message
    assert Image.objects.filter(pk=image.pk).exists()


def test_delete_of_an_image_that_a_pending_action_reads_is_a_409(alice, make_image):
    image = make_image("project-a")
    # No worker runs here: the export stays pending, reading the image.
    export = {"image_id": str(image.pk), "destination": {"type": "download"}}
    action = alice.post("/v2/image-actions", {"action_type": "export", "input": export}, format="json").json()

    assert action["id"] in error_of(alice.delete(f"/v2/images/{image.pk}"), 409)
    assert default_store().exists(image.location.key)

    ImageAction.objects.filter(pk=action["id"]).update(status="cancelled")  # ended: it reads nothing now
    assert alice.delete(f"/v2/images/{image.pk}").status_code == 204


def test_delete_keeps_bytes_that_another_image_still_uses(alice, make_image):
    image = make_image("project-a")
    key = image.location.key
    twin = Image.objects.get(pk=image.pk)
    twin.pk, twin.created_by_action = uuid.uuid4(), uuid.uuid4()
    twin.save(force_insert=True)
    twin.locations.create(store="local", key=key)

    assert alice.delete(f"/v2/images/{image.pk}").status_code == 204

    assert default_store().exists(key)
    download = alice.get(f"/v2/images/{twin.pk}/file")
    assert b"".join(download.streaming_content) == b"disk image bytes"


def test_a_patch_writes_only_what_it_changes(alice, make_image):
    # An import moves the record's status and bytes while a PATCH may be under way: a PATCH that
    # read the row before must not put the old values back.
    from django.contrib.auth import get_user_model

    from imageactions.api.images import apply_patch

    image = make_image("project-a", name="web")
    stale = Image.objects.get(pk=image.pk)
    Image.objects.filter(pk=image.pk).update(status="importing")
    apply_patch(
        get_user_model().objects.get(username="alice"), stale, [{"op": "replace", "path": "/name", "value": "renamed"}]
    )
    assert Image.objects.values_list("name", "status").get(pk=image.pk) == ("renamed", "importing")


def test_odd_pages_get_answers_not_errors(alice, make_image):
    make_image("project-a", name="a")
    queued = make_image("project-a", name="b", status="queued")
    assert len(alice.get("/v2/images", {"limit": "0"}).json()["images"]) == 1
    # A marker that does not match the filters still marks a place in the order.
    query = {"status": "active", "marker": str(queued.pk), "sort_key": "name", "sort_dir": "desc"}
    assert names(alice.get("/v2/images", query)) == ["a"]


def test_only_the_owner_sees_an_images_tasks(alice, bob, make_image):
    image = make_image("project-b", visibility="public")
    assert bob.get(f"/v2/images/{image.pk}/tasks").json() == {"tasks": []}
    assert error_of(alice.get(f"/v2/images/{image.pk}/tasks"), 403)
