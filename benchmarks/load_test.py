"""Load test on loopback: 50 users (20 projects) each create 10 imports of a 64 KiB image at
once against gunicorn (4 processes) with two `manage.py worker` processes on PostgreSQL + Redis.

Passes when every action ends `success` with exactly one Image and no answer was a 5xx; prints
the list latency (GET /v2/image-actions?status=pending) under the load, wall time and actions/s.
Bounded: 500 imports, and a hard deadline (default 300 s) after which it fails saying so.

Usage: python benchmarks/load_test.py [USERS] [IMPORTS_PER_USER] [TIMEOUT_S]
"""

import json
import os
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _stack import ImageServer, Stack, api_session, create_import, median, percentile, small_image

PROJECTS = 20  # users share projects: user i is in project i % 20
POLL_INTERVAL_S = 1.0
LIST_INTERVAL_S = 0.1


class Load:
    """What the user threads record: status codes of every answer, the actions they created."""

    def __init__(self):
        self.lock = threading.Lock()
        self.codes = Counter()
        self.server_errors: list[str] = []
        self.final: dict[str, dict] = {}
        self.errors: list[str] = []
        self.connection_drops: list[str] = []

    def record(self, response, what: str):
        with self.lock:
            self.codes[response.status_code] += 1
            if response.status_code >= 500:
                self.server_errors.append(f"{what}: {response.status_code} {response.text[:200]}")


def get_retrying(load: Load, session, url: str):
    """A GET, sent again once when the connection drops (a kept-alive connection the server closed
    just as the request went out); every drop is counted and printed."""
    import requests

    try:
        return session.get(url, timeout=30)
    except requests.ConnectionError as error:
        with load.lock:
            load.connection_drops.append(f"GET {url.split('/v2/')[1]}: {error}")
        return session.get(url, timeout=30)


def user(
    load: Load, api: str, token: str, url: str, number: int, imports: int, deadline: float, start: threading.Event
):
    try:
        session = api_session(token, pool_size=2)
        start.wait()
        ids = []
        for n in range(imports):
            try:
                response = create_import(session, api, url, f"load-{number}-{n}")
            except Exception as error:
                raise RuntimeError(f"POST of import {n} failed: {error}") from error
            load.record(response, "POST /v2/image-actions")
            if response.status_code != 201:
                raise RuntimeError(f"create answered {response.status_code}: {response.text[:300]}")
            ids.append(response.json()["id"])
        while ids:
            time.sleep(POLL_INTERVAL_S)
            for action_id in list(ids):
                response = get_retrying(load, session, f"{api}/v2/image-actions/{action_id}")
                load.record(response, "GET /v2/image-actions/ID")
                body = response.json() if response.status_code == 200 else {}
                if body.get("status") in ("success", "failure", "cancelled"):
                    with load.lock:
                        load.final[action_id] = body
                    ids.remove(action_id)
            if time.monotonic() > deadline:
                raise RuntimeError(f"user {number}: {len(ids)} actions still not ended at the deadline")
    except Exception as error:  # reported by the main thread
        with load.lock:
            load.errors.append(f"user {number}: {error}")


def list_sampler(load: Load, api: str, token: str, stop: threading.Event, samples: list[float]):
    session = api_session(token)
    while not stop.is_set():
        started = time.perf_counter()
        response = get_retrying(load, session, f"{api}/v2/image-actions?status=pending")
        samples.append(time.perf_counter() - started)
        load.record(response, "GET /v2/image-actions?status=pending")
        stop.wait(LIST_INTERVAL_S)


def main():
    users = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    imports = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 300

    def hard_timeout(*_):
        # Raised in the main thread: the Stack's clean-up still runs (processes, database, keys).
        raise SystemExit(f"FAILED: the load test did not finish within its hard timeout of {timeout:.0f} s")

    signal.signal(signal.SIGALRM, hard_timeout)
    signal.alarm(int(timeout) + 120)  # + set-up time; the user threads have their own deadline

    server = ImageServer()
    url = server.add("/small.raw", small_image(64 * 1024))
    load = Load()
    try:
        with Stack("imageactions_load") as stack:
            tokens = stack.create_users([(f"user{i}", f"load-{i % PROJECTS}") for i in range(users)])
            api = stack.start_api(workers=4, threads=8)
            stack.start_workers("default", workers=2)
            stack.start_workers("default", workers=2)
            stack.wait_for_workers()

            go, stop_sampling = threading.Event(), threading.Event()
            deadline = time.monotonic() + timeout
            threads = [
                threading.Thread(target=user, args=(load, api, tokens[i], url, i, imports, deadline, go))
                for i in range(users)
            ]
            for thread in threads:
                thread.start()
            samples: list[float] = []
            sampler = threading.Thread(target=list_sampler, args=(load, api, tokens[0], stop_sampling, samples))
            started = time.perf_counter()
            go.set()
            sampler.start()
            for thread in threads:
                thread.join(max(1.0, deadline - time.monotonic() + 30))
            wall = time.perf_counter() - started
            stop_sampling.set()
            sampler.join()
            if any(thread.is_alive() for thread in threads):
                raise SystemExit(f"FAILED: user threads still running after the {timeout:.0f} s deadline")

            images = (
                stack.psql(
                    "SELECT count(*), count(DISTINCT created_by_action), "
                    "(SELECT count(*) FROM (SELECT created_by_action FROM imageactions_image "
                    " GROUP BY created_by_action HAVING count(*) > 1) AS twice) FROM imageactions_image"
                )
                .strip()
                .split("|")
            )
            not_success = stack.psql("SELECT count(*) FROM imageactions_imageaction WHERE status <> 'success'").strip()
    finally:
        signal.alarm(0)
        server.close()

    total = users * imports
    statuses = Counter(body["status"] for body in load.final.values())
    image_ids = Counter(body["result"].get("image_ref") for body in load.final.values() if body["status"] == "success")
    problems = list(load.errors)
    if load.server_errors:
        problems.append(f"{len(load.server_errors)} answers were 5xx, e.g. {load.server_errors[0]}")
    if statuses.get("success", 0) != total:
        failed = [b for b in load.final.values() if b["status"] != "success"][:1]
        problems.append(
            f"{statuses.get('success', 0)} of {total} actions succeeded ({dict(statuses)}); "
            f"e.g. {failed[0]['message'] if failed else '-'}"
        )
    image_count, distinct_actions, doubled = map(int, images)
    if image_count != total or distinct_actions != total or doubled:
        problems.append(f"images: {image_count} for {distinct_actions} actions, {doubled} actions with two or more")
    if len(image_ids) != statuses.get("success", 0):
        problems.append("two successful actions report the same image_ref")
    if int(not_success):
        problems.append(f"{not_success} actions in the database did not end in success")

    print(
        json.dumps(
            {
                "users": users,
                "projects": min(users, PROJECTS),
                "imports_per_user": imports,
                "actions": total,
                "image_size_kib": 64,
                "gunicorn_processes": 4,
                "worker_commands": 2,
                "worker_processes": 4,
                "cpus": os.cpu_count(),
                "wall_s": round(wall, 2),
                "actions_per_s": round(total / wall, 2),
                "final_statuses": dict(statuses),
                "images": image_count,
                "actions_with_two_images": doubled,
                "http_status_counts": {str(k): v for k, v in sorted(load.codes.items())},
                "connection_drops_retried": load.connection_drops,
                "list_pending_latency_ms": {
                    "samples": len(samples),
                    "p50": round(median(samples) * 1000, 1),
                    "p99": round(percentile(samples, 0.99) * 1000, 1),
                    "max": round(max(samples) * 1000, 1),
                }
                if samples
                else None,
            },
            indent=2,
        )
    )
    if problems:
        raise SystemExit("FAILED:\n  " + "\n  ".join(problems))
    print("PASSED: every action ended success with exactly one image; no 5xx")


if __name__ == "__main__":
    main()
