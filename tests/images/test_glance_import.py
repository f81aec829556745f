"""Glance's ways of giving an image record its bytes, through the API with real workers: a direct
upload to .../file, stage then import (glance-direct), web-download; each is an image action."""

import hashlib
import subprocess

import pytest

from tests.conftest import wait_for_action
from tests.import_.conftest import random_image

MiB = 1024 * 1024


@pytest.fixture
def anonymous(db):
    from rest_framework.test import APIClient

    return APIClient()


def record(client, **fields) -> str:
    body = {"name": "web", "disk_format": "raw", "container_format": "bare", **fields}
    response = client.post("/v2/images", body, format="json")
    assert response.status_code == 201, response.json()
    return response.json()["id"]


def put_bytes(client, path, data: bytes, content_type="application/octet-stream"):
    return client.put(path, data=data, content_type=content_type)


def the_import(image_id):
    from imageactions.models import ImageAction

    return ImageAction.objects.get(image_links__image_id=image_id)


def test_a_direct_upload_is_verified_like_an_import_and_answers_once_the_image_is_active(alice, workers):
    image_id, data = record(alice), random_image(2 * MiB + 1, seed=41)
    assert put_bytes(alice, f"/v2/images/{image_id}/file", data).status_code == 204
    image = alice.get(f"/v2/images/{image_id}").json()
    assert image["status"] == "active"
    assert (image["size"], image["checksum"]) == (len(data), hashlib.md5(data).hexdigest())
    assert (image["os_hash_algo"], image["os_hash_value"]) == ("sha512", hashlib.sha512(data).hexdigest())
    assert b"".join(alice.get(f"/v2/images/{image_id}/file").streaming_content) == data
    [task] = alice.get(f"/v2/images/{image_id}/tasks").json()["tasks"]
    assert task["status"] == "success" and task["image_action"] == f"/v2/image-actions/{task['id']}"
    assert put_bytes(alice, f"/v2/images/{image_id}/file", data).status_code == 409  # it has its bytes


def test_a_hostile_upload_is_refused_with_415_and_the_record_is_queued_again(alice, workers, tmp_path):
    path = tmp_path / "hostile.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "/etc/hostname", "-F", "raw", str(path), "1M"],
                   check=True)  # fmt: skip
    image_id = record(alice, disk_format="qcow2")
    response = put_bytes(alice, f"/v2/images/{image_id}/file", path.read_bytes())
    assert response.status_code == 415
    assert "backing file" in response.json()["error"]["message"]
    image = alice.get(f"/v2/images/{image_id}").json()
    assert (image["status"], image["os_glance_failed_import"], image["size"]) == ("queued", "local", None)
    assert the_import(image_id).status == "failure"


def test_image_data_must_be_octet_stream(alice):
    image_id = record(alice)
    for suffix in ("file", "stage"):
        response = put_bytes(alice, f"/v2/images/{image_id}/{suffix}", b"{}", content_type="application/json")
        assert response.status_code == 415
    assert alice.get(f"/v2/images/{image_id}").json()["status"] == "queued"


def test_staged_bytes_wait_for_the_import_call(alice, workers):
    image_id, data = record(alice), random_image(MiB, seed=42)
    assert (
        alice.post(f"/v2/images/{image_id}/import", {"method": {"name": "glance-direct"}}, format="json").status_code
        == 409
    )
    assert put_bytes(alice, f"/v2/images/{image_id}/stage", data).status_code == 204
    assert put_bytes(alice, f"/v2/images/{image_id}/stage", data).status_code == 409  # staged already
    action = the_import(image_id)
    assert alice.get(f"/v2/images/{image_id}").json()["status"] == "uploading"
    assert alice.get(f"/v2/image-actions/{action.pk}").json()["status"] == "uploading"  # its data is in

    response = alice.post(
        f"/v2/images/{image_id}/import",
        {"method": {"name": "glance-direct"}, "all_stores": False, "all_stores_must_succeed": False},
        format="json",
    )
    assert response.status_code == 202
    assert wait_for_action(action.pk, workers=workers).status == "success"
    image = alice.get(f"/v2/images/{image_id}").json()
    assert image["status"] == "active" and image["os_hash_value"] == hashlib.sha512(data).hexdigest()
    assert (image["os_glance_failed_import"], image["os_glance_importing_to_stores"]) == ("", "")


def test_web_download_imports_through_an_image_action(alice, workers, image_server):
    data = random_image(MiB + 9, seed=43)
    image_id = record(alice)
    url = image_server.add("glance-web.raw", data)
    assert alice.post(f"/v2/images/{image_id}/import", {"method": {"name": "web-download", "uri": url}},
                      format="json").status_code == 202  # fmt: skip
    action = the_import(image_id)
    assert action.input["location"] == url
    assert wait_for_action(action.pk, workers=workers).status == "success"
    assert alice.get(f"/v2/images/{image_id}").json()["status"] == "active"
    listed = alice.get("/v2/image-actions", {"image_id": image_id}).json()["results"]
    assert [item["id"] for item in listed] == [str(action.pk)]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"method": {"name": "web-download", "uri": "http://169.254.169.254/latest"}}, "not allowed"),
        ({"method": {"name": "web-download", "uri": "file:///etc/passwd"}}, "location"),
        ({"method": {"name": "copy-disk"}}, "Unknown import method"),
        (
            {"method": {"name": "web-download", "uri": "http://example.org/x"}, "stores": ["elsewhere"]},
            "no image store named 'elsewhere'",
        ),
        ({}, "method"),
    ],
)
def test_a_refused_import_is_a_400_at_once_and_the_record_stays_queued(alice, body, words):
    image_id = record(alice)
    response = alice.post(f"/v2/images/{image_id}/import", body, format="json")
    assert response.status_code == 400
    assert words in str(response.json()["error"])
    assert alice.get(f"/v2/images/{image_id}").json()["status"] == "queued"


def test_an_import_needs_the_formats_and_a_queued_record(alice, make_image):
    no_format = alice.post("/v2/images", {"name": "x"}, format="json").json()["id"]
    method = {"method": {"name": "web-download", "uri": "http://example.org/x.raw"}}
    assert alice.post(f"/v2/images/{no_format}/import", method, format="json").status_code == 409
    active = make_image("project-a")
    assert alice.post(f"/v2/images/{active.pk}/import", method, format="json").status_code == 409


def test_info_lists_the_import_methods_and_the_stores(alice, operator):
    methods = alice.get("/v2/info/import").json()["import-methods"]
    assert methods == {
        "description": "Import methods available.",
        "type": "array",
        "value": ["copy-image", "glance-direct", "web-download"],
    }
    assert alice.get("/v2/info/stores").json() == {
        "stores": [{"id": "local", "description": "filesystem store in region local", "default": "true"}]
    }
    assert alice.get("/v2/info/stores/detail").status_code == 403
    [detail] = operator.get("/v2/info/stores/detail").json()["stores"]
    assert detail["type"] == "filesystem" and detail["properties"] == {"region": "local"}


def test_x_auth_token_is_accepted_like_the_authorization_header(alice, anonymous):
    token = alice._credentials["HTTP_AUTHORIZATION"].removeprefix("Token ")
    assert anonymous.get("/v2/images", HTTP_X_AUTH_TOKEN=token).status_code == 200
    assert anonymous.get("/v2/image-actions", HTTP_X_AUTH_TOKEN=token).status_code == 200
    assert anonymous.get("/v2/images", HTTP_X_AUTH_TOKEN="not-a-token").status_code == 401
    # Identity headers a client sends are never believed.
    assert anonymous.get("/v2/images", HTTP_X_PROJECT_ID="project-a", HTTP_X_ROLES="admin").status_code == 401


def test_image_data_needs_the_formats_first(alice):
    image_id = alice.post("/v2/images", {"name": "no formats"}, format="json").json()["id"]
    for suffix in ("file", "stage"):
        assert put_bytes(alice, f"/v2/images/{image_id}/{suffix}", b"x" * 512).status_code == 400
    assert alice.get(f"/v2/images/{image_id}").json()["status"] == "queued"


@pytest.mark.parametrize("body", [{"method": {"name": []}}, {"method": {"name": "web-download"}, "stores": 5}])
def test_an_import_body_of_the_wrong_types_is_a_400(alice, body):
    image_id = record(alice)
    assert alice.post(f"/v2/images/{image_id}/import", body, format="json").status_code == 400


def test_an_import_into_a_record_is_only_made_by_the_glance_api(alice):
    image_id = record(alice)
    body = {
        "action_type": "import",
        "input": {"source": "upload", "image_id": image_id, "image_properties": {"name": "x"}},
    }
    response = alice.post("/v2/image-actions", body, format="json")
    assert response.status_code == 400
    assert "POST /v2/images/{id}/import" in response.json()["errors"]["input.image_id"][0]
