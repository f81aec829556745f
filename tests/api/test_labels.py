"""Labels: the user's own key/value pairs on actions, set at create and by PATCH, filterable."""

import pytest

from imageactions.validators import MAX_LABELS

ACTIONS = "/v2/image-actions"


def create(client, labels, **extra):
    return client.post(
        ACTIONS, {"action_type": "test", "input": {"await_data": True}, "labels": labels}, format="json", **extra
    )


def ids(response) -> set[str]:
    assert response.status_code == 200, response.content
    return {action["id"] for action in response.json()["results"]}


def test_labels_set_at_create_are_shown_and_default_to_none(alice):
    labelled = create(alice, {"team": "ci", "build": "4711", "note": ""})
    assert labelled.status_code == 201 and labelled.json()["labels"] == {"team": "ci", "build": "4711", "note": ""}
    plain = alice.post(ACTIONS, {"action_type": "test", "input": {}}, format="json")
    assert plain.json()["labels"] == {}
    alias = alice.post("/v2/image-tests", {"input": {}, "labels": {"team": "qa"}}, format="json")
    assert alias.status_code == 201 and alias.json()["labels"] == {"team": "qa"}


@pytest.mark.parametrize(
    "labels",
    [
        {"Team": "ci"},
        {"1st": "x"},
        {"a" * 64: "x"},
        {"team": 5},
        {"team": "line\nbreak"},
        {"team": "x" * 256},
        {f"k{i}": "v" for i in range(MAX_LABELS + 1)},
        ["team", "ci"],
    ],
)
def test_labels_outside_the_limits_are_a_400(alice, labels):
    response = create(alice, labels)
    assert response.status_code == 400, response.content
    assert any(name.startswith("labels") for name in response.json()["errors"])


def test_patch_replaces_the_labels_and_nothing_else(alice, bob):
    action = create(alice, {"team": "ci", "build": "1"}).json()
    url = f"{ACTIONS}/{action['id']}"
    changed = alice.patch(url, {"labels": {"team": "ci", "stage": "done"}}, format="json")
    assert changed.status_code == 200 and changed.json()["labels"] == {"team": "ci", "stage": "done"}
    assert changed.json()["status"] == action["status"] and changed.json()["input"] == action["input"]
    refused = alice.patch(url, {"labels": {}, "status": "success"}, format="json")
    assert refused.status_code == 400 and list(refused.json()["errors"]) == ["status"]
    assert alice.patch(url, {"labels": {"Bad": "x"}}, format="json").status_code == 400
    assert bob.patch(url, {"labels": {}}, format="json").status_code == 404
    assert alice.get(url).json()["labels"] == {"team": "ci", "stage": "done"}


def test_the_label_filter_matches_key_and_value_or_the_key_and_repeats_as_and(alice, bob):
    ci = create(alice, {"team": "ci", "build": "7"}).json()["id"]
    ci_other = create(alice, {"team": "ci"}).json()["id"]
    qa = create(alice, {"team": "qa", "build": "7"}).json()["id"]
    create(alice, {})
    create(bob, {"team": "ci"})  # another project's
    assert ids(alice.get(ACTIONS, {"label": "team=ci"})) == {ci, ci_other}
    assert ids(alice.get(ACTIONS, {"label": "build"})) == {ci, qa}
    assert ids(alice.get(f"{ACTIONS}?label=team=ci&label=build=7")) == {ci}
    assert ids(alice.get(ACTIONS, {"label": "team="})) == set()
    assert ids(alice.get(ACTIONS, {"label": "build=7", "status": "pending"})) == {ci, qa}
    assert alice.get(ACTIONS, {"label": "Team=ci"}).status_code == 400
    # A key named like a lookup is a key; a key with "__" is none (it would read as a path).
    regex = create(alice, {"regex": "("}).json()["id"]
    assert ids(alice.get(ACTIONS, {"label": "regex=("})) == {regex}
    assert alice.get(ACTIONS, {"label": "team__regex=("}).status_code == 400
    assert create(alice, {"a__b": "x"}).status_code == 400


def test_labels_are_part_of_what_an_idempotency_key_stands_for(alice):
    first = create(alice, {"team": "ci"}, HTTP_IDEMPOTENCY_KEY="k1")
    assert create(alice, {"team": "ci"}, HTTP_IDEMPOTENCY_KEY="k1").json()["id"] == first.json()["id"]
    assert create(alice, {"team": "qa"}, HTTP_IDEMPOTENCY_KEY="k1").status_code == 409
