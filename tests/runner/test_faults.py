"""Recovery from dead workers (handed back at once by the cluster that saw the death, else by
the reaper), lost tasks, data that never came, and uploads whose API process died."""

import os
import signal
import time
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from imageactions.choices import StepState
from imageactions.models import ActionEvent, ImageAction
from imageactions.runner import REAPER_SCHEDULE, cluster_of, reap
from imageactions.runner.execution import claim_step

from .conftest import create_test_action, poll, step_run_counts, step_runs, wait_for_schedule_run, was_cleaned_up

# How long a run may go without a heartbeat before the reaper counts its worker dead.
STALE_AFTER = max(settings.REAPER_INTERVAL, 3 * settings.HEARTBEAT_INTERVAL)


def is_terminal(body):
    return body["status"] in ("success", "failure", "cancelled")


def kill_worker_running(client, action_id, workers) -> int:
    """Wait until the action's `work` step reports progress, then kill -9 the pool child running it."""
    poll(client, action_id, lambda body: body["status"] == "working" and body["progress"]["bytes_done"] > 0)
    pid = int(ImageAction.objects.get(pk=action_id).worker.rsplit(":", 1)[1])
    assert pid in workers.pids() and pid != workers.process.pid, "the step must run in a django-q2 pool child"
    os.kill(pid, signal.SIGKILL)
    return pid


def test_worker_killed_mid_step_is_replaced_and_the_step_runs_again_to_success(alice, start_workers):
    # Reaper and heartbeats this slow leave the cluster's hand-back as the only quick recovery.
    workers = start_workers(env={"IMAGEACTIONS_REAPER_INTERVAL": "600", "IMAGEACTIONS_HEARTBEAT_INTERVAL": "200"})
    action_id = create_test_action(alice, work={"kind": "sleep", "seconds": 3})
    killed_pid = kill_worker_running(alice, action_id, workers)
    killed_at_ns = time.monotonic_ns()
    body = poll(alice, action_id, is_terminal, timeout=30, interval=0.2)
    took = (time.monotonic_ns() - killed_at_ns) / 1e9
    assert body["status"] == "success", (body, workers.log_tail())
    # The cluster replaces the dead process within a guard cycle and hands the step back then.
    assert took < 10, took

    work_runs = [(pid, marker) for step, pid, marker in step_runs(action_id) if step == "work"]
    assert len(work_runs) == 2
    (first_pid, _), (second_pid, second_marker) = work_runs
    assert first_pid == killed_pid and second_pid != killed_pid
    assert int(second_marker.name.rsplit(".", 1)[1]) > killed_at_ns, "the step ran again only after the kill"
    assert step_run_counts(action_id) == {"prepare": 1, "work": 2, "wrap": 1}

    outcomes = list(ActionEvent.objects.filter(action_id=action_id, step="work").values_list("outcome", flat=True))
    assert outcomes == ["worker lost", "success"]
    assert ActionEvent.objects.filter(action_id=action_id, outcome="success").count() == 3
    assert ImageAction.objects.get(pk=action_id).restarts == 1


def test_worker_killed_with_no_restarts_left_fails_the_action_naming_the_step(alice, start_workers):
    workers = start_workers(env={"IMAGEACTIONS_MAX_STEP_RESTARTS": "0"})
    action_id = create_test_action(alice, work={"kind": "sleep", "seconds": 30})
    kill_worker_running(alice, action_id, workers)
    time.sleep(STALE_AFTER + 0.5)
    wait_for_schedule_run(REAPER_SCHEDULE)
    body = poll(alice, action_id, is_terminal, timeout=15, interval=0.2)
    assert body["status"] == "failure", (body, workers.log_tail())
    assert body["message"] == (
        "The worker running the work step stopped responding (once); the action was stopped. Try again later."
    )
    assert step_run_counts(action_id) == {"prepare": 1, "work": 1}
    assert was_cleaned_up(action_id)
    assert not (settings.SCRATCH_DIR / action_id).exists()


def test_queued_task_that_vanished_from_the_broker_is_queued_again_by_the_reaper(alice, start_workers):
    from django_q.brokers import get_broker

    action_id = create_test_action(alice)
    broker = get_broker(cluster_of(settings.DEFAULT_POOL))
    assert broker.queue_size() == 1
    broker.delete_queue()
    assert broker.queue_size() == 0
    workers = start_workers(env={"IMAGEACTIONS_QUEUED_TASK_TIMEOUT": "1"})
    time.sleep(1.5)
    assert alice.get(f"/v2/image-actions/{action_id}").json()["status"] == "waiting"
    wait_for_schedule_run(REAPER_SCHEDULE)
    body = poll(alice, action_id, is_terminal, timeout=15, interval=0.2)
    assert body["status"] == "success", (body, workers.log_tail())
    assert step_run_counts(action_id) == {"prepare": 1, "work": 1, "wrap": 1}


def test_held_action_that_gets_no_data_fails_by_itself_with_a_clear_message(alice, start_workers):
    workers = start_workers(env={"IMAGEACTIONS_DATA_WAIT_TIMEOUT": "2"})
    action_id = create_test_action(alice, await_data=True)
    time.sleep(2.5)
    wait_for_schedule_run(REAPER_SCHEDULE)
    body = poll(alice, action_id, is_terminal, timeout=15, interval=0.2)
    assert body["status"] == "failure", (body, workers.log_tail())
    assert body["message"] == (
        "No data was uploaded within 2 seconds of creating the action; "
        "create a new action and PUT the data to it promptly."
    )
    assert body["expires_at"]
    assert step_runs(action_id) == []
    assert was_cleaned_up(action_id)


def test_held_action_that_gets_no_data_and_whose_clean_up_fails_says_so_as_an_internal_error(alice, start_workers):
    # Ended by the reaper while no worker held it: the clean-up runs after the end, and its
    # fault is told as when a worker ends an action (message, code, details).
    workers = start_workers(env={"IMAGEACTIONS_DATA_WAIT_TIMEOUT": "2"})
    action_id = create_test_action(alice, await_data=True, clean_up_raises=True)
    time.sleep(2.5)
    wait_for_schedule_run(REAPER_SCHEDULE)
    body = poll(alice, action_id, lambda body: is_terminal(body) and body["error_code"] == "internal_error", timeout=15)
    assert body["status"] == "failure", (body, workers.log_tail())
    assert body["message"].startswith("No data was uploaded within 2 seconds of creating the action; ")
    assert "internal error stopped the action while cleaning up after it" in body["message"]
    assert body["error_details"] == {"failed_in": "clean-up", "cause_code": "data_not_received"}


def test_cancel_of_an_action_whose_worker_died_ends_it_as_cancelled(alice, workers):
    action_id = create_test_action(alice, work={"kind": "sleep", "seconds": 30})
    kill_worker_running(alice, action_id, workers)
    # No worker is left to notice the cancel, so only the flag is set.
    assert alice.post(f"/v2/image-actions/{action_id}/cancel").status_code == 202
    time.sleep(STALE_AFTER + 0.5)
    wait_for_schedule_run(REAPER_SCHEDULE)
    body = poll(alice, action_id, is_terminal, timeout=15, interval=0.2)
    assert body["status"] == "cancelled", (body, workers.log_tail())
    assert body["message"] == "The action was cancelled."
    assert step_run_counts(action_id) == {"prepare": 1, "work": 1}
    assert was_cleaned_up(action_id)


def test_step_that_outlived_its_time_limit_fails_naming_the_limit_instead_of_restarting(alice, transactional_db):
    """django-q2 kills a task past its timeout; the reaper must not restart a step that would only die again."""
    import uuid
    from datetime import timedelta

    from django.utils import timezone

    from imageactions.models import ActionEvent, ImageAction
    from imageactions.runner import reap

    action_id = alice.post("/v2/image-actions", {"action_type": "test", "input": {}}, format="json").json()["id"]
    long_ago = timezone.now() - timedelta(hours=2)
    ImageAction.objects.filter(pk=action_id).update(
        step_state="running", status="preparing", run_token=uuid.uuid4(), worker="gone:1", heartbeat_at=long_ago
    )
    ActionEvent.objects.create(action_id=action_id, step="prepare", status="preparing", started_at=long_ago)

    reap()

    body = alice.get(f"/v2/image-actions/{action_id}").json()
    assert body["status"] == "failure"
    assert "prepare step did not finish within its time limit of 60 minutes" in body["message"]
    assert ActionEvent.objects.get(action_id=action_id).outcome == "timed out"


def test_upload_whose_api_process_died_is_failed_by_the_reaper_not_given_to_a_worker(alice, transactional_db):
    action_id = create_test_action(alice, await_data=True)
    # What PUT .../data does in an API process, which is then killed mid-upload.
    assert claim_step(action_id, 0, 1, from_state=StepState.HELD)
    ActionEvent.objects.create(action_id=action_id, step="prepare", status="preparing", started_at=timezone.now())
    ImageAction.objects.filter(pk=action_id).update(
        worker="api-host:4242", heartbeat_at=timezone.now() - timedelta(hours=1)
    )

    assert reap()["failed"] == 1

    action = ImageAction.objects.get(pk=action_id)
    assert (action.status, action.step_state, action.restarts) == ("failure", StepState.DONE, 0)
    assert "upload was interrupted" in action.message and "upload the data again" in action.message
    assert "api-host:4242" in action.message
    event = ActionEvent.objects.get(action_id=action_id)
    assert event.outcome == "upload lost" and event.finished_at is not None
