"""Expiry and purge of ended actions, and steps routed to their own worker pools."""

import json
import time
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from imageactions.models import ActionEvent, ImageAction

from .conftest import create_test_action, poll, step_runs, was_cleaned_up


def is_terminal(body):
    return body["status"] in ("success", "failure", "cancelled")


def test_ended_actions_expire_one_action_ttl_after_they_finish(alice, workers):
    succeeded = create_test_action(alice)
    failed = create_test_action(alice, work={"kind": "fail"})
    cancelled = create_test_action(alice, work={"kind": "sleep", "seconds": 30})
    poll(alice, cancelled, lambda body: body["status"] == "working")
    alice.post(f"/v2/image-actions/{cancelled}/cancel")
    for action_id, status in ((succeeded, "success"), (failed, "failure"), (cancelled, "cancelled")):
        body = poll(alice, action_id, is_terminal)
        assert body["status"] == status
        finished_at = datetime.fromisoformat(body["finished_at"])
        assert datetime.fromisoformat(body["expires_at"]) - finished_at == timedelta(seconds=settings.ACTION_TTL)


def test_purge_deletes_expired_actions_with_their_scratch_data_and_cleans_up(alice, start_workers, settings):
    settings.PURGE_INTERVAL = 2  # the test process ensures the schedules too (start_workers)
    workers = start_workers(env={"IMAGEACTIONS_PURGE_INTERVAL": "2"})
    expired = create_test_action(alice, work={"kind": "fail"})
    kept = create_test_action(alice, work={"kind": "fail"})
    for action_id in (expired, kept):
        assert poll(alice, action_id, is_terminal)["status"] == "failure"
        # What a clean-up that was interrupted would leave behind.
        (settings.SCRATCH_DIR / action_id).mkdir(parents=True)
        (settings.SCRATCH_DIR / action_id / "staged").write_bytes(b"leftover")
        (settings.DATA_DIR / "test-runs" / f"{action_id}.cleaned").unlink()
    ImageAction.objects.filter(pk=expired).update(expires_at=timezone.now() - timedelta(seconds=1))

    deadline = time.monotonic() + 15
    while ImageAction.objects.filter(pk=expired).exists():
        assert time.monotonic() < deadline, workers.log_tail()
        time.sleep(0.1)

    assert alice.get(f"/v2/image-actions/{expired}").status_code == 404
    assert not ActionEvent.objects.filter(action_id=expired).exists()
    assert not (settings.SCRATCH_DIR / expired).exists()
    assert was_cleaned_up(expired)
    assert alice.get(f"/v2/image-actions/{kept}").json()["status"] == "failure"
    assert (settings.SCRATCH_DIR / kept / "staged").exists()
    assert not was_cleaned_up(kept)


def test_step_mapped_to_another_pool_runs_only_on_that_pools_workers(alice, start_workers, settings):
    step_pools = {"test.work": "edge"}
    # Settings are read at import: the test process through pytest-django, workers through the environment.
    settings.STEP_POOLS = step_pools
    settings.WORKER_POOLS = ["default", "edge"]
    pools_env = {"IMAGEACTIONS_STEP_POOLS": json.dumps(step_pools)}
    default = start_workers(env=pools_env)
    action_id = create_test_action(alice)

    poll(alice, action_id, lambda body: ImageAction.objects.filter(pk=action_id, step_index=1).exists())
    time.sleep(1.5)
    assert [step for step, _, _ in step_runs(action_id)] == ["prepare"], "no default worker runs the edge step"
    assert not is_terminal(alice.get(f"/v2/image-actions/{action_id}").json())

    edge = start_workers(pool="edge", env=pools_env)
    body = poll(alice, action_id, is_terminal)
    assert body["status"] == "success", (body, edge.log_tail())
    ran_on = {step: pid for step, pid, _ in step_runs(action_id)}
    assert ran_on["work"] in edge.pids()
    assert ran_on["prepare"] in default.pids() and ran_on["wrap"] in default.pids()


def test_purge_interval_shorter_than_django_q2s_scheduler_tick_is_kept(alice, start_workers, settings):
    settings.PURGE_INTERVAL = 2
    workers = start_workers(env={"IMAGEACTIONS_PURGE_INTERVAL": "2"})
    ended = [create_test_action(alice) for _ in range(2)]
    for action_id in ended:
        assert poll(alice, action_id, is_terminal)["status"] == "success"

    # Twice: the schedule keeps its interval run after run, not only for its first run.
    for action_id in ended:
        ImageAction.objects.filter(pk=action_id).update(expires_at=timezone.now() - timedelta(seconds=1))
        expired_at = time.monotonic()
        while ImageAction.objects.filter(pk=action_id).exists():
            # django-q2's own scheduler tick alone would take up to 30 s.
            assert time.monotonic() - expired_at < 8, workers.log_tail()
            time.sleep(0.1)
