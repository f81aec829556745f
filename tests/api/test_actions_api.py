"""The /v2/image-actions resource through HTTP: create, errors, list filters, pagination, detail, cancel."""

import json
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
from django.conf import settings

from imageactions.models import ImageAction
from imageactions.pipeline import action_types

ACTIONS = "/v2/image-actions"
TYPE_ALIASES = {
    "import": "image-imports",
    "export": "image-exports",
    "clone": "image-clones",
    "convert": "image-conversions",
}


def create(client, input_data=None, *, path=ACTIONS, **body):
    body = {"action_type": "test", "input": {} if input_data is None else input_data, **body}
    response = client.post(path, body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def post_raw(client, body: bytes, content_type="application/json", **extra):
    return client.generic("POST", ACTIONS, body, content_type=content_type, **extra)


def assert_error_shape(response, status_code):
    assert response.status_code == status_code, response.content
    body = response.json()
    assert set(body) == {"code", "detail", "errors"}, body
    assert isinstance(body["detail"], str) and body["detail"]
    return body


# -- create --------------------------------------------------------------------------------


def test_create_answers_201_with_location_and_the_waiting_action(alice):
    response = alice.post(
        ACTIONS, {"action_type": "test", "input": {"work": {"kind": "sleep", "seconds": 1}}}, format="json"
    )
    assert response.status_code == 201
    body = response.json()
    assert response["Location"] == f"http://testserver/v2/image-actions/{body['id']}"
    assert body["status"] == "waiting"
    assert body["action_type"] == "test"
    assert body["input"]["work"] == {
        "kind": "sleep",
        "seconds": 1.0,
        "message": "the test step failed as asked",
        "failures": 1,
    }
    assert body["progress"] == {"step": None, "bytes_done": 0, "bytes_total": None, "percent": None}
    assert "owner" not in body
    assert alice.get(response["Location"]).json()["id"] == body["id"]


def test_create_accepts_the_path_with_a_trailing_slash(alice):
    assert alice.post(ACTIONS + "/", {"action_type": "test", "input": {}}, format="json").status_code == 201


def test_unknown_action_type_is_a_400_listing_the_known_types(alice):
    body = assert_error_shape(alice.post(ACTIONS, {"action_type": "teleport", "input": {}}, format="json"), 400)
    message = body["errors"]["action_type"][0]
    assert "'teleport'" in message
    for name in action_types():
        assert name in message
    assert body["detail"].startswith("action_type: ")


def test_missing_action_type_lists_the_known_types(alice):
    body = assert_error_shape(alice.post(ACTIONS, {"input": {}}, format="json"), 400)
    assert "test" in body["errors"]["action_type"][0]


def test_validation_errors_name_the_nested_field(alice):
    response = alice.post(ACTIONS, {"action_type": "test", "input": {"work": {"kind": "dance"}}}, format="json")
    body = assert_error_shape(response, 400)
    assert list(body["errors"]) == ["input.work.kind"]
    assert "dance" in body["errors"]["input.work.kind"][0]
    assert body["detail"].startswith("input.work.kind: ")


def test_missing_input_is_a_400_naming_input(alice):
    body = assert_error_shape(alice.post(ACTIONS, {"action_type": "test"}, format="json"), 400)
    assert list(body["errors"]) == ["input"]


@pytest.mark.parametrize("input_data", [[], "text", 3, None])
def test_input_that_is_not_an_object_is_a_400_naming_input(alice, input_data):
    body = assert_error_shape(alice.post(ACTIONS, {"action_type": "test", "input": input_data}, format="json"), 400)
    assert "input" in body["errors"]


def test_malformed_json_is_a_400(alice):
    body = assert_error_shape(post_raw(alice, b'{"action_type": "test", "input": {'), 400)
    assert "not valid JSON" in body["detail"]


@pytest.mark.parametrize("body", [b"[]", b'"import"', b"42", b"null", b"true"])
def test_a_json_body_that_is_not_an_object_is_a_400(alice, body):
    assert_error_shape(post_raw(alice, body), 400)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"])
def test_a_body_that_is_not_json_is_a_415(alice, content_type):
    body = assert_error_shape(post_raw(alice, b"action_type=test", content_type=content_type), 415)
    assert content_type in body["detail"]


def test_multipart_form_data_is_a_415(alice):
    assert_error_shape(alice.post(ACTIONS, {"action_type": "test", "input": "{}"}, format="multipart"), 415)


def test_a_body_larger_than_the_limit_is_a_413(alice):
    padding = "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 10)
    body = json.dumps({"action_type": "test", "input": {"padding": padding}}).encode()
    answer = assert_error_shape(post_raw(alice, body), 413)
    assert str(settings.DATA_UPLOAD_MAX_MEMORY_SIZE) in answer["detail"]


def test_a_content_length_above_the_limit_is_a_413_before_the_body_is_read(alice):
    response = post_raw(
        alice, b'{"action_type": "test", "input": {}}', CONTENT_LENGTH=str(settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)
    )
    assert_error_shape(response, 413)


def test_a_chunked_body_without_content_length_is_a_411_not_an_empty_body(alice):
    response = post_raw(
        alice, b'{"action_type": "test", "input": {}}', CONTENT_LENGTH="", HTTP_TRANSFER_ENCODING="chunked"
    )
    body = assert_error_shape(response, 411)
    assert "Content-Length" in body["detail"]


GARBAGE_BODIES = [
    b"",
    b"{",
    b"}",
    b"\x00\x01\x02\xff\xfe",
    b"\xef\xbb\xbf{}",  # a UTF-8 byte order mark
    '{"action_type": "t\u00e9st", "input": {}}'.encode("latin-1"),
    b'{"action_type": NaN, "input": {}}',
    b'{"action_type": "test", "input": {"work": {"seconds": Infinity}}}',
    b'{"action_type": "test", "input": {"work": {"seconds": 1e400}}}',
    b'{"action_type": "test", "input": {"work": {"seconds": -1}}}',
    b'{"action_type": "test", "input": {"work": {"seconds": "soon"}}}',
    b'{"action_type": "test", "input": {"work": {"failures": 1e30}}}',
    b'{"action_type": "test", "input": {"work": []}}',
    b'{"action_type": "test", "input": {"work": {"message": "a\\u0000b", "kind": "fail"}}}',
    b'{"action_type": "test", "input": {"skip_wrap": "perhaps"}}',
    b'{"action_type": "\\ud800", "input": {}}',
    b'{"action_type": {"name": "test"}, "input": {}}',
    b'{"action_type": ["test"], "input": {}}',
    b'{"action_type": 7, "input": {}}',
    b'{"action_type": null, "input": {}}',
    b'{"action_type": "", "input": {}}',
    b'{"action_type": "test", "input": "{}"}',
    b'{"action_type": "test", "input": {"work": {"kind": "ok"}}, "input": 5}',
    b'{"action_type": "' + b"a" * 100_000 + b'", "input": {}}',
    b"[" * 100_000 + b"]" * 100_000,
    b'{"input": ' * 5_000 + b"{}" + b"}" * 5_000,
    b'{"action_type": "test", "input": {"work": {"kind": ' + b'{"a": ' * 900 + b"1" + b"}" * 903,
    b'{"action_type": "test", "input": ' + b"[" * 990 + b"]" * 990 + b"}",
    b'{"action_type": "test", "input": {"work": {"kind": "ok", "seconds": 1' + b"0" * 5000 + b"}}}",
    b'{"action_type": "test", "input": {"work": {"kind": "ok", "failures": 1' + b"0" * 5000 + b"}}}",
    b"1" * 50_000,
]


@pytest.mark.parametrize("body", GARBAGE_BODIES, ids=lambda body: body[:40].decode("latin-1"))
def test_garbage_bodies_get_a_clean_4xx_never_a_500(alice, body):
    response = post_raw(alice, body)
    assert 400 <= response.status_code < 500, (response.status_code, response.content[:500])
    assert_error_shape(response, response.status_code)


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json; charset=no-such-charset",
        "application/json; charset=utf-16",
        "application/json; charset=utf-32",
        "application/jsonx",
        "",
        "*/*",
    ],
)
def test_odd_content_types_get_a_clean_answer(alice, content_type):
    response = post_raw(alice, b'{"action_type": "test", "input": {}}', content_type=content_type)
    assert response.status_code in (201, 400, 415), response.content


# -- per-type aliases --------------------------------------------------------------------------


@pytest.mark.parametrize(("action_type", "alias"), sorted(TYPE_ALIASES.items()))
def test_an_alias_exists_exactly_when_its_action_type_is_installed(alice, action_type, alias):
    response = alice.get(f"/v2/{alias}")
    if action_type in action_types():
        assert response.status_code == 200
        assert all(item["action_type"] == action_type for item in response.json()["results"])
        refused = alice.post(f"/v2/{alias}", {"action_type": "test", "input": {}}, format="json")
        body = assert_error_shape(refused, 400)
        assert f"'{action_type}'" in body["errors"]["action_type"][0]
    else:
        assert response.status_code == 404


def test_posting_to_an_alias_fixes_the_action_type(alice):
    response = alice.post("/v2/image-tests", {"input": {"skip_wrap": True}}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["action_type"] == "test" and body["input"]["skip_wrap"] is True
    assert response["Location"].endswith(f"/v2/image-actions/{body['id']}")
    assert alice.post("/v2/image-tests", {"action_type": "test", "input": {}}, format="json").status_code == 201


def test_an_alias_refuses_another_action_type_with_a_400(alice):
    body = assert_error_shape(alice.post("/v2/image-tests", {"action_type": "import", "input": {}}, format="json"), 400)
    assert "'test'" in body["errors"]["action_type"][0]


def test_an_alias_lists_and_shows_only_its_own_type(alice):
    own = create(alice)
    other = ImageAction.objects.create(action_type="other", owner="project-a")
    listed = [item["id"] for item in alice.get("/v2/image-tests").json()["results"]]
    assert listed == [own["id"]]
    assert alice.get(f"/v2/image-tests/{other.pk}").status_code == 404
    assert alice.get(f"/v2/image-tests/{own['id']}").status_code == 200


# -- list, filters, ordering, pagination ----------------------------------------------------------


def ids(response):
    assert response.status_code == 200, response.content
    return [item["id"] for item in response.json()["results"]]


def set_times(action_id, created_at, updated_at=None):
    ImageAction.objects.filter(pk=action_id).update(created_at=created_at, updated_at=updated_at or created_at)


def set_status(action_id, status):
    ImageAction.objects.filter(pk=action_id).update(status=status)


def test_list_shows_the_callers_actions_newest_first(alice, bob):
    first, second = create(alice), create(alice)
    create(bob)
    assert ids(alice.get(ACTIONS)) == [second["id"], first["id"]]


def test_list_filters_by_action_type_including_several(alice):
    mine = create(alice)
    other = ImageAction.objects.create(action_type="other", owner="project-a")
    assert ids(alice.get(ACTIONS, {"action_type": "test"})) == [mine["id"]]
    assert set(ids(alice.get(ACTIONS + "?action_type=test,other"))) == {mine["id"], str(other.pk)}
    assert set(ids(alice.get(ACTIONS + "?action_type=test&action_type=other"))) == {mine["id"], str(other.pk)}
    unknown = alice.get(ACTIONS, {"action_type": "nothing"})  # neither installed nor found: a typo
    assert unknown.status_code == 400 and "Unknown action type 'nothing'" in unknown.json()["errors"]["action_type"][0]


def test_list_filters_by_status_repeated_comma_separated_and_pending(alice):
    waiting, working, failed, succeeded = (create(alice)["id"] for _ in range(4))
    set_status(working, "working")
    set_status(failed, "failure")
    set_status(succeeded, "success")
    assert ids(alice.get(ACTIONS, {"status": "failure"})) == [failed]
    assert set(ids(alice.get(ACTIONS + "?status=failure,success"))) == {failed, succeeded}
    assert set(ids(alice.get(ACTIONS + "?status=failure&status=waiting"))) == {failed, waiting}
    assert set(ids(alice.get(ACTIONS, {"status": "pending"}))) == {waiting, working}
    assert set(ids(alice.get(ACTIONS + "?status=pending,success"))) == {waiting, working, succeeded}


def test_an_unknown_status_filter_is_a_400_listing_the_statuses(alice):
    body = assert_error_shape(alice.get(ACTIONS, {"status": "sleeping"}), 400)
    assert "'sleeping'" in body["errors"]["status"][0] and "pending" in body["errors"]["status"][0]


def test_list_filters_by_created_and_updated_dates(alice):
    base = datetime(2030, 1, 1, tzinfo=UTC)
    old, middle, new = (create(alice)["id"] for _ in range(3))
    set_times(old, base, base + timedelta(days=10))
    set_times(middle, base + timedelta(days=1))
    set_times(new, base + timedelta(days=2))
    assert set(ids(alice.get(ACTIONS, {"created_after": "2030-01-02T00:00:00Z"}))) == {middle, new}
    assert ids(alice.get(ACTIONS, {"created_before": "2030-01-02T00:00:00Z"})) == [old]
    assert ids(
        alice.get(
            ACTIONS, {"created_after": "2030-01-01T12:00:00+00:00", "created_before": "2030-01-02T12:00:00+00:00"}
        )
    ) == [middle]
    assert ids(alice.get(ACTIONS, {"updated_after": "2030-01-05T00:00:00Z"})) == [old]
    # A date in another offset means the same instant.
    assert ids(alice.get(ACTIONS, {"created_before": "2030-01-01T01:00:01+01:00"})) == [old]


@pytest.mark.parametrize("param", ["created_after", "created_before", "updated_after"])
@pytest.mark.parametrize("value", ["yesterday", "2030-13-01T00:00:00Z", "2030-01-01T25:00"])
def test_a_bad_date_filter_is_a_400_naming_the_parameter(alice, param, value):
    body = assert_error_shape(alice.get(ACTIONS, {param: value}), 400)
    assert list(body["errors"]) == [param]


def test_image_id_filter_needs_an_image_the_action_touched(alice):
    # The test action type declares no images; clone, export and convert tests filter real ones.
    create(alice)
    assert ids(alice.get(ACTIONS, {"image_id": str(uuid.uuid4())})) == []
    assert list(assert_error_shape(alice.get(ACTIONS, {"image_id": "nope"}), 400)["errors"]) == ["image_id"]


@pytest.mark.parametrize(
    ("ordering", "expected"),
    [
        ("created_at", ["a", "b", "c"]),
        ("-created_at", ["c", "b", "a"]),
        ("updated_at", ["c", "a", "b"]),
        ("-updated_at", ["b", "a", "c"]),
    ],
)
def test_list_orders_by_created_or_updated_time(alice, ordering, expected):
    base = datetime(2030, 1, 1, tzinfo=UTC)
    actions = {name: create(alice)["id"] for name in "abc"}
    set_times(actions["a"], base, base + timedelta(hours=5))
    set_times(actions["b"], base + timedelta(hours=1), base + timedelta(hours=6))
    set_times(actions["c"], base + timedelta(hours=2), base + timedelta(hours=3))
    assert ids(alice.get(ACTIONS, {"ordering": ordering})) == [actions[name] for name in expected]


@pytest.mark.parametrize("ordering", ["id", "owner", "created", "-message", "created_at,updated_at"])
def test_an_unknown_ordering_is_a_400(alice, ordering):
    body = assert_error_shape(alice.get(ACTIONS, {"ordering": ordering}), 400)
    assert list(body["errors"]) == ["ordering"]


def walk(client, url, params):
    """Follow `next` links to the end; returns every id seen, in order, and the page count."""
    seen, pages = [], 0
    response = client.get(url, params)
    while True:
        pages += 1
        seen += ids(response)
        next_link = response.json()["next"]
        if not next_link:
            return seen, pages
        parts = urlsplit(next_link)
        response = client.get(f"{parts.path}?{parts.query}")


@pytest.mark.parametrize("ordering", ["-created_at", "created_at"])
def test_cursor_pages_cover_every_action_once_even_with_equal_timestamps(alice, ordering):
    base = datetime(2030, 1, 1, tzinfo=UTC)
    created = [create(alice)["id"] for _ in range(120)]
    for index, action_id in enumerate(created):
        set_times(action_id, base + timedelta(seconds=index // 3))  # three actions share each second
    seen, pages = walk(alice, ACTIONS, {"limit": 7, "ordering": ordering})
    assert len(seen) == len(set(seen)) == 120
    assert set(seen) == set(created)
    assert pages == 18
    order = [created.index(action_id) // 3 for action_id in seen]
    assert order == sorted(order, reverse=ordering.startswith("-"))


def test_cursor_pages_of_a_filtered_list(alice):
    created = [create(alice)["id"] for _ in range(45)]
    failed = set(created[::3])
    for action_id in failed:
        set_status(action_id, "failure")
    seen, pages = walk(alice, ACTIONS, {"limit": 4, "status": "failure"})
    assert sorted(seen) == sorted(failed) and len(seen) == 15
    assert pages == 4
    pending, _ = walk(alice, ACTIONS, {"limit": 10, "status": "pending"})
    assert set(pending) == set(created) - failed and len(pending) == 30


# -- detail, cancel, isolation ---------------------------------------------------------------------


def test_detail_shows_the_action(alice):
    created = create(alice, {"skip_wrap": True})
    body = alice.get(f"{ACTIONS}/{created['id']}").json()
    assert body == created | {"updated_at": body["updated_at"]}


def test_cancel_of_a_waiting_action_is_a_202_and_cancels_it_at_once(alice):
    created = create(alice)
    response = alice.post(f"{ACTIONS}/{created['id']}/cancel")
    assert response.status_code == 202
    assert response.json()["status"] == "cancelled"
    assert response.json()["finished_at"] and response.json()["expires_at"]
    assert alice.get(f"{ACTIONS}/{created['id']}").json()["status"] == "cancelled"


@pytest.mark.parametrize("terminal", ["cancelled", "success", "failure"])
def test_cancel_of_an_ended_action_is_a_409_naming_its_status(alice, terminal):
    created = create(alice)
    set_status(created["id"], terminal)
    body = assert_error_shape(alice.post(f"{ACTIONS}/{created['id']}/cancel"), 409)
    assert terminal in body["detail"]


def test_another_projects_action_is_a_404_identical_to_a_missing_one(alice, bob):
    foreign = create(bob)["id"]
    missing = str(uuid.uuid4())
    for suffix, method in (("", "get"), ("/cancel", "post")):
        answer_foreign = getattr(alice, method)(f"{ACTIONS}/{foreign}{suffix}")
        answer_missing = getattr(alice, method)(f"{ACTIONS}/{missing}{suffix}")
        assert answer_foreign.status_code == answer_missing.status_code == 404
        assert answer_foreign.content == answer_missing.content
        assert_error_shape(answer_foreign, 404)
    assert ImageAction.objects.get(pk=foreign).status == "waiting"
    assert ids(alice.get(ACTIONS)) == []


@pytest.mark.parametrize("bad_id", ["not-a-uuid", "1", "%20", "00000000-0000-0000-0000-00000000000g"])
def test_a_malformed_action_id_is_the_same_json_404(alice, bad_id):
    answer = alice.get(f"{ACTIONS}/{bad_id}")
    assert answer.status_code == 404
    assert answer.content == alice.get(f"{ACTIONS}/{uuid.uuid4()}").content


def test_members_of_one_project_see_and_cancel_each_others_actions(alice, alice_colleague):
    created = create(alice)
    assert ids(alice_colleague.get(ACTIONS)) == [created["id"]]
    assert alice_colleague.post(f"{ACTIONS}/{created['id']}/cancel").status_code == 202


def test_staff_see_every_action_with_its_owner(alice, bob, operator):
    mine, theirs = create(alice)["id"], create(bob)["id"]
    assert operator.get(ACTIONS).json()["results"] == []  # its own project's, unless it asks for all
    listed = {item["id"]: item for item in operator.get(ACTIONS, {"all_projects": "true"}).json()["results"]}
    assert listed[mine]["owner"] == "project-a" and listed[theirs]["owner"] == "project-b"
    assert operator.get(f"{ACTIONS}/{theirs}").json()["owner"] == "project-b"
    assert "owner" not in bob.get(f"{ACTIONS}/{theirs}").json()
    own = create(operator)
    assert own["owner"] == "operators"


@pytest.mark.parametrize(
    ("method", "suffix", "expected"),
    [
        ("options", "", 200),
        ("head", "", 200),
        ("delete", "", 405),
        ("put", "", 405),
        ("patch", "", 405),
        ("options", "/{id}", 200),
        ("delete", "/{id}", 405),
        ("patch", "/{id}", 200),  # changes labels: without a body, none are changed
        ("put", "/{id}", 405),
        ("get", "/{id}/cancel", 405),
        ("delete", "/{id}/cancel", 405),
    ],
)
def test_other_methods_get_a_clean_answer(alice, method, suffix, expected):
    created = create(alice)
    response = getattr(alice, method)(ACTIONS + suffix.format(id=created["id"]))
    assert response.status_code == expected, response.content[:300]
    if expected >= 400:
        assert_error_shape(response, expected)
