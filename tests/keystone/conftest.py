"""Fixtures for the Keystone tests: one real Keystone for the whole session, and per test the API
(gunicorn) and workers configured to validate tokens with it, registered in its catalog by the
service's own `register_in_keystone` command."""

import os
import time

import pytest
from django.core.management import call_command

from tests.import_.conftest import api_server, image_server  # noqa: F401  (fixtures)

from .server import SERVICE_PASSWORD, SERVICE_USER, start_keystone

# Short, so a test can see a revoked token refused once the cache forgets it.
CACHE_TIME = 3


@pytest.fixture(scope="session")
def keystone(tmp_path_factory):
    started = time.monotonic()
    server = start_keystone(tmp_path_factory.mktemp("keystone"))
    server.setup_seconds = time.monotonic() - started
    yield server
    server.stop()


@pytest.fixture
def keystone_settings(keystone, monkeypatch):
    """The API server and workers started after this validate X-Auth-Token with Keystone."""
    for name, value in {
        "IMAGEACTIONS_KEYSTONE_URL": keystone.url,
        "IMAGEACTIONS_KEYSTONE_USER": SERVICE_USER,
        "IMAGEACTIONS_KEYSTONE_PASSWORD": SERVICE_PASSWORD,
        "IMAGEACTIONS_KEYSTONE_PROJECT": "service",
        "IMAGEACTIONS_KEYSTONE_CACHE_TIME": str(CACHE_TIME),
    }.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def keystone_api(keystone_settings, keystone, api_server, start_workers, monkeypatch):  # noqa: F811
    """The service behind Keystone, with workers, and in the catalog at its current address."""
    start_workers()
    with monkeypatch.context() as patch:
        for name, value in keystone.admin_env().items():
            patch.setenv(name, value)
        call_command(
            "register_in_keystone",
            url=api_server.base_url,
            service_user=SERVICE_USER,
            service_password=SERVICE_PASSWORD,
            stdout=open(os.devnull, "w"),
        )
    return api_server
