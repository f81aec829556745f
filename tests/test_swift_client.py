"""The Swift object-API client against the real Swift of the test set-up."""

import hashlib
import io
import os
import socket
import uuid

import pytest

from imageactions.swift import SwiftClient, SwiftError, SwiftNotFound, client_for_host
from tests.objectstore import object_store  # noqa: F401  (the fixture; tests/conftest.py will import it too)

pytestmark = pytest.mark.objectstore

MiB = 1024 * 1024


class OneWayStream(io.RawIOBase):
    """Bytes that can be read once, in small pieces, like an HTTP request body."""

    def __init__(self, data: bytes):
        super().__init__()
        self.source = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        return self.source.readinto(memoryview(buffer)[: 64 * 1024])


@pytest.fixture
def swift(object_store):  # noqa: F811
    with SwiftClient(
        object_store.swift_auth_url, object_store.swift_user, object_store.swift_key, timeout=(2, 30)
    ) as client:
        yield client


@pytest.fixture
def container(swift):
    name = f"test-{uuid.uuid4().hex[:12]}"
    swift.create_container(name)
    return name


def read_all(response) -> bytes:
    with response:
        return b"".join(response.iter_content(MiB))


def test_authentication_gives_a_token_and_the_storage_url(swift, object_store):  # noqa: F811
    swift.authenticate()
    assert swift.token.startswith("AUTH_")
    assert swift.storage_url == object_store.swift_storage_url


def test_put_open_and_delete_an_object(swift, container):
    data = os.urandom(3 * MiB + 5)
    etag = swift.put_object(container, "images/disk.qcow2", io.BytesIO(data), content_type="application/octet-stream")
    assert etag == hashlib.md5(data).hexdigest()

    response, size = swift.open_object(container, "images/disk.qcow2")
    assert size == len(data)
    assert read_all(response) == data

    swift.delete_object(container, "images/disk.qcow2")
    with pytest.raises(SwiftNotFound):
        swift.open_object(container, "images/disk.qcow2")
    swift.delete_object(container, "images/disk.qcow2")  # deleting again is not an error


def test_put_of_a_stream_that_can_be_read_once_is_sent_chunked(swift, container):
    data = os.urandom(MiB + 1)
    swift.put_object(container, "once", OneWayStream(data))
    response, size = swift.open_object(container, "once")
    assert (size, read_all(response)) == (len(data), data)


def test_object_names_with_spaces_and_unicode_round_trip(swift, container):
    name = "dir/a disk é+%.raw"
    swift.put_object(container, name, io.BytesIO(b"odd name"))
    response, _ = swift.open_object(container, name)
    assert read_all(response) == b"odd name"


def test_objects_of_the_account_named_explicitly(swift, container):
    swift.put_object(container, "x", io.BytesIO(b"in AUTH_test"))
    response, _ = swift.open_object(container, "x", account="AUTH_test")
    assert read_all(response) == b"in AUTH_test"


def test_missing_object_names_object_and_host(swift, container, object_store):  # noqa: F811
    with pytest.raises(SwiftNotFound) as caught:
        swift.open_object(container, "nothing-here")
    assert str(caught.value) == f"Object '{container}/nothing-here' was not found in Swift at {object_store.hostport}"


def test_upload_into_missing_container_names_the_container(swift, object_store):  # noqa: F811
    with pytest.raises(
        SwiftNotFound, match=f"Container 'no-such-container' was not found in Swift at {object_store.hostport}"
    ):
        swift.put_object("no-such-container", "x", io.BytesIO(b"x"))


def test_wrong_key_is_reported_as_rejected_credentials(object_store):  # noqa: F811
    client = SwiftClient(object_store.swift_auth_url, object_store.swift_user, "wrong-key", timeout=(2, 10))
    with pytest.raises(SwiftError) as caught:
        client.open_object("any", "thing")
    message = str(caught.value)
    assert message == f"Swift at {object_store.hostport} rejected the credentials of user 'test:tester' (HTTP 401)"
    assert "wrong-key" not in message


def test_rejected_token_is_renewed_once(swift, container):
    swift.put_object(container, "x", io.BytesIO(b"renewed"))
    swift.token = "AUTH_tk00000000000000000000000000000000"  # as if it had expired
    response, _ = swift.open_object(container, "x")
    assert read_all(response) == b"renewed"
    assert swift.token != "AUTH_tk00000000000000000000000000000000"
    swift.token = "AUTH_tk00000000000000000000000000000000"
    swift.put_object(container, "y", io.BytesIO(b"seekable bodies are sent again"))


def test_rejected_token_during_upload_of_a_one_way_stream_fails_clearly(swift, container):
    swift.authenticate()
    swift.token = "AUTH_tk00000000000000000000000000000000"
    with pytest.raises(SwiftError, match=f"refused user 'test:tester' access to '{container}/z' \\(HTTP 401\\)"):
        swift.put_object(container, "z", OneWayStream(b"cannot be sent twice"))


def test_unreachable_swift_names_the_host():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = SwiftClient(f"http://127.0.0.1:{port}/auth/v1.0", "test:tester", "testing", timeout=(1, 1))
    with pytest.raises(SwiftError, match=f"Swift at 127.0.0.1:{port} could not be reached"):
        client.authenticate()


def test_client_for_host_uses_the_configured_credentials(settings, object_store):  # noqa: F811
    settings.SWIFT_CREDENTIALS = object_store.swift_credentials()
    with client_for_host(object_store.hostport) as client:
        client.authenticate()
        assert client.storage_url == object_store.swift_storage_url
    with pytest.raises(SwiftError, match="No Swift credentials configured for host 'swift.example.com:8080'"):
        client_for_host("swift.example.com:8080")
