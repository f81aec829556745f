"""Fixtures for the client tests: the API behind gunicorn and the loopback image server, shared
with the import tests, and the token of a user to talk to it with."""

import pytest

from tests.import_.conftest import api_server, closed_port, image_server, token_of  # noqa: F401  (fixtures)


@pytest.fixture
def alice_token(alice) -> str:
    return token_of(alice)
