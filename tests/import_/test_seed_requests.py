"""The requests of the design this service comes from, sent exactly as written to /v2/image-imports."""

from tests.conftest import wait_for_action
from tests.import_.conftest import random_image


def test_the_designs_own_import_request_and_answers(alice, workers, image_server):
    url = image_server.add("greatstack.raw", random_image(1024 * 1024, seed=51))
    response = alice.post(
        "/v2/image-imports",
        {"location": url, "image_properties": {"name": "GreatStack 1.22", "tags": ["lamp", "custom"]}},
        format="json",
    )
    assert response.status_code == 201, response.json()
    action_id = response.json()["id"]
    assert response["Location"].endswith(f"/v2/image-actions/{action_id}")

    polled = alice.get(response["Location"]).json()
    assert polled["status"] in ("waiting", "uploading", "verifying", "storing", "success")
    assert polled["image_properties"]["name"] == "GreatStack 1.22"
    assert polled["image_properties"]["tags"] == ["lamp", "custom"]

    wait_for_action(action_id, workers=workers)
    ended = alice.get(f"/v2/image-imports/{action_id}").json()
    assert ended["status"] == "success"
    assert ended["image_ref"] == f"/v2/images/{ended['result']['image_ref']}"
    assert ended["expires-by"] == ended["expires_at"]
    image = alice.get(ended["image_ref"]).json()
    assert (image["name"], image["tags"], image["status"]) == ("GreatStack 1.22", ["lamp", "custom"], "active")
