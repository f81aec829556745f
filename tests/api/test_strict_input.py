"""Input the service does not understand is refused with a 400 that names it, never dropped in
silence: unknown body fields and query parameters, numbers the database cannot keep, bad
`limit` and `cursor` values."""

import pytest

from imageactions.models import ImageAction

ACTIONS = "/v2/image-actions"


def errors_of(response) -> dict:
    assert response.status_code == 400, response.content
    return response.json()["errors"]


def test_an_unknown_field_of_the_create_body_is_named_not_dropped(alice):
    errors = errors_of(alice.post(ACTIONS, {"action_type": "test", "input": {}, "status": "success"}, format="json"))
    assert list(errors) == ["status"] and "Unknown field" in errors["status"][0]
    assert not ImageAction.objects.exists()


def test_unknown_fields_are_named_at_every_depth_of_the_input(alice):
    body = {"action_type": "test", "input": {"work": {"kind": "ok", "secs": 3}, "retries": 2}}
    assert set(errors_of(alice.post(ACTIONS, body, format="json"))) == {"input.work.secs", "input.retries"}
    export = {"image_id": "00000000-0000-0000-0000-000000000000", "destination": {"type": "download", "ttl": 5}}
    assert "input.destination.ttl" in errors_of(
        alice.post(ACTIONS, {"action_type": "export", "input": export}, format="json")
    )


def test_an_alias_names_unknown_fields_of_its_input_body(alice):
    errors = errors_of(alice.post("/v2/image-imports", {"source": "upload", "sorce": "x"}, format="json"))
    assert "input.sorce" in errors


def test_free_form_objects_still_take_any_key(alice):
    body = {
        "action_type": "import",
        "input": {"source": "upload", "image_properties": {"name": "n", "properties": {"os_distro": "debian"}}},
    }
    assert alice.post(ACTIONS, body, format="json").status_code == 201


@pytest.mark.parametrize("field", ["min_disk", "min_ram"])
def test_numbers_the_database_cannot_keep_are_refused_at_create(alice, field):
    body = {"action_type": "import", "input": {"source": "upload", "image_properties": {"name": "n", field: 2**31}}}
    errors = errors_of(alice.post(ACTIONS, body, format="json"))
    assert f"input.image_properties.{field}" in errors
    body["input"]["image_properties"][field] = 2**31 - 1
    assert alice.post(ACTIONS, body, format="json").status_code == 201


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ({"pending": "true"}, "pending"),
        ({"status": "pending", "sort": "created_at"}, "sort"),
        ({"page": "2"}, "page"),
    ],
)
def test_an_unknown_query_parameter_of_the_list_is_named_with_those_it_takes(alice, query, named):
    errors = errors_of(alice.get(ACTIONS, query))
    assert list(errors) == [named]
    assert "Unknown query parameter" in errors[named][0] and "status" in errors[named][0]


def test_a_parameter_that_takes_one_value_given_twice_is_refused_and_filters_may_repeat(alice):
    assert list(errors_of(alice.get(f"{ACTIONS}?limit=1&limit=2"))) == ["limit"]
    assert alice.get(f"{ACTIONS}?status=waiting&status=failure").status_code == 200
    assert alice.get(f"{ACTIONS}?action_type=test&action_type=import").status_code == 200


def test_routes_without_parameters_refuse_any(alice):
    action_id = alice.post(ACTIONS, {"action_type": "test", "input": {"await_data": True}}, format="json").json()["id"]
    assert list(errors_of(alice.get(f"{ACTIONS}/{action_id}", {"verbose": "1"}))) == ["verbose"]
    assert list(errors_of(alice.post(f"{ACTIONS}/{action_id}/cancel?force=1"))) == ["force"]


@pytest.mark.parametrize("limit", ["0", "-5", "many", "1001", "1.5", "", "\u00b2", "1" * 5000])
def test_a_limit_outside_1_to_1000_is_a_400(alice, limit):
    assert "limit" in errors_of(alice.get(ACTIONS, {"limit": limit}))


def test_limit_takes_1_to_1000_and_defaults_to_50(alice):
    ImageAction.objects.bulk_create(ImageAction(action_type="test", owner="project-a") for _ in range(1005))
    assert len(alice.get(ACTIONS, {"limit": 1}).json()["results"]) == 1
    assert len(alice.get(ACTIONS, {"limit": 1000}).json()["results"]) == 1000
    first_page = alice.get(ACTIONS).json()
    assert len(first_page["results"]) == 50 and first_page["next"]


@pytest.mark.parametrize(
    "cursor", ["garbage", "cD0yMDMwLTAxLTAx", "%%%", "cD1ub3QtYS1kYXRl", "bz0tNQ==", "cj0xJnA9eA=="]
)
def test_a_cursor_this_list_did_not_hand_out_is_a_400(alice, cursor):
    alice.post(ACTIONS, {"action_type": "test", "input": {}}, format="json")
    errors = errors_of(alice.get(ACTIONS, {"cursor": cursor}))
    assert "next" in errors["cursor"][0]
