"""Glance's multi-store import, through the API with real workers: imports into named stores or all
of them (`all_stores_must_succeed` either way), copy-image (a clone whose copies become more
locations of the image), and removing an image's copy from one store."""

import hashlib
import json

import pytest

from imageactions.models import Image, ImageAction
from tests.clone.conftest import CloneSetup, files_under, filesystem_stores  # noqa: F401  (a fixture)
from tests.conftest import wait_for_action
from tests.import_.conftest import random_image

MiB = 1024 * 1024


@pytest.fixture
def stores(settings, start_workers, filesystem_stores, tmp_path):  # noqa: F811
    """'home' (the default), 'away' and 'far', and 'broken': a store whose directory is a plain file,
    so every write into it fails."""
    (tmp_path / "not-a-directory").write_bytes(b"")
    broken = {"type": "filesystem", "path": str(tmp_path / "not-a-directory" / "images"), "region": "south"}
    return CloneSetup(settings, start_workers, {**filesystem_stores, "broken": broken})


def record(client, **fields) -> str:
    body = {"name": "multi", "disk_format": "raw", "container_format": "bare", **fields}
    response = client.post("/v2/images", body, format="json")
    assert response.status_code == 201, response.json()
    return response.json()["id"]


def import_call(client, image_id, body, **headers):
    return client.post(f"/v2/images/{image_id}/import", body, format="json", **headers)


def the_action(image_id) -> ImageAction:
    return ImageAction.objects.filter(image_links__image_id=image_id).latest("created_at")


def glance_image(client, image_id) -> dict:
    return client.get(f"/v2/images/{image_id}").json()


def stored(tmp_path, store: str, image_id) -> bytes:
    [key] = Image.objects.get(pk=image_id).locations.filter(store=store).values_list("key", flat=True)
    return (tmp_path / store / key).read_bytes()


def web_download(url: str, **body) -> dict:
    return {"method": {"name": "web-download", "uri": url}, **body}


def test_web_download_into_two_named_stores(alice, stores, image_server, tmp_path):
    workers = stores.workers()
    data = random_image(MiB + 5, seed=71)
    image_id = record(alice)
    url = image_server.add("two.raw", data)

    assert import_call(alice, image_id, web_download(url, stores=["away", "far"])).status_code == 202
    assert glance_image(alice, image_id)["os_glance_importing_to_stores"] == "away,far"
    action = wait_for_action(the_action(image_id).pk, workers=workers)

    assert action.status == "success", action.message
    image = glance_image(alice, image_id)
    assert (image["status"], image["stores"]) == ("active", "away,far")
    assert (image["os_glance_importing_to_stores"], image["os_glance_failed_import"]) == ("", "")
    assert stored(tmp_path, "away", image_id) == stored(tmp_path, "far", image_id) == data
    assert files_under(tmp_path / "home") == []
    assert action.result == {"image_ref": image_id, "stores": ["away", "far"], "failed_stores": []}
    download = alice.get(f"/v2/images/{image_id}/file")
    assert hashlib.sha512(b"".join(download.streaming_content)).hexdigest() == image["os_hash_value"]


def test_all_stores_must_succeed_false_keeps_the_stores_that_worked(alice, stores, image_server, tmp_path):
    workers = stores.workers()
    data = random_image(MiB, seed=72)
    image_id = record(alice)
    body = web_download(image_server.add("all.raw", data), all_stores=True, all_stores_must_succeed=False)

    assert import_call(alice, image_id, body).status_code == 202
    action = wait_for_action(the_action(image_id).pk, workers=workers)

    assert action.status == "success", action.message
    image = glance_image(alice, image_id)
    assert (image["status"], image["stores"], image["os_glance_failed_import"]) == ("active", "home,away,far", "broken")
    assert action.result["failed_stores"] == ["broken"]
    for name in ("home", "away", "far"):
        assert stored(tmp_path, name, image_id) == data


def test_a_store_that_fails_fails_the_whole_import_by_default(alice, stores, image_server, tmp_path):
    workers = stores.workers()
    image_id = record(alice)
    body = web_download(image_server.add("fails.raw", random_image(MiB, seed=73)), stores=["away", "broken"])

    assert import_call(alice, image_id, body).status_code == 202
    action = wait_for_action(the_action(image_id).pk, workers=workers)

    assert action.status == "failure"
    assert "store 'broken'" in action.message
    image = glance_image(alice, image_id)
    assert (image["status"], image["os_glance_failed_import"]) == ("queued", "away,broken")
    assert "stores" not in image
    assert files_under(tmp_path / "away") == []  # the copy that did work is not left behind


def test_stage_then_import_to_the_stores_the_import_call_names(alice, stores, tmp_path):
    workers = stores.workers()
    data = random_image(MiB + 3, seed=74)
    image_id = record(alice)
    staged = alice.put(f"/v2/images/{image_id}/stage", data=data, content_type="application/octet-stream")
    assert staged.status_code == 204

    assert (
        import_call(alice, image_id, {"method": {"name": "glance-direct"}}, HTTP_X_IMAGE_META_STORE="far").status_code
        == 202
    )
    action = wait_for_action(the_action(image_id).pk, workers=workers)

    assert action.status == "success", action.message
    assert action.input["stores"] == ["far"]
    assert glance_image(alice, image_id)["stores"] == "far"
    assert stored(tmp_path, "far", image_id) == data


@pytest.mark.parametrize(
    ("body", "headers", "words"),
    [
        ({"all_stores": True, "stores": ["home"]}, {}, "all_stores"),
        ({"stores": ["home"]}, {"HTTP_X_IMAGE_META_STORE": "away"}, "not both"),
        ({"stores": []}, {}, "list of store names"),
        ({"stores": ["home"], "all_stores_must_succeed": "no"}, {}, "true or false"),
    ],
)
def test_store_choices_glance_refuses_are_400s(alice, stores, body, headers, words):
    image_id = record(alice)
    response = import_call(alice, image_id, web_download("http://127.0.0.1:9/x.raw", **body), **headers)
    assert response.status_code == 400
    assert words in json.dumps(response.json())
    assert glance_image(alice, image_id)["status"] == "queued"


# -- copy-image ----------------------------------------------------------------------------


def active_image(client, workers, data: bytes, **fields) -> str:
    image_id = record(client, **fields)
    response = client.put(f"/v2/images/{image_id}/file", data=data, content_type="application/octet-stream")
    assert response.status_code == 204
    assert glance_image(client, image_id)["status"] == "active"
    return image_id


def copy_image(client, image_id, **body):
    return import_call(client, image_id, {"method": {"name": "copy-image"}, **body})


def test_copy_image_adds_verified_copies_to_the_same_image(alice, stores, tmp_path):
    workers = stores.workers()
    data = random_image(2 * MiB + 1, seed=75)
    image_id = active_image(alice, workers, data)
    assert glance_image(alice, image_id)["stores"] == "home"

    assert copy_image(alice, image_id, stores=["away", "far"]).status_code == 202
    image = glance_image(alice, image_id)
    assert (image["status"], image["os_glance_importing_to_stores"]) == ("active", "away,far")
    action = wait_for_action(the_action(image_id).pk, workers=workers)

    assert (action.action_type, action.status, action.input["same_image"]) == ("clone", "success", True)
    image = glance_image(alice, image_id)
    assert (image["status"], image["stores"], image["os_glance_importing_to_stores"]) == ("active", "home,away,far", "")
    for name in ("home", "away", "far"):
        assert stored(tmp_path, name, image_id) == data
    assert Image.objects.count() == 1  # no new image
    listed = alice.get("/v2/image-actions", {"image_id": image_id, "action_type": "clone"}).json()["results"]
    assert [item["id"] for item in listed] == [str(action.pk)]
    tasks = alice.get(f"/v2/images/{image_id}/tasks").json()["tasks"]
    assert [task["status"] for task in tasks] == ["success", "success"]  # the copy, then the upload


def test_copy_image_to_all_stores_skips_those_holding_it_and_tolerates_failures(alice, stores, settings):
    workers = stores.workers()
    image_id = active_image(alice, workers, random_image(MiB, seed=76))

    assert copy_image(alice, image_id, all_stores=True, all_stores_must_succeed=False).status_code == 202
    action = wait_for_action(the_action(image_id).pk, workers=workers)

    assert action.status == "success", action.message
    assert action.input["stores"] == ["away", "far", "broken"]
    outcomes = {target["store"]: target for target in action.result["targets"]}
    assert [target["store"] for target in action.result["targets"]] == ["away", "far", "broken"]
    assert outcomes["away"]["outcome"] == outcomes["far"]["outcome"] == "copied"
    assert outcomes["away"]["image_id"] == image_id
    assert outcomes["broken"]["outcome"] == "failed" and "broken" in outcomes["broken"]["message"]
    image = glance_image(alice, image_id)
    assert (image["stores"], image["os_glance_failed_import"]) == ("home,away,far", "broken")
    # Again: only the store that does not hold it yet is tried.
    workers.stop()
    assert copy_image(alice, image_id, all_stores=True).status_code == 202
    assert the_action(image_id).input["stores"] == ["broken"]
    the_action(image_id).delete()
    # Once every store holds it, there is nothing to do, and no action is made.
    settings.IMAGE_STORES = {name: config for name, config in settings.IMAGE_STORES.items() if name != "broken"}
    assert copy_image(alice, image_id, all_stores=True).status_code == 202
    assert ImageAction.objects.filter(action_type="clone").count() == 1


def test_a_failed_copy_leaves_the_image_active_and_names_the_store(alice, stores, tmp_path):
    workers = stores.workers()
    data = random_image(MiB, seed=77)
    image_id = active_image(alice, workers, data)

    assert copy_image(alice, image_id, stores=["away", "broken"]).status_code == 202
    action = wait_for_action(the_action(image_id).pk, workers=workers)

    assert action.status == "failure"
    image = glance_image(alice, image_id)
    assert (image["status"], image["stores"], image["os_glance_failed_import"]) == ("active", "home", "away,broken")
    assert files_under(tmp_path / "away") == []
    assert stored(tmp_path, "home", image_id) == data


def test_copy_image_refusals(alice, stores):
    workers = stores.workers()
    image_id = active_image(alice, workers, random_image(MiB, seed=78))
    queued_id = record(alice)

    assert "already present" in json.dumps(copy_image(alice, image_id, stores=["home"]).json())
    assert copy_image(alice, queued_id, stores=["away"]).status_code == 409
    assert copy_image(alice, image_id, stores=["nowhere"]).status_code == 400
    workers.stop()  # the copy below stays pending
    assert copy_image(alice, image_id, stores=["away"]).status_code == 202
    second = copy_image(alice, image_id, stores=["far"])
    assert second.status_code == 409
    assert "being imported or copied" in second.json()["error"]["message"]


def test_another_project_may_not_copy_an_image(alice, bob, stores):
    workers = stores.workers()
    image_id = active_image(alice, workers, random_image(MiB, seed=79), visibility="community")
    assert copy_image(bob, image_id, stores=["away"]).status_code == 403
    clone = {"image_id": image_id, "stores": ["away"], "same_image": True}
    response = bob.post("/v2/image-actions", {"action_type": "clone", "input": clone}, format="json")
    assert response.status_code == 422  # not_found: not in his project
    assert "in your project" in json.dumps(response.json())


# -- removing one store's copy -------------------------------------------------------------


def test_delete_from_store_removes_one_copy_and_keeps_the_last(alice, stores, tmp_path):
    workers = stores.workers()
    data = random_image(MiB, seed=80)
    image_id = active_image(alice, workers, data)
    assert copy_image(alice, image_id, stores=["away"]).status_code == 202
    assert wait_for_action(the_action(image_id).pk, workers=workers).status == "success"

    assert alice.delete(f"/v2/stores/far/{image_id}").status_code == 404  # no copy there
    assert alice.delete(f"/v2/stores/nowhere/{image_id}").status_code == 409
    assert alice.delete(f"/v2/stores/home/{image_id}").status_code == 204

    assert glance_image(alice, image_id)["stores"] == "away"
    assert files_under(tmp_path / "home") == []
    assert b"".join(alice.get(f"/v2/images/{image_id}/file").streaming_content) == data
    last = alice.delete(f"/v2/stores/away/{image_id}")
    assert last.status_code == 403 and "only store" in last.json()["error"]["message"]


def test_deleting_an_image_removes_every_copy(alice, stores, tmp_path):
    workers = stores.workers()
    image_id = active_image(alice, workers, random_image(MiB, seed=81))
    assert copy_image(alice, image_id, stores=["away", "far"]).status_code == 202
    assert wait_for_action(the_action(image_id).pk, workers=workers).status == "success"

    assert alice.delete(f"/v2/images/{image_id}").status_code == 204

    for name in ("home", "away", "far"):
        assert files_under(tmp_path / name) == []


def test_import_actions_take_stores_too(alice, stores, image_server, tmp_path):
    workers = stores.workers()
    data = random_image(MiB, seed=82)
    url = image_server.add("direct.raw", data)
    body = {
        "action_type": "import",
        "input": {"location": url, "image_properties": {"name": "x"}, "stores": ["far", "away"]},
    }
    created = alice.post("/v2/image-actions", body, format="json")
    assert created.status_code == 201, created.json()
    action = wait_for_action(created.json()["id"], workers=workers)
    assert action.status == "success", action.message
    assert Image.objects.get(pk=action.result["image_ref"]).stores == ["far", "away"]
    unknown = {**body["input"], "stores": ["nowhere"]}
    response = alice.post("/v2/image-actions", {"action_type": "import", "input": unknown}, format="json")
    assert response.status_code == 422 and "nowhere" in json.dumps(response.json())
