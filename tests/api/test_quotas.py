"""Per-project quotas and request rates: a clear `quota_exceeded` error naming the quota, its limit
and the usage, checked at create and again while an import's bytes arrive; GET /v2/info/usage."""

import pytest

from imageactions.api.throttling import ProjectRateThrottle
from imageactions.models import Image, ImageAction, ProjectQuota
from tests.conftest import wait_for_action
from tests.images.conftest import put_image
from tests.import_.conftest import image_server, import_body, random_image  # noqa: F401  (a fixture)

ACTIONS = "/v2/image-actions"
HELD = {"action_type": "test", "input": {"await_data": True}}


def quota_error(response, quota: str) -> dict:
    assert response.status_code == 403, response.content
    body = response.json()
    assert body["code"] == "quota_exceeded" and body["quota"]["quota"] == quota, body
    assert quota in body["detail"] and "ask an operator" in body["detail"]
    return body


def test_pending_actions_are_capped_and_the_error_names_limit_and_usage(alice, alice_colleague, bob, settings):
    settings.QUOTA_PENDING_ACTIONS = 2
    first = alice.post(ACTIONS, HELD, format="json").json()["id"]
    assert alice_colleague.post(ACTIONS, HELD, format="json").status_code == 201  # the same project
    body = quota_error(alice.post(ACTIONS, HELD, format="json"), "pending_actions")
    assert body["quota"] == {"quota": "pending_actions", "limit": 2, "usage": 2}
    quota_error(alice.post(f"{ACTIONS}?dry_run=true", HELD, format="json"), "pending_actions")
    assert bob.post(ACTIONS, HELD, format="json").status_code == 201  # another project
    alice.post(f"{ACTIONS}/{first}/cancel")
    assert alice.post(ACTIONS, HELD, format="json").status_code == 201
    assert ImageAction.objects.filter(owner="project-a").count() == 3


def test_a_projects_override_in_the_admin_beats_the_default(alice, bob, admin_client):
    put_image("project-a")
    assert admin_client.get("/admin/imageactions/projectquota/add/").status_code == 200
    ProjectQuota.objects.create(project="project-a", image_count_total=1)
    upload_import = import_body({"source": "upload"})
    quota_error(alice.post(ACTIONS, upload_import, format="json"), "image_count_total")
    assert alice.post(ACTIONS, HELD, format="json").status_code == 201  # makes no image
    assert bob.post(ACTIONS, upload_import, format="json").status_code == 201
    glance = alice.post("/v2/images", {"name": "x", "disk_format": "raw", "container_format": "bare"}, format="json")
    assert glance.status_code == 413 and "image_count_total" in glance.content.decode()  # Glance's answer to quotas


def test_imports_wait_while_pending_imports_hold_the_staging_quota(alice, settings):
    settings.QUOTA_IMAGE_STAGE = 1000
    receiving = alice.post(ACTIONS, import_body({"source": "upload"}), format="json").json()["id"]
    ImageAction.objects.filter(pk=receiving).update(progress_done=1000)  # its bytes so far
    quota_error(alice.post(ACTIONS, import_body({"source": "upload"}), format="json"), "image_stage_total")
    assert alice.post(ACTIONS, HELD, format="json").status_code == 201  # stages nothing


def test_pending_imports_count_as_images_until_they_make_theirs(alice, settings):
    settings.QUOTA_IMAGE_COUNT = 1
    assert alice.post(ACTIONS, import_body({"source": "upload"}), format="json").status_code == 201
    quota_error(alice.post(ACTIONS, import_body({"source": "upload"}), format="json"), "image_count_total")


@pytest.mark.parametrize("announced", [True, False])
def test_an_import_bigger_than_the_bytes_left_fails_while_its_bytes_arrive(alice, workers, image_server, announced):  # noqa: F811
    ProjectQuota.objects.create(project="project-a", image_size_total=400_000)  # the workers read it too
    put_image("project-a", b"x" * 150_000)
    data = random_image(300_000, seed=50)
    url = image_server.add("big.img", data) if announced else image_server.url("/unannounced/big.img")
    if not announced:
        image_server.files["big.img"] = data
    action_id = alice.post(ACTIONS, import_body({"location": url}), format="json").json()["id"]
    action = wait_for_action(action_id, workers=workers)
    assert action.status == "failure"
    assert "image_size_total quota is 390.6 KiB and 146.5 KiB is in use" in action.message, action.message
    assert Image.objects.filter(owner="project-a").count() == 1


def test_usage_shows_each_quota_in_glances_shape(alice, settings):
    settings.QUOTA_IMAGE_SIZE = 10_000
    put_image("project-a", b"y" * 1000)
    put_image("project-b", b"z" * 5000)
    alice.post(ACTIONS, HELD, format="json")
    usage = alice.get("/v2/info/usage").json()["usage"]
    assert usage == {
        "pending_actions": {"limit": -1, "usage": 1},
        "image_count_total": {"limit": -1, "usage": 1},
        "image_size_total": {"limit": 10_000, "usage": 1000},
        "image_stage_total": {"limit": -1, "usage": 0},
    }


def test_a_projects_users_share_one_request_rate_and_get_429_with_retry_after(alice, alice_colleague, bob, monkeypatch):
    monkeypatch.setitem(ProjectRateThrottle.THROTTLE_RATES, "project", "3/min")
    from django.core.cache import caches

    caches["throttle"].clear()
    assert [alice.get(ACTIONS).status_code for _ in range(2)] == [200, 200]
    assert alice_colleague.get(ACTIONS).status_code == 200
    refused = alice_colleague.get(ACTIONS)
    assert refused.status_code == 429 and int(refused["Retry-After"]) > 0
    assert refused.json()["code"] == "throttled"
    assert bob.get(ACTIONS).status_code == 200
