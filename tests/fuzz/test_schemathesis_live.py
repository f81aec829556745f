"""`st run --checks all` against the live service: gunicorn and a worker pool, every phase of
schemathesis (examples, coverage, fuzzing, and the stateful phase that follows the schema's
links from a create to the action it made). Any failure means the schema and the service
disagree; the report names the request that shows it.

tests/fuzz/schemathesis.toml says where a request of the schema's shape may still be a 400: the
creates' rules between fields, and the Glance Image API, which keeps Glance's codes.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.import_.conftest import api_server, token_of  # noqa: F401  (fixtures)

HERE = Path(__file__).parent
ROOT = HERE.parent.parent


@pytest.fixture
def short_waits(monkeypatch):
    # ?wait=N holds a request up to N seconds: the service under test keeps N small.
    monkeypatch.setenv("IMAGEACTIONS_MAX_WAIT", "2")


@pytest.fixture
def live_service(short_waits, request, start_workers):
    start_workers()
    return request.getfixturevalue("api_server")


def test_schemathesis_with_every_check_finds_nothing(live_service, alice):
    command = [
        str(Path(sys.executable).with_name("st")),
        "--config-file",
        str(HERE / "schemathesis.toml"),
        "run",
        f"{live_service.base_url}/v2/schema?format=json",
        "--header",
        f"Authorization: Token {token_of(alice)}",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        "15",
        "--generation-deterministic",
        "--seed",
        "1",
        "--workers",
        "1",
        "--request-timeout",
        "20",
        "--no-color",
    ]
    env = {"SCHEMATHESIS_HOOKS": "tests.fuzz.st_hooks", "PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-12000:] + result.stderr[-3000:]
