"""Fixtures shared by the suite: API clients per project, real worker processes, the profiles."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from rest_framework.test import APIClient

from imageactions.models import ImageAction
from imageactions.startup import prepare_data_dir
from tests.objectstore import object_store  # noqa: F401  (a real Swift + s3api on 127.0.0.1)
from tests.staging import shared_images, staging  # noqa: F401  (a staging bucket on it; one image store for all hosts)

ROOT = Path(__file__).resolve().parent.parent
PROFILE = os.environ.get("IMAGEACTIONS_TEST_PROFILE", "embedded")

prepare_data_dir()  # the start-up step of every entry point; the test run is one


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def pytest_report_header(config):
    return (
        f"imageactions profile: {PROFILE} (database {settings.DATABASES['default']['ENGINE']}, "
        f"broker {'redis' if settings.BROKER_URL else 'orm'})"
    )


def pytest_collection_modifyitems(config, items):
    if PROFILE != "scaleout":
        return
    missing = [name for name, port in (("PostgreSQL", 5432), ("Redis", 6379)) if not _reachable("127.0.0.1", port)]
    if missing:
        skip = pytest.mark.skip(reason=f"scale-out profile: {' and '.join(missing)} not reachable on 127.0.0.1")
        for item in items:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _fresh_broker():
    """The scale-out profile's queues start empty, so no earlier run's tasks leak in; only this
    run's keys go (QUEUE_PREFIX), as parallel runs share the Redis database."""
    if settings.BROKER_URL and _reachable("127.0.0.1", 6379):
        import redis

        broker = redis.Redis.from_url(settings.BROKER_URL)
        for key in broker.scan_iter(f"django_q:{settings.QUEUE_PREFIX}*"):
            broker.delete(key)


# -- API clients -------------------------------------------------------------------------


def make_client(username: str, project: str, *, staff: bool = False) -> APIClient:
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    args = [username, "--project", project] + (["--staff"] if staff else [])
    call_command("create_api_user", *args, stdout=out)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {out.getvalue().strip()}")
    client.username, client.project = username, project
    return client


@pytest.fixture
def alice(db):
    return make_client("alice", "project-a")


@pytest.fixture
def alice_colleague(db):
    return make_client("carol", "project-a")


@pytest.fixture
def bob(db):
    return make_client("bob", "project-b")


@pytest.fixture
def operator(db):
    return make_client("olga", "operators", staff=True)


# -- real worker processes --------------------------------------------------------------


def database_url() -> str:
    """The URL of the test database, for worker processes (pytest-django renamed it)."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    return f"postgresql://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def process_tree(root: int) -> set[int]:
    """`root` and every process descended from it (read from /proc)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    tree = {root}
    while grown := {pid for pid, parent in parents.items() if parent in tree and pid not in tree}:
        tree |= grown
    return tree


class WorkerPool:
    """A `manage.py worker` process (a django-q2 cluster) started for the tests."""

    def __init__(self, pool: str, workers: int, log_path: Path, env: dict | None = None):
        self.pool, self.workers, self.log_path = pool, workers, log_path
        self.extra_env = env or {}
        self.process = None

    def start(self):
        env = dict(
            os.environ,
            DJANGO_SETTINGS_MODULE="tests.settings",
            IMAGEACTIONS_DATABASE_URL=database_url(),
            IMAGEACTIONS_WORKERS=str(self.workers),
            PYTHONUNBUFFERED="1",
            **self.extra_env,
        )
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "worker", "--pool", self.pool],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def stop(self):
        # SIGKILL to the whole group: a SIGTERM to the group kills django-q2's children under
        # its guard, which then waits for them forever; its graceful stop (SIGTERM to the main
        # process only) takes ~3 s per cluster, and the tests leave no work in flight.
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.log.close()

    def stop_gracefully(self, timeout: float = 60) -> float:
        """Stop the pool as systemd (KillMode=mixed) and scripts/serve do, with SIGTERM to its
        main process only; wait for the whole cluster to exit; the seconds that took."""
        began = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout)
        return time.monotonic() - began

    def pids(self) -> set[int]:
        """The cluster's process tree: the command, django-q2's guard, pool children, monitor, pusher."""
        return process_tree(self.process.pid)

    def log_tail(self, lines=40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture
def start_workers(transactional_db, tmp_path):
    """Start worker pools: `start_workers()` or `start_workers(pool="edge", workers=2, env={...})`.

    `env` adds environment variables (settings) for that pool's processes only.
    """
    from imageactions.runner import ensure_schedules

    started = []

    def start(pool: str = "default", workers: int = 2, env: dict | None = None) -> WorkerPool:
        ensure_schedules()
        worker = WorkerPool(pool, workers, tmp_path / f"worker-{pool}-{len(started)}.log", env).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def workers(start_workers):
    """One default pool with two worker processes."""
    return start_workers()


def wait_for_action(action_id, *, statuses=("success", "failure", "cancelled"), timeout=60, workers=None):
    """Poll the database until the action reaches one of `statuses`; fail with the worker log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        action = ImageAction.objects.get(pk=action_id)
        if action.status in statuses:
            return action
        time.sleep(0.1)
    tail = workers.log_tail() if workers else ""
    raise AssertionError(f"action {action_id} still {action.status!r} after {timeout}s\n{tail}")
