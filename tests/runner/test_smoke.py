"""A first end-to-end run of the test action type through real workers."""

from tests.conftest import wait_for_action


def test_test_action_runs_all_steps_to_success(alice, workers):
    response = alice.post("/v2/image-actions", {"action_type": "test", "input": {}}, format="json")
    assert response.status_code == 201, response.json()
    assert response["Location"].endswith(f"/v2/image-actions/{response.json()['id']}")
    action = wait_for_action(response.json()["id"], workers=workers)
    assert action.status == "success", action.message
    assert action.result["steps_ran"] == ["prepare", "work", "wrap"]
