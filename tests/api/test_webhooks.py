"""Webhooks: an action's notify_url gets a signed POST for each change of its status, in order,
retried with growing delays, under the URL policy; tried through the API with real workers and a
receiver on 127.0.0.1 (the tests' URL policy lets loopback through, as for import sources)."""

import json
import re
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest

from imageactions.models import WebhookDelivery
from imageactions.policy import rules
from tests.http_servers import LoopbackHandler, LoopbackServer
from tests.import_.conftest import ImageServer, import_body, random_image
from tests.runner.conftest import poll, step_run_counts

ACTIONS = "/v2/image-actions"
SECRET = "/v2/info/webhook-secret"
README = Path(__file__).resolve().parents[2] / "README.md"
# Short retries for the tests: 3 attempts, 0.5 s then 1 s apart, 2 s each at most.
WEBHOOK_ENV = {"IMAGEACTIONS_WEBHOOK_ATTEMPTS": "3", "IMAGEACTIONS_WEBHOOK_RETRY_DELAY": "0.5"}


class Receiver(LoopbackServer):
    """Records every POST; /ok/KEY answers 204, /flaky/N/KEY answers 500 N times then 200,
    /down/KEY always 500."""

    def __init__(self):
        super().__init__(ReceiverHandler)
        self.lock = threading.Lock()
        self.received: dict[str, list[dict]] = {}

    def hook(self, kind: str, host: str = "127.0.0.1") -> str:
        return self.url(f"/{kind}/{uuid.uuid4().hex}", host=host)

    def requests_to(self, url: str) -> list[dict]:
        path = re.sub(r"^http://[^/]+", "", url)
        with self.lock:
            return list(self.received.get(path, []))

    def events(self, url: str) -> list[dict]:
        """The notifications that were answered with a 2xx, in the order they came."""
        return [json.loads(request["body"]) for request in self.requests_to(url) if request["answer"] < 300]


class ReceiverHandler(LoopbackHandler):
    owner: Receiver

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        segments = self.path.strip("/").split("/")
        with self.owner.lock:
            earlier = self.owner.received.setdefault(self.path, [])
            if segments[0] == "ok":
                answer = 204
            elif segments[0] == "flaky":
                answer = 500 if len(earlier) < int(segments[1]) else 200
            elif segments[0] == "trickle":
                answer = 599  # never finished: the status line, then a header a byte at a time
            else:
                answer = 500
            earlier.append({"headers": dict(self.headers), "body": body, "at": time.monotonic(), "answer": answer})
        if answer == 599:
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            try:
                for _ in range(100):
                    self.wfile.write(b"X")
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                pass  # the sender gave up, as it should
            return
        self.send_response(answer)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture(scope="session")
def receiver():
    with Receiver().serving() as server:
        yield server


@pytest.fixture(scope="session")
def image_files():
    with ImageServer().serving() as server:
        yield server


@pytest.fixture
def hook_workers(start_workers, settings):
    """A worker pool that retries notifications after 0.5 s and 1 s, and gives up after 3 attempts."""
    settings.WEBHOOK_ATTEMPTS, settings.WEBHOOK_RETRY_DELAY = 3, 0.5  # the schedules made here

    def start(**env):
        return start_workers(env={**WEBHOOK_ENV, **env})

    return start


@pytest.fixture
def verify_signature():
    """The README's verification function, run as a receiver would copy it."""
    text = README.read_text()
    code = next(block for block in re.findall(r"```python\n(.*?)```", text, re.S) if "def verify_signature" in block)
    namespace = {}
    exec(code, namespace)
    return namespace["verify_signature"]


def wait_until(check, *, timeout=30, what="the notifications"):
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"{what} did not come within {timeout} s"
        time.sleep(0.05)
    return result


def held_action(client, receiver_url: str, **headers) -> str:
    """A test action that waits for data (a created notification, then nothing until cancelled)."""
    body = {"action_type": "test", "input": {"await_data": True}, "notify_url": receiver_url}
    response = client.post(ACTIONS, body, format="json", **headers)
    assert response.status_code == 201, response.json()
    return response.json()["id"]


def deliveries(client, action_id) -> list[dict]:
    response = client.get(f"{ACTIONS}/{action_id}/deliveries")
    assert response.status_code == 200, response.json()
    return response.json()


def ended(client, action_id) -> list[dict]:
    """The action's deliveries once none is pending any more."""
    return wait_until(
        lambda: (found := deliveries(client, action_id)) and all(d["state"] != "pending" for d in found) and found
    )


def test_a_successful_import_notifies_each_status_in_order_signed_with_the_project_secret(
    alice, hook_workers, receiver, image_files, verify_signature
):
    hook_workers()
    hook = receiver.hook("ok")
    location = image_files.add(f"{uuid.uuid4().hex}.img", random_image(256 * 1024))
    response = alice.post(ACTIONS, {**import_body({"location": location}), "notify_url": hook}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["notify_url"] == hook
    action_id = response.json()["id"]
    events = wait_until(lambda: (found := receiver.events(hook)) and found[-1]["type"] == "action.ended" and found)
    assert [event["action"]["status"] for event in events] == [
        "waiting",
        "uploading",
        "verifying",
        "storing",
        "success",
    ]
    assert [event["type"] for event in events] == ["action.created", *["action.status_changed"] * 3, "action.ended"]
    assert [event["sequence"] for event in events] == [1, 2, 3, 4, 5]
    assert [event["previous_status"] for event in events] == [None, "waiting", "uploading", "verifying", "storing"]
    final = poll(alice, action_id, lambda body: body["status"] == "success")
    assert events[-1]["action"]["result"] == final["result"] and events[-1]["action"]["id"] == action_id
    assert events[-1]["action"]["finished_at"] == final["finished_at"]

    secret = alice.get(SECRET).json()["secret"]
    for request in receiver.requests_to(hook):
        headers, event = request["headers"], json.loads(request["body"])
        assert verify_signature(secret, request["body"], headers["X-ImageActions-Signature"])
        assert headers["X-ImageActions-Event-Id"] == event["id"]
        assert headers["X-ImageActions-Event"] == event["type"]
        assert headers["Content-Type"] == "application/json"
    assert len({event["id"] for event in events}) == 5

    shown = ended(alice, action_id)
    assert [(d["sequence"], d["state"], len(d["attempts"])) for d in shown] == [
        (n, "delivered", 1) for n in range(1, 6)
    ]
    assert shown[0]["attempts"][0]["status_code"] == 204 and shown[0]["attempts"][0]["outcome"] == "delivered"
    assert [d["event_id"] for d in shown] == [event["id"] for event in events]
    assert shown[-1]["payload"] == events[-1]


def test_the_signature_check_refuses_a_changed_body_another_secret_and_an_old_timestamp(
    alice, hook_workers, receiver, verify_signature
):
    hook_workers()
    hook = receiver.hook("ok")
    held_action(alice, hook)
    request = wait_until(lambda: receiver.requests_to(hook))[0]
    secret, header = alice.get(SECRET).json()["secret"], request["headers"]["X-ImageActions-Signature"]
    timestamp = int(re.match(r"t=(\d+),v1=[0-9a-f]{64}$", header).group(1))
    assert abs(timestamp - time.time()) < 30
    assert verify_signature(secret, request["body"], header)
    assert not verify_signature(secret, request["body"].replace(b"waiting", b"success"), header)
    assert not verify_signature("another secret", request["body"], header)
    assert not verify_signature(secret, request["body"], header, now=timestamp + 301)  # a replay, too late
    assert not verify_signature(secret, request["body"], "v1=0")


def test_a_failed_import_through_the_alias_ends_with_a_notification_carrying_its_error_code(
    alice, hook_workers, receiver, image_files
):
    hook_workers()
    hook = receiver.hook("ok")
    body = {"input": import_body({"location": image_files.url("/status/404")})["input"], "notify_url": hook}
    response = alice.post("/v2/image-imports", body, format="json")
    assert response.status_code == 201, response.json()
    events = wait_until(lambda: (found := receiver.events(hook)) and found[-1]["type"] == "action.ended" and found)
    last = events[-1]["action"]
    assert last["status"] == "failure" and last["error_code"] == "source_not_found"
    assert "404" in last["message"]
    assert [event["action"]["status"] for event in events] == ["waiting", "uploading", "failure"]


def test_a_step_tried_again_in_the_same_status_is_no_change(alice, hook_workers, receiver):
    hook_workers()
    hook = receiver.hook("ok")
    body = {"action_type": "test", "input": {"work": {"kind": "flaky", "failures": 1}}, "notify_url": hook}
    response = alice.post(ACTIONS, body, format="json")
    assert response.status_code == 201, response.json()
    events = wait_until(lambda: (found := receiver.events(hook)) and found[-1]["type"] == "action.ended" and found)
    assert [event["action"]["status"] for event in events] == ["waiting", "preparing", "working", "wrapping", "success"]
    assert step_run_counts(response.json()["id"])["work"] == 2


def test_a_cancel_from_the_api_is_notified(alice, hook_workers, receiver):
    hook_workers()
    hook = receiver.hook("ok")
    action_id = held_action(alice, hook)
    assert alice.post(f"{ACTIONS}/{action_id}/cancel").status_code == 202
    events = wait_until(lambda: len(found := receiver.events(hook)) == 2 and found)
    assert [(event["type"], event["action"]["status"]) for event in events] == [
        ("action.created", "waiting"),
        ("action.ended", "cancelled"),
    ]
    assert events[1]["action"]["message"] == "The action was cancelled."


def test_a_receiver_that_fails_twice_gets_three_attempts_with_growing_delays_and_the_rest_in_order(
    alice, hook_workers, receiver
):
    hook_workers()
    hook = receiver.hook("flaky/2")
    action_id = held_action(alice, hook)
    wait_until(lambda: receiver.events(hook))
    assert alice.post(f"{ACTIONS}/{action_id}/cancel").status_code == 202
    shown = ended(alice, action_id)
    first, second = shown
    assert first["state"] == "delivered" and second["state"] == "delivered"
    assert [(a["status_code"], a["outcome"]) for a in first["attempts"]] == [
        (500, "http_error"),
        (500, "http_error"),
        (200, "delivered"),
    ]
    assert "500" in first["attempts"][0]["error"]
    # At least 0.5 s, then at least 1 s (the sweep that sends them runs every 0.5 s, so later).
    at = [datetime.fromisoformat(a["at"]) for a in first["attempts"]]
    assert (at[1] - at[0]).total_seconds() >= 0.5 and (at[2] - at[1]).total_seconds() >= 1.0
    requests = receiver.requests_to(hook)
    assert [json.loads(r["body"])["sequence"] for r in requests] == [1, 1, 1, 2]  # never the second first


def test_a_receiver_that_never_answers_2xx_is_given_up_after_the_last_attempt(alice, hook_workers, receiver):
    hook_workers()
    hook = receiver.hook("down")
    action_id = held_action(alice, hook)
    alice.post(f"{ACTIONS}/{action_id}/cancel")
    shown = ended(alice, action_id)
    assert [(d["event_type"], d["state"], len(d["attempts"])) for d in shown] == [
        ("action.created", "given_up", 3),
        ("action.ended", "given_up", 3),
    ]
    assert shown[0]["next_attempt_at"] is None and shown[0]["finished_at"]
    assert len(receiver.requests_to(hook)) == 6


def test_a_receiver_that_trickles_its_answer_is_cut_off_at_the_timeout_of_the_whole_attempt(
    alice, hook_workers, receiver
):
    hook_workers(IMAGEACTIONS_WEBHOOK_TIMEOUT="1")
    hook = receiver.hook("trickle")
    action_id = held_action(alice, hook)
    alice.post(f"{ACTIONS}/{action_id}/cancel")
    shown = ended(alice, action_id)
    attempts = [attempt for delivery in shown for attempt in delivery["attempts"]]
    assert attempts and {attempt["outcome"] for attempt in attempts} == {"timed_out"}
    # Each byte came within the per-read timeout; the attempt as a whole was stopped at 1 s.
    assert all(attempt["duration_ms"] < 2500 for attempt in attempts), attempts


@pytest.mark.parametrize("url", ["http://a..b.example.org/hook", "http://" + "a" * 64 + ".example.org/hook"])
def test_a_notify_url_whose_host_is_no_valid_name_is_a_422_at_create_and_in_a_dry_run(alice, url):
    body = {"action_type": "test", "input": {}, "notify_url": url}
    for query in ("", "?dry_run=true"):
        response = alice.post(ACTIONS + query, body, format="json")
        assert response.status_code == 422, response.json()
        assert response.json()["code"] == "url_not_allowed"
        assert "is not a valid host name" in response.json()["errors"]["notify_url"][0]


def test_a_notify_url_that_is_no_string_is_a_400(alice):
    response = alice.post(ACTIONS, {"action_type": "test", "input": {}, "notify_url": 12345}, format="json")
    assert response.status_code == 400
    assert response.json()["errors"] == {"notify_url": ["Expected a string, got a number."]}


def test_a_notify_url_resolving_to_a_refused_address_is_refused_at_delivery_without_a_connection(
    alice, hook_workers, receiver
):
    # The API lets loopback through (the tests' policy); the workers refuse 127.0.0.1, which
    # `localhost` resolves to, so the name passes at create and its address fails at delivery.
    hook_workers(IMAGEACTIONS_URL_ALLOWED_NETWORKS="127.0.0.2/32")
    hook = receiver.hook("ok", host="localhost")
    action_id = held_action(alice, hook)
    (shown,) = ended(alice, action_id)
    assert shown["state"] == "given_up"
    assert {a["outcome"] for a in shown["attempts"]} == {"url_not_allowed"}
    assert "loopback addresses are refused" in shown["attempts"][0]["error"]
    assert shown["attempts"][0]["status_code"] is None
    assert receiver.requests_to(hook) == []


@pytest.mark.parametrize(
    "url",
    ["http://10.0.0.5/hook", "http://169.254.169.254/latest", "file:///etc/passwd", "http://user:pw@example.org/"],
)
def test_a_notify_url_the_url_policy_refuses_is_a_422_at_create_and_in_a_dry_run(alice, url):
    body = {"action_type": "test", "input": {}, "notify_url": url}
    for query in ("", "?dry_run=true"):
        response = alice.post(ACTIONS + query, body, format="json")
        assert response.status_code == 422, response.json()
        assert response.json()["code"] == "url_not_allowed"
        assert "notify_url" in response.json()["errors"]
    assert not WebhookDelivery.objects.exists()


def test_a_loopback_notify_url_is_refused_at_create_when_the_policy_refuses_loopback(alice, settings):
    settings.URL_ALLOWED_NETWORKS = []
    body = {"action_type": "test", "input": {}, "notify_url": "http://127.0.0.1:9/hook"}
    response = alice.post("/v2/image-tests", body, format="json")
    assert response.status_code == 422
    assert response.json()["code"] == "url_not_allowed"
    assert response.json()["errors"]["notify_url"] == [
        "The url 'http://127.0.0.1:9/hook' is not allowed: loopback addresses are refused."
    ]


def test_a_dry_run_with_a_notify_url_creates_and_sends_nothing(alice, receiver):
    body = {"action_type": "test", "input": {}, "notify_url": receiver.hook("ok")}
    response = alice.post(f"{ACTIONS}?dry_run=true", body, format="json")
    assert response.status_code == 200 and response.json()["notify_url"] == body["notify_url"]
    assert not WebhookDelivery.objects.exists()


def test_an_idempotent_replay_sends_no_other_notification(alice, receiver):
    hook = receiver.hook("ok")
    first = held_action(alice, hook, HTTP_IDEMPOTENCY_KEY="hook-1")
    replay = alice.post(
        ACTIONS,
        {"action_type": "test", "input": {"await_data": True}, "notify_url": hook},
        format="json",
        HTTP_IDEMPOTENCY_KEY="hook-1",
    )
    assert replay.status_code == 201 and replay.json()["id"] == first
    assert [d["event_type"] for d in deliveries(alice, first)] == ["action.created"]
    assert WebhookDelivery.objects.count() == 1


def test_an_action_without_notify_url_has_no_deliveries(alice):
    action_id = alice.post(ACTIONS, {"action_type": "test", "input": {"await_data": True}}, format="json").json()["id"]
    assert alice.get(f"{ACTIONS}/{action_id}").json()["notify_url"] is None
    alice.post(f"{ACTIONS}/{action_id}/cancel")
    assert deliveries(alice, action_id) == []


def test_another_project_cannot_see_the_deliveries(alice, bob, alice_colleague, receiver):
    action_id = held_action(alice, receiver.hook("ok"))
    assert bob.get(f"{ACTIONS}/{action_id}/deliveries").status_code == 404
    assert len(deliveries(alice_colleague, action_id)) == 1
    assert alice.get(f"{ACTIONS}/{action_id}/deliveries", {"limit": 1}).status_code == 400


def test_rotating_the_secret_changes_the_signatures(alice, bob, hook_workers, receiver, verify_signature):
    hook_workers()
    before = alice.get(SECRET).json()
    assert alice.get(SECRET).json() == before and bob.get(SECRET).json()["secret"] != before["secret"]
    rotated = alice.post(SECRET)
    assert rotated.status_code == 200 and rotated.json()["rotated_at"]
    after = rotated.json()["secret"]
    assert after != before["secret"] and alice.get(SECRET).json()["secret"] == after
    hook = receiver.hook("ok")
    held_action(alice, hook)
    request = wait_until(lambda: receiver.requests_to(hook))[0]
    header = request["headers"]["X-ImageActions-Signature"]
    assert verify_signature(after, request["body"], header)
    assert not verify_signature(before["secret"], request["body"], header)


@pytest.mark.parametrize("body", [5, True, [[1]], [{}], {"secret": "mine"}])
def test_a_rotation_with_any_body_is_a_400_and_the_secret_is_never_cached(alice, body):
    assert alice.post(SECRET, body, format="json").status_code == 400
    shown = alice.get(SECRET)
    assert shown.status_code == 200 and shown["Cache-Control"] == "no-store"


def test_the_secret_is_for_members_by_policy_and_its_rotation_takes_no_input(alice, operator, settings, tmp_path):
    assert alice.post(SECRET, {"secret": "mine"}, format="json").status_code == 400
    assert alice.get(SECRET, {"x": 1}).status_code == 400
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"webhook_secret": ["admin"]}))
    settings.POLICY_FILE = str(path)
    rules.cache_clear()
    try:
        assert alice.get(SECRET).status_code == 403
        assert alice.post(SECRET).status_code == 403
        assert operator.get(SECRET).status_code == 200
    finally:
        rules.cache_clear()


def test_operators_see_every_projects_notifications_and_secrets_in_the_admin(alice, admin_client, receiver):
    hook = receiver.hook("ok")
    action_id = held_action(alice, hook)
    secret = alice.get(SECRET).json()["secret"]
    delivery = WebhookDelivery.objects.get(action_id=action_id)
    page = admin_client.get(f"/admin/imageactions/imageaction/{action_id}/change/")
    assert page.status_code == 200 and str(delivery.event_id) in page.content.decode()
    listing = admin_client.get("/admin/imageactions/webhookdelivery/", {"state": "pending"})
    assert listing.status_code == 200 and [d.pk for d in listing.context["cl"].result_list] == [delivery.pk]
    assert admin_client.get(f"/admin/imageactions/webhookdelivery/{delivery.pk}/change/").status_code == 200
    secrets = admin_client.get("/admin/imageactions/webhooksecret/", {"q": "project-a"})
    assert [s.secret for s in secrets.context["cl"].result_list] == [secret]
