"""API fuzzing: schemathesis generates requests from /v2/schema and calls the WSGI app directly;
no answer may be a 5xx, and every answer must match the schema (status, content type, body).
"""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from imageactions.wsgi import application

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
FUZZ_SETTINGS = settings(
    max_examples=25,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture
def keep_test_connection(db):
    """Calls into the WSGI app end with Django closing the database connection, which would end
    the test's transaction; Django's own test client disconnects the same handlers."""
    from django.core import signals
    from django.db import close_old_connections

    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def token_headers(alice):
    return {"Authorization": alice._credentials["HTTP_AUTHORIZATION"]}


# Glance's PATCH media type is JSON.
schemathesis.serializer.alias("application/openstack-images-v2.1-json-patch", "application/json")

# Loaded when the module is collected: generating the schema reads no database. (The lazy
# `from_fixture` loader of schemathesis 4.32 fails under pytest 9: no `Function._nodeid`.)
schema = schemathesis.openapi.from_wsgi("/v2/schema?format=json", application)


@schema.parametrize()
@FUZZ_SETTINGS
def test_no_request_gets_a_server_error_or_an_answer_outside_the_schema(case, keep_test_connection, token_headers):
    # /readyz answers 503 by design while no worker runs (none does here); its schema says so.
    checks = [check for check in CHECKS if check is not not_a_server_error] if case.path == "/readyz" else CHECKS
    case.call_and_validate(headers=token_headers, checks=checks)


@given(case=schema["/v2/image-actions"]["POST"].as_strategy(generation_mode=GenerationMode.POSITIVE))
@FUZZ_SETTINGS
def test_creates_with_bodies_the_schema_allows_never_get_a_server_error(case, keep_test_connection, token_headers):
    # Only bodies valid by the schema: they reach each action type's own validation and the runner.
    response = case.call_and_validate(headers=token_headers, checks=CHECKS)
    dry_run = str((case.query or {}).get("dry_run", "")).lower() in ("true", "1", "yes", "on")
    # 422: a body of the schema's shape naming what this project does not have (an image id).
    expected = {200, 400, 422} if dry_run else {201, 400, 422}
    if "Idempotency-Key" in (case.headers or {}):
        expected.add(409)  # a key generated twice, with two different bodies
    assert response.status_code in expected, response.text
