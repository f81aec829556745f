"""The multi-host layout of docs/deploy.md on one machine, started once per test module: two API
hosts, two edge worker hosts (fetch, verify, convert) and one core worker host (store), each a
Host of tests/multihost/hosts.py sharing the scale-out profile's test database, the session's
Redis queues and two buckets of the session's Swift (the image store and the staging store).

Per test there are only database rows: the tests use `transactional_db` (the hosts' processes
see what the test commits, and the rows go after it), so each test recreates the maintenance
schedules the flush removed and its own API user; after it, every file under a host's
directory must belong to that host's uid and no API host may hold image bytes.
"""

import json
import os
import tempfile
from pathlib import Path

import pytest
from django.conf import settings

from tests.conftest import PROFILE, database_url, make_client
from tests.faults.conftest import FaultyImageServer
from tests.http_servers import free_port
from tests.objectstore import object_store  # noqa: F401  (the session fixture)

from .hosts import Isolation, Layout, read_layout_doc

requires_scaleout = pytest.mark.skipif(
    PROFILE != "scaleout",
    reason="hosts that share nothing but the database, the broker and the object store need the "
    "scale-out profile (PostgreSQL and Redis); run with IMAGEACTIONS_TEST_PROFILE=scaleout",
)

IMAGE_BUCKET = "multihost-images"
STAGING_BUCKET = "multihost-staging"
STAGING_PREFIX = "staging/"
# An API host's data dir holds small files (metrics aside): anything larger is image bytes.
API_HOST_FILE_LIMIT = 16 * 1024
# The verifier of tests/multihost/verifiers.py holds `verify` while this file exists.
HOLD_MARKER = "hold-verify"
# Settings the tests give every host besides the doc's: the tests' short timings and the URL
# policy that lets imports reach the loopback image servers (as tests/settings.py does).
TEST_TIMINGS = ("QUEUED_TASK_TIMEOUT", "PROGRESS_WRITE_INTERVAL")
# A killed host's step is taken up once the core host's reaper finds its heartbeat older than
# max(REAPER_INTERVAL, 3 heartbeats): 2 s here, as in tests/faults/test_api_stopped_during_upload.py.
FAST_REAPER = {"IMAGEACTIONS_REAPER_INTERVAL": "2", "IMAGEACTIONS_HEARTBEAT_INTERVAL": "0.5"}


# docs/deploy.md's values in angle brackets that differ per host: its data dir, the API's address.
DATA_DIR_PLACEHOLDER = "<a directory of this host alone, e.g. /srv/imageactions>"
BIND_PLACEHOLDER = "<address:port, e.g. 0.0.0.0:8000>"
HOST_PLACEHOLDERS = (DATA_DIR_PLACEHOLDER, BIND_PLACEHOLDER)


def image_store_config(store) -> dict:
    return {"s3-main": store.s3_store_config(bucket=IMAGE_BUCKET, region="main")}


def placeholder_values(store) -> dict[str, str]:
    """What the tests put where docs/deploy.md's layout section has a value in angle brackets."""
    return {
        "<staging bucket, e.g. imageactions-staging>": STAGING_BUCKET,
        "<the S3 endpoint, e.g. https://s3.example.org>": store.s3_endpoint,
        "<access key>": store.s3_access_key,
        "<secret key>": store.s3_secret_key,
    }


def shared_settings(store) -> dict[str, str]:
    """Section 1's settings as the test session has them, the same for every host."""
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("IMAGEACTIONS_") and name not in ("DJANGO_SETTINGS_MODULE", "HOME", "TMPDIR")
    }
    return {
        **inherited,
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",  # the repository is not theirs to write
        "IMAGEACTIONS_SECRET_KEY": settings.SECRET_KEY,
        "IMAGEACTIONS_DATABASE_URL": database_url(),
        "IMAGEACTIONS_BROKER_URL": settings.BROKER_URL,
        "IMAGEACTIONS_QUEUE_PREFIX": settings.QUEUE_PREFIX,  # so _fresh_broker empties these queues too
        "IMAGEACTIONS_STORES": json.dumps(image_store_config(store)),
        "IMAGEACTIONS_DEFAULT_STORE": "s3-main",
        "IMAGEACTIONS_URL_ALLOWED_NETWORKS": "127.0.0.0/8",
        "IMAGEACTIONS_IMAGE_STORE_FORMAT": "raw",  # a qcow2 import is converted (on an edge host)
        "IMAGEACTIONS_WORKERS": "1",
        **{f"IMAGEACTIONS_{name}": str(getattr(settings, name)) for name in TEST_TIMINGS},
        **FAST_REAPER,
    }


@pytest.fixture(scope="module")
def layout(object_store, django_db_setup, django_db_blocker):  # noqa: F811
    """api-1, api-2, edge-1, edge-2 and core-1, started from docs/deploy.md's commands."""
    for bucket in (IMAGE_BUCKET, STAGING_BUCKET):
        object_store.create_bucket(bucket)
    values = placeholder_values(object_store)
    base = Path(tempfile.mkdtemp(prefix="imageactions-multihost-"))
    hosts = Layout(base, Isolation.probe(), read_layout_doc())
    shared = shared_settings(object_store)
    edge_only = {
        "IMAGEACTIONS_IMAGE_VERIFIERS": ",".join(
            [*settings.IMAGE_VERIFIERS, "tests.multihost.verifiers.hold_while_marked"]
        ),
        "MULTIHOST_HOLD_MARKER": str(base / HOLD_MARKER),
    }
    for name, kind in (("api-1", "api"), ("api-2", "api"), ("edge-1", "edge"), ("edge-2", "edge"), ("core-1", "core")):
        port = free_port() if kind == "api" else None
        host_values = {
            **values,
            DATA_DIR_PLACEHOLDER: str(base / name / "data"),
            BIND_PLACEHOLDER: f"127.0.0.1:{port}",
        }
        env = {
            **shared,
            **(edge_only if kind == "edge" else {}),
            "HOME": str(base / name),
            "TMPDIR": str(base / name / "tmp"),
        }
        hosts.add(name, kind, host_values, env, port)
    try:
        for host in hosts.hosts:
            host.start()
        with django_db_blocker.unblock():
            for host in hosts.hosts:
                host.wait_ready()
        yield hosts
    except BaseException:
        print(hosts.log_tail())
        raise
    finally:
        hosts.stop()


@pytest.fixture
def multihost(layout, transactional_db, settings, request):
    """The layout, for one test: schedules, an API user, and the test process's image store
    set to the hosts' (to read what they stored); checks each host's files afterwards."""
    from imageactions.runner import ensure_schedules

    ensure_schedules()  # the last test's flush removed them; the core host's reaper needs them
    settings.IMAGE_STORES = image_store_config(request.getfixturevalue("object_store"))
    settings.DEFAULT_IMAGE_STORE = "s3-main"
    client = make_client("alice", "project-a")
    layout.http.headers["Authorization"] = client._credentials["HTTP_AUTHORIZATION"]
    for host in layout.hosts:  # a test that killed a host starts it again
        if host.process.poll() is not None:
            host.start().wait_ready()
    yield layout
    # With one uid for every host, file owners tell the hosts apart no more.
    separate = layout.isolation.separate_users
    problems = [problem for host in layout.hosts if separate for problem in host.foreign_files()]
    for host in layout.of_kind("api"):
        problems += [
            f"image bytes on API host {host.name}: {found}" for found in host.image_sized_files(API_HOST_FILE_LIMIT)
        ]
    assert not problems, "\n".join(problems)


@pytest.fixture(scope="module")
def source_server():
    """An HTTP image server on 127.0.0.1 that records every request and can throttle."""
    with FaultyImageServer().serving() as server:
        yield server
