"""PostgreSQL and Redis restarted under a running deployment (gunicorn and worker processes on
private servers): workers reconnect, and every action still ends `success` exactly once."""

import time

import redis
import requests

from .conftest import embedded_only, wait_until

pytestmark = embedded_only

TERMINAL = ("success", "failure", "cancelled")


def wait_for_all(app, action_ids, *, timeout):
    """Poll the API until every action ended."""
    deadline = time.monotonic() + timeout
    while True:
        bodies = {action_id: _get(app, action_id) for action_id in action_ids}
        if all(body and body["status"] in TERMINAL for body in bodies.values()):
            return bodies
        assert time.monotonic() < deadline, f"not all ended: {bodies}\n{app.log_tail()}"
        time.sleep(0.3)


def _get(app, action_id):
    try:
        return app.action(action_id)
    except (AssertionError, requests.RequestException):  # the API's database may be restarting
        return None


def test_postgresql_restart_while_steps_run_lets_every_action_finish(private_postgres, deployment):
    private_postgres.create_database("imageactions")
    # The reaper every 3 s: the clusters run it that often by themselves.
    app = deployment(
        {"IMAGEACTIONS_DATABASE_URL": private_postgres.url("imageactions"), "IMAGEACTIONS_REAPER_INTERVAL": "3"}
    )
    app.start_api()
    app.start_workers(workers=4)
    action_ids = [app.create_test_action(work={"kind": "sleep", "seconds": 4}) for _ in range(4)]
    wait_until(
        lambda: all(app.action(a)["status"] == "working" for a in action_ids),
        timeout=30,
        what="all four actions sleeping in their work step",
        interval=0.1,
    )

    private_postgres.restart()
    restarted_at = time.monotonic()

    bodies = wait_for_all(app, action_ids, timeout=60)
    took = time.monotonic() - restarted_at
    assert {body["status"] for body in bodies.values()} == {"success"}, (bodies, app.log_tail())
    for action_id in action_ids:
        counts = app.step_run_counts(action_id)
        assert counts["prepare"] == 1 and counts["wrap"] == 1 and counts["work"] in (1, 2), counts
    print(
        f"all ended {took:.1f} s after the restart; work runs: {[app.step_run_counts(a)['work'] for a in action_ids]}"
    )


def test_redis_restart_that_loses_the_queued_tasks_loses_no_action(private_redis, deployment, tmp_path):
    app = deployment(
        {
            "IMAGEACTIONS_DATABASE_URL": f"sqlite:///{tmp_path / 'imageactions.sqlite3'}",
            "IMAGEACTIONS_BROKER_URL": private_redis.url,
            "IMAGEACTIONS_QUEUED_TASK_TIMEOUT": "3",
            "IMAGEACTIONS_REAPER_INTERVAL": "5",
        }
    )
    app.start_api()
    action_ids = [app.create_test_action() for _ in range(5)]  # queued in Redis; no worker runs yet
    broker = redis.Redis.from_url(private_redis.url)
    assert broker.llen("django_q:default:q") == 5
    private_redis.restart()  # nothing persisted: the five tasks are gone
    assert broker.llen("django_q:default:q") == 0

    app.start_workers(workers=2)
    time.sleep(3.5)
    assert {app.action(a)["status"] for a in action_ids} == {"waiting"}
    bodies = wait_for_all(app, action_ids, timeout=60)
    assert {body["status"] for body in bodies.values()} == {"success"}, (bodies, app.log_tail())
    for action_id in action_ids:
        assert app.step_run_counts(action_id) == {"prepare": 1, "work": 1, "wrap": 1}
