"""GET /v2/image-actions/{id}?wait=N: the answer comes when the status changes, not N seconds
later and not at once, with real workers moving the action along."""

import time

import pytest

from tests.runner.conftest import create_test_action, poll

ACTIONS = "/v2/image-actions"


def timed_get(client, action_id, **query):
    started = time.monotonic()
    response = client.get(f"{ACTIONS}/{action_id}", query)
    assert response.status_code == 200, response.content
    return response.json(), time.monotonic() - started


def test_a_waiting_get_answers_when_the_status_changes(alice, workers):
    action_id = create_test_action(alice, work={"kind": "sleep", "seconds": 2})
    poll(alice, action_id, lambda body: body["status"] == "working")
    body, seconds = timed_get(alice, action_id, wait=30)
    assert body["status"] in ("wrapping", "success")
    assert 0.5 < seconds < 10  # the step's remaining time, not the 30 s bound


def test_seen_status_answers_at_once_when_the_client_is_behind(alice, workers):
    action_id = create_test_action(alice, work={"kind": "sleep", "seconds": 5})
    poll(alice, action_id, lambda body: body["status"] == "working")
    body, seconds = timed_get(alice, action_id, wait=30, seen_status="waiting")
    assert body["status"] == "working" and seconds < 1


def test_an_unchanged_action_is_answered_at_the_bound_and_an_ended_one_at_once(alice, workers):
    held = alice.post(ACTIONS, {"action_type": "test", "input": {"await_data": True}}, format="json").json()["id"]
    body, seconds = timed_get(alice, held, wait=2)
    assert body["status"] == "waiting" and 1.9 < seconds < 4
    ended = create_test_action(alice)
    poll(alice, ended, lambda body: body["status"] == "success")
    assert timed_get(alice, ended, wait=30)[1] < 1


@pytest.mark.parametrize("wait", ["-1", "abc", "61", "1.5", "\u00b2", "9" * 5000])
def test_a_wait_outside_the_bound_is_a_400(alice, wait):
    held = alice.post(ACTIONS, {"action_type": "test", "input": {"await_data": True}}, format="json").json()["id"]
    response = alice.get(f"{ACTIONS}/{held}", {"wait": wait})
    assert response.status_code == 400 and "wait" in response.json()["errors"]
