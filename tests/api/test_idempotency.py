"""Idempotency-Key on creates: a retry gets the first answer, never a second action; a key reused
for another request is a 409; simultaneous retries through a real server make one action."""

import threading
from datetime import timedelta

import pytest
import requests
from django.utils import timezone

from imageactions.models import IdempotencyKey, ImageAction
from imageactions.runner import purge
from tests.import_.conftest import api_server, token_of  # noqa: F401  (a fixture)

ACTIONS = "/v2/image-actions"
BODY = {"action_type": "test", "input": {"work": {"kind": "sleep", "seconds": 1}}}


def post(client, body=BODY, key="build-4711-upload", path=ACTIONS):
    return client.post(path, body, format="json", HTTP_IDEMPOTENCY_KEY=key)


def test_a_retry_with_the_same_key_gets_the_first_answer_and_no_second_action(alice):
    first = post(alice)
    assert first.status_code == 201 and "Idempotent-Replayed" not in first
    again = post(alice)
    assert again.status_code == 201 and again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json() and again["Location"] == first["Location"]
    assert ImageAction.objects.count() == 1


def test_the_same_body_in_another_key_order_or_through_the_alias_is_the_same_request(alice):
    first = post(alice, {"input": {"work": {"seconds": 1, "kind": "sleep"}}, "action_type": "test"})
    # The type's alias, with the input as the body, asks for the same thing.
    assert post(alice, BODY["input"], path="/v2/image-tests").json()["id"] == first.json()["id"]


def test_the_first_answer_comes_back_even_when_the_request_would_now_be_refused(alice, settings):
    first = post(alice).json()["id"]
    settings.QUOTA_PENDING_ACTIONS = 1  # the first create used the project's last slot
    assert post(alice).json()["id"] == first
    assert post(alice, key="another").status_code == 403


def test_the_same_key_with_another_request_is_a_409_naming_the_key(alice):
    post(alice)
    response = post(alice, {"action_type": "test", "input": {}})
    assert response.status_code == 409 and response.json()["code"] == "idempotency_key_reused"
    assert "build-4711-upload" in response.json()["detail"] and "different request" in response.json()["detail"]
    assert ImageAction.objects.count() == 1


def test_keys_belong_to_a_project(alice, alice_colleague, bob):
    mine = post(alice).json()["id"]
    assert post(alice_colleague).json()["id"] == mine  # the same project
    assert post(bob).json()["id"] != mine


def test_a_key_past_its_window_makes_a_new_action_and_the_purge_forgets_it(alice, settings):
    first = post(alice).json()["id"]
    IdempotencyKey.objects.update(created_at=timezone.now() - timedelta(seconds=settings.IDEMPOTENCY_WINDOW + 1))
    second = post(alice).json()["id"]
    assert second != first
    IdempotencyKey.objects.update(created_at=timezone.now() - timedelta(seconds=settings.IDEMPOTENCY_WINDOW + 1))
    purge()
    assert not IdempotencyKey.objects.exists()


def test_a_refused_create_is_not_remembered(alice):
    assert post(alice, {"action_type": "test", "input": {"work": {"kind": "nap"}}}).status_code == 400
    assert post(alice).status_code == 201 and ImageAction.objects.count() == 1


@pytest.mark.parametrize("key", ["", "with space", "x" * 256, "caf\u00e9"])
def test_a_malformed_key_is_a_400(alice, key):
    response = alice.post(ACTIONS, BODY, format="json", HTTP_IDEMPOTENCY_KEY=key.encode().decode("latin-1"))
    assert response.status_code == 400 and "Idempotency-Key" in response.json()["errors"]
    assert not ImageAction.objects.exists()


def test_simultaneous_retries_through_a_real_server_make_one_action(alice, api_server):  # noqa: F811
    headers = {"Authorization": f"Token {token_of(alice)}", "Idempotency-Key": "simultaneous"}
    start = threading.Barrier(8)
    answers = []

    def create():
        start.wait()
        answers.append(requests.post(f"{api_server.base_url}{ACTIONS}", json=BODY, headers=headers, timeout=60))

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [answer.status_code for answer in answers] == [201] * 8, [a.text for a in answers]
    assert len({answer.json()["id"] for answer in answers}) == 1
    assert sum(answer.headers.get("Idempotent-Replayed") == "true" for answer in answers) == 7
    assert ImageAction.objects.count() == 1
