"""Restarts: a worker pool stopped with SIGTERM lets its running steps finish within the grace
period or hands them back to the queue at once; a stray stop signal harms no process."""

import os
import signal
import time
from pathlib import Path

from imageactions.choices import StepState
from imageactions.models import ActionEvent, ImageAction
from imageactions.runner.sentinel import KILL_AFTER_GRACE

from .conftest import create_test_action, poll, step_run_counts, step_runs

# Only a hand-back can explain a step that runs again within seconds: these pools' reapers would
# count a worker dead only after ten minutes without heartbeats.
SLOW_REAPER = {"IMAGEACTIONS_REAPER_INTERVAL": "600", "IMAGEACTIONS_HEARTBEAT_INTERVAL": "200"}


def is_terminal(body):
    return body["status"] in ("success", "failure", "cancelled")


def outcomes(action_id, step):
    return list(
        ActionEvent.objects.filter(action_id=action_id, step=step)
        .order_by("started_at")
        .values_list("outcome", flat=True)
    )


def wait_working(client, action_id):
    poll(client, action_id, lambda body: body["status"] == "working" and body["progress"]["bytes_done"] > 0)


def test_step_that_ends_within_the_grace_period_finishes_when_its_pool_stops(alice, start_workers):
    pool = start_workers(env={"IMAGEACTIONS_STOP_GRACE": "30", **SLOW_REAPER})
    action_id = create_test_action(alice, work={"kind": "sleep", "seconds": 3})
    wait_working(alice, action_id)

    took = pool.stop_gracefully()

    assert 1 < took < 20, took  # it waited for the step, not for the whole grace period
    assert outcomes(action_id, "work") == ["success"]
    action = ImageAction.objects.get(pk=action_id)
    # The stopping pool took no new step: the next one waits on the broker for the next pool.
    assert (action.step_index, action.step_state, action.restarts) == (2, StepState.QUEUED, 0)

    start_workers(env=SLOW_REAPER)
    assert poll(alice, action_id, is_terminal)["status"] == "success"
    assert step_run_counts(action_id) == {"prepare": 1, "work": 1, "wrap": 1}


def test_step_that_outlasts_the_grace_period_is_handed_back_at_once_and_runs_on_the_next_pool(alice, start_workers):
    pool = start_workers(env={"IMAGEACTIONS_STOP_GRACE": "1", **SLOW_REAPER})
    action_id = create_test_action(alice, work={"kind": "sleep", "seconds": 12})
    wait_working(alice, action_id)
    first_worker = ImageAction.objects.get(pk=action_id).worker

    took = pool.stop_gracefully()

    # Not the 12 s of the step: the grace second, then the hand-back at its next progress call.
    assert took < 9, took
    action = ImageAction.objects.get(pk=action_id)
    assert (action.step_index, action.step_state, action.run_token, action.restarts) == (1, "queued", None, 0)
    handed_back = ActionEvent.objects.get(action_id=action_id, step="work")
    assert handed_back.outcome == "handed back" and handed_back.finished_at is not None
    assert first_worker in handed_back.message and "handed back to the queue" in handed_back.message

    restarted_at = time.monotonic()
    start_workers(env=SLOW_REAPER)
    poll(alice, action_id, lambda body: step_run_counts(action_id)["work"] == 2, timeout=15)
    assert time.monotonic() - restarted_at < 10  # the next pool took it from the queue, no reaper involved
    body = poll(alice, action_id, is_terminal, timeout=30)
    assert body["status"] == "success", body
    assert step_run_counts(action_id) == {"prepare": 1, "work": 2, "wrap": 1}
    assert outcomes(action_id, "work") == ["handed back", "success"]
    assert ImageAction.objects.get(pk=action_id).restarts == 0  # a hand-back is no crash


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_stray_stop_signal_kills_no_process_of_a_pool_and_turns_no_worker_away(alice, workers):
    assert poll(alice, create_test_action(alice), is_terminal)["status"] == "success"  # the cluster is up
    processes = workers.pids()
    assert len(processes) >= 6  # the command, django-q2's sentinel, two workers, monitor, pusher
    for pid in processes:
        os.kill(pid, signal.SIGUSR1)
    time.sleep(1)
    assert all(_alive(pid) for pid in processes), workers.log_tail()

    action_id = create_test_action(alice, work={"kind": "sleep", "seconds": 1})
    assert poll(alice, action_id, is_terminal)["status"] == "success"
    assert step_run_counts(action_id) == {"prepare": 1, "work": 1, "wrap": 1}
    assert {pid for _, pid, _ in step_runs(action_id)} <= processes


def test_step_that_never_checks_in_is_killed_after_the_grace_and_recovered_so_the_stop_ends(alice, start_workers):
    pool = start_workers(env={"IMAGEACTIONS_STOP_GRACE": "1", **SLOW_REAPER})
    action_id = create_test_action(alice, work={"kind": "quiet", "seconds": 120})
    poll(alice, action_id, lambda body: body["status"] == "working")

    took = pool.stop_gracefully(timeout=60)

    assert 1 + KILL_AFTER_GRACE <= took < 1 + KILL_AFTER_GRACE + 10, took
    action = ImageAction.objects.get(pk=action_id)
    # Recovered as a lost worker (a restart counted), at once, not by the ten-minute reaper.
    assert (action.step_index, action.step_state, action.run_token, action.restarts) == (1, "queued", None, 1)
    lost = ActionEvent.objects.get(action_id=action_id, step="work")
    assert lost.outcome == "worker lost" and "was killed" in lost.message, lost.message
    assert alice.post(f"/v2/image-actions/{action_id}/cancel").status_code == 202
    assert ImageAction.objects.get(pk=action_id).status == "cancelled"
