"""GET /v2/images/{id}/file: streamed bytes with checksum headers, Range, If-None-Match and If-Range."""

import base64
import hashlib
import os

import pytest

from imageactions.models import Image
from imageactions.stores import get_store
from tests.objectstore import object_store  # noqa: F401  (the session fixture)

from .conftest import put_image

DATA = os.urandom(1000)


def download(client, image_id, **headers):
    """The response and its whole body; reading it to the end closes the store's reader."""
    meta = {f"HTTP_{name.upper().replace('-', '_')}": value for name, value in headers.items()}
    response = client.get(f"/v2/images/{image_id}/file", **meta)
    body = b"".join(response.streaming_content) if response.streaming else response.content
    return response, body


@pytest.fixture
def image(make_image):
    return make_image("project-a", DATA, name="ubuntu 24.04 server")


def test_download_streams_the_whole_image_with_checksum_headers(alice, image):
    response, body = download(alice, image.pk)

    assert response.status_code == 200
    assert response.streaming
    assert hashlib.sha512(body).hexdigest() == image.os_hash_value
    assert response["Content-Length"] == str(len(DATA))
    assert response["Content-Type"] == "application/octet-stream"
    assert response["Content-Disposition"] == 'attachment; filename="ubuntu_24.04_server.raw"'
    assert response["ETag"] == f'"{hashlib.md5(DATA).hexdigest()}"'
    assert response["Content-MD5"] == base64.b64encode(hashlib.md5(DATA).digest()).decode()
    assert response["Accept-Ranges"] == "bytes"


def test_download_of_a_larger_image_comes_in_several_chunks(alice, make_image):
    data = os.urandom(5 * 1024 * 1024 + 7)
    image = make_image("project-a", data)

    response = alice.get(f"/v2/images/{image.pk}/file")
    chunks = list(response.streaming_content)

    assert len(chunks) > 1
    assert max(len(chunk) for chunk in chunks) <= 1024 * 1024
    assert hashlib.sha512(b"".join(chunks)).hexdigest() == image.os_hash_value


@pytest.mark.parametrize(
    ("range_header", "start", "end"),
    [
        ("bytes=0-99", 0, 100),
        ("bytes=100-", 100, 1000),
        ("bytes=-100", 900, 1000),
        ("bytes=999-999", 999, 1000),
        ("bytes=500-5000", 500, 1000),
        ("bytes=-5000", 0, 1000),
        ("BYTES = 10 - 19", 10, 20),
    ],
)
def test_range_request_gets_206_with_those_bytes(alice, image, range_header, start, end):
    response, body = download(alice, image.pk, range=range_header)

    assert response.status_code == 206
    assert body == DATA[start:end]
    assert response["Content-Length"] == str(end - start)
    assert response["Content-Range"] == f"bytes {start}-{end - 1}/1000"
    assert response["ETag"] == f'"{image.checksum}"'
    assert "Content-MD5" not in response  # it would describe the whole image, not this body


@pytest.mark.parametrize("range_header", ["bytes=1000-", "bytes=5000-6000", "bytes=-0"])
def test_range_past_the_end_is_a_416_naming_the_size(alice, image, range_header):
    response, body = download(alice, image.pk, range=range_header)

    assert response.status_code == 416
    assert response["Content-Range"] == "bytes */1000"
    assert "1000 bytes" in response.json()["detail"]


def test_any_range_of_an_empty_image_is_a_416(alice, make_image):
    image = make_image("project-a", b"")

    assert download(alice, image.pk, range="bytes=0-")[0].status_code == 416
    response, body = download(alice, image.pk)
    assert (response.status_code, body, response["Content-Length"]) == (200, b"", "0")


@pytest.mark.parametrize(
    "range_header",
    ["bytes=0-9,20-29", "items=0-9", "bytes=9-0", "bytes=abc", "bytes=-", "bytes=", "bytes=1-2-3"],
)
def test_several_ranges_or_a_range_we_cannot_read_get_the_whole_image(alice, image, range_header):
    response, body = download(alice, image.pk, range=range_header)

    assert response.status_code == 200
    assert body == DATA
    assert "Content-Range" not in response


def test_if_none_match_with_the_etag_is_a_304(alice, image):
    etag = download(alice, image.pk)[0]["ETag"]

    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        response, body = download(alice, image.pk, if_none_match=header)
        assert response.status_code == 304, header
        assert body == b""
        assert response["ETag"] == etag


def test_if_none_match_with_another_etag_gets_the_image(alice, image):
    response, body = download(alice, image.pk, if_none_match='"0123"')

    assert (response.status_code, body) == (200, DATA)


def test_if_range_with_the_etag_gets_the_range_and_a_stale_one_the_whole_image(alice, image):
    current, _ = download(alice, image.pk, range="bytes=0-9", if_range=f'"{image.checksum}"')
    stale, body = download(alice, image.pk, range="bytes=0-9", if_range='"stale"')

    assert current.status_code == 206
    assert (stale.status_code, body) == (200, DATA)


def test_download_ignores_an_accept_header_asking_for_binary(alice, image):
    response, body = download(alice, image.pk, accept="application/octet-stream")

    assert (response.status_code, body) == (200, DATA)


@pytest.mark.parametrize(
    ("name", "filename"),
    [
        ("../../etc/passwd", "etc_passwd.raw"),
        ('evil"\r\nSet-Cookie: x=1', "evil_Set-Cookie_x_1.raw"),
        ("disk.raw", "disk.raw"),
        ("привет", None),
        ("", None),
    ],
)
def test_download_filename_is_safe_for_headers_and_file_systems(alice, make_image, name, filename):
    image = make_image("project-a", DATA, name=name)

    response, _ = download(alice, image.pk)

    assert response["Content-Disposition"] == f'attachment; filename="{filename or f"{image.pk}.raw"}"'


def test_another_projects_image_cannot_be_downloaded(bob, image):
    response, body = download(bob, image.pk)

    assert response.status_code == 404
    assert DATA not in body


def test_download_of_an_image_whose_bytes_are_missing_is_a_503_saying_so(alice, image):
    get_store(image.location.store).delete(image.location.key)

    response, _ = download(alice, image.pk)

    assert response.status_code == 503
    assert "missing from image store 'local'" in response.json()["error"]["message"]


@pytest.mark.objectstore
def test_image_in_an_s3_store_downloads_with_ranges_and_deletes(alice, settings, object_store):  # noqa: F811
    settings.IMAGE_STORES = {**settings.IMAGE_STORES, "swift": object_store.s3_store_config(prefix="images-api")}
    data = os.urandom(3 * 1024 * 1024)
    image = put_image("project-a", data, store="swift")

    response, body = download(alice, image.pk)
    assert response.status_code == 200
    assert hashlib.sha512(body).hexdigest() == image.os_hash_value
    assert alice.get(f"/v2/images/{image.pk}").json()["stores"] == "swift"

    response, body = download(alice, image.pk, range="bytes=-100")
    assert (response.status_code, body) == (206, data[-100:])

    key = image.location.key
    assert alice.delete(f"/v2/images/{image.pk}").status_code == 204
    assert not get_store("swift").exists(key)
    assert not Image.objects.filter(pk=image.pk).exists()
