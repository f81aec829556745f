"""Imports whose bytes are uploaded with PUT /v2/image-actions/{id}/data."""

import hashlib
import socket

import requests

from imageactions.models import ImageAction
from tests.conftest import wait_for_action

from .conftest import assert_image_of, assert_left_nothing, random_image, start_import, token_of

MiB = 1024 * 1024
UPLOAD = {"source": "upload"}


def put_data(client, action_id, data: bytes):
    return client.generic("PUT", f"/v2/image-actions/{action_id}/data", data, content_type="application/octet-stream")


def test_upload_import_waits_for_data_then_creates_the_image(alice, workers):
    data = random_image(2 * MiB + 5, seed=10)
    action_id = start_import(alice, UPLOAD, name="uploaded", disk_format="raw")
    assert alice.get(f"/v2/image-actions/{action_id}").json()["status"] == "waiting"
    response = put_data(alice, action_id, data)
    assert response.status_code == 200, response.json()
    assert response.json()["status"] in ("waiting", "uploading", "verifying", "storing", "success")
    action = wait_for_action(action_id, workers=workers)
    assert_image_of(action, data, name="uploaded", disk_format="raw")


def test_upload_with_a_checksum_is_verified(alice, workers):
    data = random_image(300_000, seed=11)
    checksum = {"algo": "sha512", "value": hashlib.sha512(b"other").hexdigest()}
    action_id = start_import(alice, UPLOAD, checksum=checksum)
    put_data(alice, action_id, data)
    action = wait_for_action(action_id, workers=workers)
    assert action.status == "failure"
    assert action.message == (
        f"Checksum mismatch: expected sha512 {checksum['value']}, got {hashlib.sha512(data).hexdigest()}"
    )
    assert_left_nothing(action)


def test_second_upload_to_the_same_action_is_a_conflict(alice, workers):
    action_id = start_import(alice, UPLOAD)
    assert put_data(alice, action_id, b"first").status_code == 200
    response = put_data(alice, action_id, b"second")
    assert response.status_code == 409
    assert "not awaiting data" in response.json()["detail"]


def test_upload_to_an_import_from_a_url_is_a_conflict(alice, image_server):
    action_id = start_import(alice, {"location": image_server.add("c.img", b"c" * 10)})
    assert put_data(alice, action_id, b"data").status_code == 409


def test_upload_announcing_more_than_the_size_cap_fails_with_the_cap(alice, workers, settings):
    settings.IMAGE_MAX_SIZE = MiB
    action_id = start_import(alice, UPLOAD)
    response = put_data(alice, action_id, random_image(MiB + 1))
    assert response.status_code == 200
    assert response.json()["status"] == "failure"
    assert response.json()["message"] == "The image is larger than the 1 MiB limit"
    assert_left_nothing(ImageAction.objects.get(pk=action_id))


def test_chunked_upload_through_gunicorn_creates_the_image(alice, workers, api_server):
    data = random_image(5 * MiB + 123, seed=12)
    action_id = start_import(alice, UPLOAD)

    def body():
        for start in range(0, len(data), 200_000):
            yield data[start : start + 200_000]

    response = requests.put(
        f"{api_server.base_url}/v2/image-actions/{action_id}/data",
        data=body(),
        headers={"Authorization": f"Token {token_of(alice)}", "Content-Type": "application/octet-stream"},
        timeout=60,
    )
    assert response.status_code == 200, (response.text, api_server.log_tail())
    action = wait_for_action(action_id, workers=workers)
    assert_image_of(action, data)


def test_an_empty_upload_is_a_400_and_the_action_still_waits_for_its_data(alice, workers, api_server):
    action_id = start_import(alice, UPLOAD)
    headers = {"Authorization": f"Token {token_of(alice)}", "Content-Type": "application/octet-stream"}
    url = f"{api_server.base_url}/v2/image-actions/{action_id}/data"
    empty_bodies = [
        {"data": b""},  # Content-Length: 0
        {"data": iter([b""])},  # chunked, with no chunk
    ]
    for body in empty_bodies:
        response = requests.put(url, headers=headers, timeout=30, **body)
        assert response.status_code == 400, response.text
        assert "no data" in response.json()["errors"]["body"][0]
        assert alice.get(f"/v2/image-actions/{action_id}").json()["status"] == "waiting"
    data = random_image(300_001, seed=13)  # chunked: its first byte is read, then put back
    response = requests.put(url, headers=headers, data=iter([data[:1], data[1:]]), timeout=60)
    assert response.status_code == 200, (response.text, api_server.log_tail())
    assert_image_of(wait_for_action(action_id, workers=workers), data)


def test_upload_interrupted_by_the_client_fails_naming_the_bytes_received(alice, workers, api_server):
    action_id = start_import(alice, UPLOAD)
    head = (
        f"PUT /v2/image-actions/{action_id}/data HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Token {token_of(alice)}\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {MiB}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", api_server.port)) as sock:
        sock.sendall(head + b"x" * 100_000)
    action = wait_for_action(action_id, workers=workers, timeout=30)
    assert action.status == "failure"
    assert action.message == (
        f"The upload was interrupted after 100000 bytes of the {MiB} announced; "
        "create a new import action and upload again"
    )
    assert_left_nothing(action)


def test_upload_action_without_data_fails_after_the_data_wait_timeout(alice, start_workers_with):
    workers = start_workers_with(IMAGEACTIONS_DATA_WAIT_TIMEOUT="1")
    action_id = start_import(alice, UPLOAD)
    # django-q2 looks at its schedules (the reaper's among them) every 30 s.
    action = wait_for_action(action_id, workers=workers, timeout=90)
    assert action.status == "failure"
    assert action.message.startswith("No data was uploaded within")
    assert put_data(alice, action_id, b"late").status_code == 409
