"""The embedded service's memory footprint depends on processes sharing what they loaded and on
not loading what a deployment does not use; these check that what saves the memory keeps the
service correct: a module loaded late is there when needed, and processes forked from a parent
that loaded the application still use connections of their own.

The footprint itself is measured by benchmarks/footprint.py."""

import json
import os
import subprocess
import sys
import threading
import time

import psutil
import requests

from tests.conftest import PROFILE, ROOT
from tests.faults.conftest import deployment, embedded_only  # noqa: F401  (a fixture)

S3_MODULES = ("boto3", "botocore", "s3transfer")


def run_python(code: str, tmp_path) -> dict:
    """Run `code` in a fresh interpreter set up as manage.py sets up; it prints one JSON line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMAGEACTIONS_", "DJANGO_"))}
    env.update(DJANGO_SETTINGS_MODULE="settings", IMAGEACTIONS_DATA_DIR=str(tmp_path / "data"))
    if PROFILE == "scaleout":  # only connects: the server's own database will do
        env["IMAGEACTIONS_DATABASE_URL"] = "postgresql://postgres@127.0.0.1:5432/postgres"
    prelude = "import gc, json, sys\nfrom imageactions.startup import prepare_data_dir\nimport django\n"
    prelude += "django.setup(); prepare_data_dir()\n"
    result = subprocess.run(
        [sys.executable, "-c", prelude + code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_boto3_is_loaded_only_when_an_s3_store_or_client_is_made(tmp_path):
    found = run_python(
        f"S3_MODULES = {S3_MODULES!r}\n"
        "from django.conf import settings\n"
        "from imageactions.forking import load_api\n"
        "import imageactions.runner, django_q.cluster\n"
        "from imageactions.stores import all_stores, build_s3_client, get_store\n"
        "load_api(); all_stores()\n"
        "loaded = lambda: sorted(m for m in sys.modules if m.split('.')[0] in S3_MODULES)\n"
        "before = loaded()\n"
        "settings.IMAGE_STORES = {**settings.IMAGE_STORES, 'objects': {'type': 's3', 'bucket': 'b',\n"
        "    'endpoint_url': 'http://127.0.0.1:9', 'access_key': 'k', 'secret_key': 's'}}\n"
        "store = get_store('objects')\n"
        "client = build_s3_client(endpoint_url='http://127.0.0.1:9', access_key='k', secret_key='s')\n"
        "print(json.dumps({'before': before, 'after': loaded(), 'store': type(store).__name__,\n"
        "    'client': client.meta.service_model.service_name}))\n",
        tmp_path,
    )
    assert found["before"] == [], "the API, the runner and the filesystem store must not load boto3"
    assert {name.split(".")[0] for name in found["after"]} == set(S3_MODULES)
    assert (found["store"], found["client"]) == ("S3Store", "s3")


def test_a_parent_about_to_fork_holds_no_database_connection_and_freezes_its_objects(tmp_path):
    found = run_python(
        "from django.db import connection\n"
        "from imageactions.forking import prepare_to_fork\n"
        "connection.ensure_connection()\n"
        "was_open = connection.connection is not None\n"
        "prepare_to_fork()\n"
        "print(json.dumps({'was_open': was_open, 'open': connection.connection is not None,\n"
        "    'frozen': gc.get_freeze_count()}))\n",
        tmp_path,
    )
    assert found["was_open"] and not found["open"]
    assert found["frozen"] > 10_000  # the loaded modules' objects, out of the collector's reach


def database_files_open_in(process: psutil.Process, database: str) -> list[str]:
    return [f.path for f in process.open_files() if f.path.startswith(database)]


@embedded_only  # a deployment of its own, the same in both profiles
def test_preloaded_api_workers_share_the_application_but_not_the_arbiters_connection(deployment):  # noqa: F811
    service = deployment({})
    # Started as scripts/serve starts it (--preload), with an arbiter that used the database first.
    arbiter = psutil.Process(service.start_api("-c", "python:tests.operations.gunicorn_arbiter_uses_database").pid)
    database = str(service.data_dir / "imageactions.sqlite3")

    # Requests from several threads at once, so that both workers serve some.
    def list_actions():
        for _ in range(10):
            assert (
                requests.get(
                    f"{service.base_url}/v2/image-actions", headers=service.http.headers, timeout=30
                ).status_code
                == 200
            )

    clients = [threading.Thread(target=list_actions) for _ in range(8)]
    for client in clients:
        client.start()
    for client in clients:
        client.join()

    workers = arbiter.children()
    assert len(workers) == 2
    # Each request closes the connections it opened, once the server has closed its response,
    # which may be just after the client read it: a database file still open after a few
    # seconds is one that the arbiter opened and its workers inherited.
    deadline = time.monotonic() + 5
    for process in (arbiter, *workers):
        while (still_open := database_files_open_in(process, database)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert still_open == [], f"process {process.pid} holds a connection"
    for worker in workers:
        memory = worker.memory_full_info()
        # Without --preload each worker holds its own copy of the application: most of its
        # resident memory is its own.
        assert memory.uss < memory.rss / 2, f"worker {worker.pid}: {memory}"
