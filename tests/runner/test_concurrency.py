"""Many workers and many clients at once: every step of every action runs exactly once."""

import json
import threading
import time
from collections import Counter

from django.conf import settings
from django.db import connection
from rest_framework.test import APIClient

from imageactions.choices import StepState
from imageactions.models import ImageAction
from imageactions.pipeline import get_action_type
from imageactions.runner import send_task

from .conftest import create_test_action, step_run_counts

ONCE_EACH = {"prepare": 1, "work": 1, "wrap": 1}
# A deployed API serves a bounded number of requests at once (gunicorn workers x threads, one
# database connection each); PostgreSQL's default max_connections is 100.
SERVER_REQUEST_SLOTS = 32


def wait_until_all_ended(action_ids, *, timeout, workers):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        statuses = Counter(ImageAction.objects.filter(pk__in=action_ids).values_list("status", flat=True))
        if sum(statuses[s] for s in ("success", "failure", "cancelled")) == len(action_ids):
            return statuses
        time.sleep(0.2)
    tails = "\n".join(pool.log_tail() for pool in workers)
    raise AssertionError(f"not all actions ended within {timeout}s: {statuses}\n{tails}")


def test_duplicate_tasks_for_a_step_on_several_clusters_run_the_step_once(alice, start_workers, settings):
    # The work step on a pool of its own: every step then goes through the queue (a worker runs
    # the next step of its own pool itself), and so can be duplicated there.
    step_pools = {"test.work": "edge"}
    settings.STEP_POOLS = step_pools
    settings.WORKER_POOLS = ["default", "edge"]
    pools_env = {"IMAGEACTIONS_STEP_POOLS": json.dumps(step_pools)}
    pause = {"kind": "sleep", "seconds": 0.3}
    action_ids = [create_test_action(alice, prepare=pause, work=pause, wrap=pause) for _ in range(8)]
    test_type = get_action_type("test")
    duplicated = set()

    def duplicate_queued_steps():
        """Send 3 more tasks for each step the moment the runner queues it."""
        for action_id, index in ImageAction.objects.filter(pk__in=action_ids, step_state=StepState.QUEUED).values_list(
            "pk", "step_index"
        ):
            if (action_id, index) not in duplicated:
                duplicated.add((action_id, index))
                for _ in range(3):
                    send_task(test_type, action_id, index, 1)

    duplicate_queued_steps()
    pools = [start_workers(pool=pool, workers=1, env=pools_env) for pool in ("default", "default", "edge", "edge")]
    deadline = time.monotonic() + 60
    while ImageAction.objects.filter(pk__in=action_ids, status__in=("success", "failure")).count() < len(action_ids):
        assert time.monotonic() < deadline, "\n".join(pool.log_tail() for pool in pools)
        duplicate_queued_steps()
        time.sleep(0.02)

    assert set(ImageAction.objects.filter(pk__in=action_ids).values_list("status", flat=True)) == {"success"}
    for action_id in action_ids:
        assert step_run_counts(action_id) == ONCE_EACH, action_id
    assert len(duplicated) >= len(action_ids) * 2, "duplicates were sent for most steps"
    refused = sum(pool.log_path.read_text().count("not claimed") for pool in pools)
    assert refused >= 3 * len(action_ids), "the duplicates reached workers and were turned away"


def test_200_concurrent_creates_are_all_accepted_and_each_action_runs_once(alice, start_workers):
    token = alice._credentials["HTTP_AUTHORIZATION"]
    count = 200
    start_together = threading.Barrier(count)
    server_slots = threading.Semaphore(SERVER_REQUEST_SLOTS)
    answers = [None] * count

    def create(slot):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=token)
        start_together.wait()
        with server_slots:
            try:
                response = client.post("/v2/image-actions", {"action_type": "test", "input": {}}, format="json")
                answers[slot] = (response.status_code, response.json())
            finally:
                connection.close()

    pools = [start_workers(workers=4)]
    threads = [threading.Thread(target=create, args=(slot,)) for slot in range(count)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    created_in = time.monotonic() - started

    assert Counter(code for code, _ in answers) == {201: count}, [a for a in answers if a[0] != 201][:3]
    action_ids = [body["id"] for _, body in answers]
    assert len(set(action_ids)) == count
    statuses = wait_until_all_ended(action_ids, timeout=120, workers=pools)
    ran_in = time.monotonic() - started
    assert statuses == {"success": count}
    runs = Counter()
    for action_id in action_ids:
        runs[tuple(sorted(step_run_counts(action_id).items()))] += 1
    assert runs == {tuple(sorted(ONCE_EACH.items())): count}
    print(
        f"{count} creates in {created_in:.1f}s; all {count} actions succeeded after {ran_in:.1f}s "
        f"({settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[1]})"
    )
