"""Helpers for the runner tests: create test actions through the API, read their run markers."""

import time
from collections import Counter
from pathlib import Path

from django.conf import settings


def create_test_action(client, **test_input) -> str:
    """POST a `test` action with the given input; returns its id."""
    response = client.post("/v2/image-actions", {"action_type": "test", "input": test_input}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()["id"]


def step_runs(action_id) -> list[tuple[str, int, Path]]:
    """(step, pid, marker) for each time a step of the action started, oldest first."""
    runs = []
    for marker in (settings.DATA_DIR / "test-runs").glob(f"{action_id}.*.*.*"):
        _, step, pid, started_ns = marker.name.split(".")
        runs.append((int(started_ns), step, int(pid), marker))
    return [(step, pid, marker) for _, step, pid, marker in sorted(runs)]


def step_run_counts(action_id) -> Counter:
    return Counter(step for step, _, _ in step_runs(action_id))


def was_cleaned_up(action_id) -> bool:
    return (settings.DATA_DIR / "test-runs" / f"{action_id}.cleaned").exists()


def poll(client, action_id, until, *, timeout=30, interval=0.05, seen=None) -> dict:
    """GET the action until `until(body)` holds; `seen` collects every status observed."""
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(f"/v2/image-actions/{action_id}").json()
        if seen is not None and (not seen or seen[-1] != body["status"]):
            seen.append(body["status"])
        if until(body):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"action {action_id} did not get there within {timeout}s: {body}")
        time.sleep(interval)


def wait_for_schedule_run(name: str, *, timeout=15) -> None:
    """Wait until a cluster queues the schedule `name` again (its task id changes), so a run of
    it starts after this call; the clusters run their schedules as soon as they are due."""
    from django_q.models import Schedule

    queued_before = Schedule.objects.get(name=name).task
    deadline = time.monotonic() + timeout
    while Schedule.objects.get(name=name).task == queued_before:
        assert time.monotonic() < deadline, f"schedule {name} was not run within {timeout} s"
        time.sleep(0.1)
