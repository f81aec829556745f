"""Settings for the test suite: the product's settings with test-only knobs and the test action type.

Worker processes started by the tests import this module too; the environment it sets here
is inherited by them, so the API and the workers share one data directory and database.
"""

import os
import re
import tempfile

PROFILE = os.environ.setdefault("IMAGEACTIONS_TEST_PROFILE", "embedded")
os.environ.setdefault("IMAGEACTIONS_DATA_DIR", tempfile.mkdtemp(prefix="imageactions-test-"))
os.environ.setdefault("IMAGEACTIONS_SECRET_KEY", "test-only-secret-key-not-for-production")
os.environ.setdefault("IMAGEACTIONS_REAPER_INTERVAL", "4")
os.environ.setdefault("IMAGEACTIONS_HEARTBEAT_INTERVAL", "1")
os.environ.setdefault("IMAGEACTIONS_QUEUED_TASK_TIMEOUT", "20")
os.environ.setdefault("IMAGEACTIONS_PROGRESS_WRITE_INTERVAL", "0.1")
os.environ.setdefault("IMAGEACTIONS_API_RATE", "100000/min")
os.environ.setdefault("IMAGEACTIONS_PROJECT_API_RATE", "1000000/min")
# Test servers listen on loopback; the product refuses it unless allowlisted like this.
os.environ.setdefault("IMAGEACTIONS_URL_ALLOWED_NETWORKS", "127.0.0.0/8")
os.environ.setdefault(
    "IMAGEACTIONS_ACTION_APPS", "actions_import,actions_export,actions_clone,actions_convert,tests.testactions"
)
# Each test run is named after its data directory, so parallel runs on one PostgreSQL and one
# Redis database use their own test database and queues (workers inherit the prefix).
RUN_NAME = re.sub(r"[^a-z0-9]+", "_", os.path.basename(os.environ["IMAGEACTIONS_DATA_DIR"]).lower())
if PROFILE == "scaleout":
    os.environ.setdefault("IMAGEACTIONS_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/imageactions")
    os.environ.setdefault("IMAGEACTIONS_BROKER_URL", "redis://127.0.0.1:6379/15")
    os.environ.setdefault("IMAGEACTIONS_QUEUE_PREFIX", f"{RUN_NAME}-")

from settings import *  # noqa: E402,F403

# Fault injection: a dotted path to `f(reader) -> reader` that the clone's copy step wraps around
# the source's bytes (e.g. to change one in flight); set per worker pool by the clone tests.
CLONE_STREAM_FILTER = os.environ.get("IMAGEACTIONS_CLONE_STREAM_FILTER", "")

if DATABASES["default"]["ENGINE"].endswith("postgresql"):  # noqa: F405
    DATABASES["default"]["TEST"] = {"NAME": f"test_{RUN_NAME}"}  # noqa: F405
