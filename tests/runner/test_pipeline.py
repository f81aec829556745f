"""Steps run in order on real workers; failures, errors and retries end the way users are told."""

import json
import os
import time

import pytest
from django.conf import settings

from imageactions.models import ActionEvent, ImageAction
from tests.conftest import wait_for_action

from .conftest import create_test_action, poll, step_run_counts, step_runs, was_cleaned_up

TERMINAL = ("success", "failure", "cancelled")


def is_terminal(body):
    return body["status"] in TERMINAL


def test_steps_run_in_order_showing_each_steps_status(alice, workers):
    pause = {"kind": "sleep", "seconds": 0.6}
    action_id = create_test_action(alice, prepare=pause, work=pause, wrap=pause)
    seen = []
    body = poll(alice, action_id, is_terminal, seen=seen)
    assert body["status"] == "success", body
    assert [status for status in seen if status != "waiting"] == ["preparing", "working", "wrapping", "success"]
    assert body["result"]["steps_ran"] == ["prepare", "work", "wrap"]
    assert body["progress"]["percent"] == 100.0
    assert body["started_at"] and body["finished_at"]
    assert [step for step, _, _ in step_runs(action_id)] == ["prepare", "work", "wrap"]


def test_step_that_does_not_apply_is_skipped(alice, workers):
    action_id = create_test_action(alice, skip_wrap=True)
    body = poll(alice, action_id, is_terminal)
    assert body["status"] == "success", body
    assert body["result"]["steps_ran"] == ["prepare", "work"]
    assert "wrap" not in step_run_counts(action_id)


def test_failing_step_fails_the_action_with_its_message(alice, workers):
    action_id = create_test_action(
        alice, work={"kind": "fail", "message": "The source answered 404 for 'http://x/y'; check the URL."}
    )
    body = poll(alice, action_id, is_terminal)
    assert body["status"] == "failure"
    assert body["message"] == "The source answered 404 for 'http://x/y'; check the URL."
    assert body["expires_at"]
    assert step_run_counts(action_id) == {"prepare": 1, "work": 1}
    assert was_cleaned_up(action_id)


def test_unexpected_error_fails_with_a_generic_message_and_keeps_the_traceback_for_operators(alice, workers):
    action_id = create_test_action(alice, work={"kind": "raise"})
    body = poll(alice, action_id, is_terminal)
    assert body["status"] == "failure"
    assert "internal error stopped the action in its work step" in body["message"]
    raw = json.dumps(body)
    assert "unexpected test error" not in raw and "Traceback" not in raw and "RuntimeError" not in raw
    event = ActionEvent.objects.get(action_id=action_id, step="work")
    assert event.outcome == "error"
    assert event.traceback.startswith("Traceback")
    assert "RuntimeError: unexpected test error with internal details" in event.traceback
    assert was_cleaned_up(action_id)


def test_a_bug_in_finish_fails_the_action_at_once_not_as_a_dead_worker(alice, workers):
    started = time.monotonic()
    action_id = create_test_action(alice, finish_raises=True)
    body = poll(alice, action_id, is_terminal)
    assert body["status"] == "failure"
    assert time.monotonic() - started < 10  # not the reaper's minutes
    assert "internal error stopped the action after its wrap step" in body["message"]
    assert "unexpected test error" not in json.dumps(body)
    [event] = ActionEvent.objects.filter(action_id=action_id, outcome="error")
    assert "RuntimeError: unexpected test error in finish" in event.traceback
    assert step_run_counts(action_id) == {"prepare": 1, "work": 1, "wrap": 1}
    assert not ImageAction.objects.get(pk=action_id).result  # finish's transaction was rolled back
    assert was_cleaned_up(action_id)


@pytest.mark.parametrize("ending", ["fail", "cancel"])
def test_a_bug_in_clean_up_fails_the_action_as_an_internal_error_with_the_traceback_for_operators(
    alice, workers, ending
):
    if ending == "fail":
        action_id = create_test_action(
            alice, work={"kind": "fail", "message": "the input was wrong"}, clean_up_raises=True
        )
    else:
        action_id = create_test_action(alice, work={"kind": "sleep", "seconds": 30}, clean_up_raises=True)
        poll(alice, action_id, lambda body: body["status"] == "working")
        assert alice.post(f"/v2/image-actions/{action_id}/cancel").status_code == 202
    body = poll(alice, action_id, is_terminal)
    assert body["status"] == "failure", body
    if ending == "fail":  # the step's own message stays, for the user
        assert body["message"].startswith("the input was wrong")
    assert "internal error stopped the action while cleaning up after it" in body["message"]
    assert "unexpected test error" not in json.dumps(body)
    assert body["error_code"] == "internal_error"
    cause = {"cause_code": "step_failed"} if ending == "fail" else {}
    assert body["error_details"] == {"failed_in": "clean-up", **cause}
    [event] = ActionEvent.objects.filter(action_id=action_id, step="clean-up")
    assert event.outcome == "error" and "RuntimeError: unexpected test error in clean_up" in event.traceback
    assert not (settings.SCRATCH_DIR / action_id).exists()  # the scratch space went all the same


def test_retryable_error_is_retried_and_the_attempts_are_logged(alice, workers):
    action_id = create_test_action(alice, work={"kind": "flaky", "failures": 2})
    body = poll(alice, action_id, is_terminal)
    assert body["status"] == "success", body
    attempts = ActionEvent.objects.filter(action_id=action_id, step="work").order_by("attempt")
    assert [(e.attempt, e.outcome) for e in attempts] == [(1, "retry"), (2, "retry"), (3, "success")]
    assert [e.message for e in attempts[:2]] == ["transient failure 1", "transient failure 2"]
    assert step_run_counts(action_id)["work"] == 3


def test_retryable_error_past_the_steps_retries_fails_with_the_last_message(alice, workers):
    action_id = create_test_action(alice, work={"kind": "flaky", "failures": 3})
    body = poll(alice, action_id, is_terminal)
    assert body["status"] == "failure"
    assert body["message"] == "transient failure 3"
    outcomes = list(ActionEvent.objects.filter(action_id=action_id, step="work").values_list("outcome", flat=True))
    assert outcomes == ["retry", "retry", "failure"]
    assert "wrap" not in step_run_counts(action_id)


def test_progress_of_a_running_step_is_visible_through_the_api(alice, workers):
    action_id = create_test_action(alice, work={"kind": "progress", "seconds": 2})
    samples = []

    def collect(body):
        if body["status"] == "working":
            samples.append(body["progress"])
        return is_terminal(body)

    body = poll(alice, action_id, collect, interval=0.1)
    assert body["status"] == "success"
    done = [sample["bytes_done"] for sample in samples]
    assert len(set(done)) >= 4, samples
    assert done == sorted(done)
    # The total is unknown (null) until the step's first progress call.
    assert {sample["bytes_total"] for sample in samples if sample["bytes_done"]} == {20000}
    assert all(sample["step"] == "work" for sample in samples)
    middle = [s for s in samples if 0 < s["bytes_done"] < 20000]
    assert middle and all(s["percent"] == round(100 * s["bytes_done"] / 20000, 1) for s in middle)


def test_test_action_create_to_success_round_trip(alice, workers, record_property):
    """Figures for the README: the 3-step test action from POST to `success` on this profile."""
    import statistics

    wait_for_action(create_test_action(alice), workers=workers)  # warm the workers up
    times = []
    for _ in range(10):
        started = time.monotonic()
        action = wait_for_action(create_test_action(alice), timeout=30, workers=workers)
        times.append(time.monotonic() - started)
        assert action.status == "success"
    median = statistics.median(times)
    record_property("round_trip_median_s", median)
    print(f"create->success round trip: median {median:.3f}s, min {min(times):.3f}s, max {max(times):.3f}s")


def test_cancel_of_a_waiting_action_ends_it_at_once_and_its_queued_task_does_nothing(alice, start_workers):
    action_id = create_test_action(alice)
    response = alice.post(f"/v2/image-actions/{action_id}/cancel")
    assert response.status_code == 202
    assert response.json()["status"] == "cancelled"
    assert response.json()["message"] == "The action was cancelled."
    assert was_cleaned_up(action_id)
    workers = start_workers()
    # Tasks are taken in order, so once a later action is done the cancelled one's task was seen.
    assert wait_for_action(create_test_action(alice), workers=workers).status == "success"
    assert step_runs(action_id) == []
    assert alice.get(f"/v2/image-actions/{action_id}").json()["status"] == "cancelled"
    assert alice.post(f"/v2/image-actions/{action_id}/cancel").status_code == 409


def test_cancel_during_a_step_ends_as_cancelled_at_the_steps_next_progress_call(alice, workers):
    action_id = create_test_action(alice, work={"kind": "sleep", "seconds": 30})
    poll(alice, action_id, lambda body: body["status"] == "working" and body["progress"]["bytes_done"] > 0)
    scratch = settings.SCRATCH_DIR / action_id
    assert (scratch / "prepare.out").exists()
    asked = time.monotonic()
    response = alice.post(f"/v2/image-actions/{action_id}/cancel")
    assert response.status_code == 202
    body = poll(alice, action_id, is_terminal, timeout=5, interval=0.02)
    took = time.monotonic() - asked
    assert body["status"] == "cancelled" and body["message"] == "The action was cancelled."
    # The step reports progress every 0.1 s; the runner sees the cancel at the next report.
    assert took < 1.1, took
    assert was_cleaned_up(action_id)
    assert not scratch.exists()
    assert step_run_counts(action_id) == {"prepare": 1, "work": 1}
    event = ActionEvent.objects.get(action_id=action_id, step="work")
    assert event.outcome == "cancelled"


def test_uploaded_data_starts_a_held_action_and_a_second_upload_is_refused(alice, workers):
    action_id = create_test_action(alice, await_data=True)
    time.sleep(0.5)
    assert alice.get(f"/v2/image-actions/{action_id}").json()["status"] == "waiting"
    assert step_runs(action_id) == []
    data = os.urandom(300_000)
    response = alice.put(f"/v2/image-actions/{action_id}/data", data=data, content_type="application/octet-stream")
    assert response.status_code == 200, response.json()
    body = poll(alice, action_id, is_terminal)
    assert body["status"] == "success", body
    assert body["result"]["received"] == len(data)
    assert body["result"]["steps_ran"] == ["prepare", "work", "wrap"]
    again = alice.put(f"/v2/image-actions/{action_id}/data", data=b"more", content_type="application/octet-stream")
    assert again.status_code == 409
    assert again.json()["detail"] == "The action is not awaiting data (status 'success')."


def test_upload_to_an_action_that_does_not_await_data_is_refused(alice):
    action_id = create_test_action(alice)
    response = alice.put(f"/v2/image-actions/{action_id}/data", data=b"abc", content_type="application/octet-stream")
    assert response.status_code == 409


def test_cancel_of_a_held_action_ends_it_and_its_data_is_then_refused(alice):
    action_id = create_test_action(alice, await_data=True)
    assert alice.post(f"/v2/image-actions/{action_id}/cancel").json()["status"] == "cancelled"
    assert was_cleaned_up(action_id)
    response = alice.put(f"/v2/image-actions/{action_id}/data", data=b"abc", content_type="application/octet-stream")
    assert response.status_code == 409


def test_updated_at_moves_with_every_status_change_made_by_the_runner(alice, workers):
    created = alice.post("/v2/image-actions", {"action_type": "test", "input": {}}, format="json").json()
    from tests.conftest import wait_for_action

    wait_for_action(created["id"], workers=workers)
    finished = alice.get(f"/v2/image-actions/{created['id']}").json()
    assert finished["updated_at"] > created["updated_at"]
    assert finished["updated_at"] >= finished["finished_at"]
    listed = alice.get("/v2/image-actions", {"updated_after": finished["finished_at"]}).json()["results"]
    assert [a["id"] for a in listed] == [created["id"]]
