"""Every import failure carries a stable error_code (and the values checked in error_details),
each reached here through a real failure with real workers; ?error_code= finds them."""

import gzip
import hashlib
import json
import random
import socket
import subprocess
import threading
import uuid

import pytest

from imageactions.choices import ErrorCode
from imageactions.models import ImageAction, ProjectQuota
from imageactions.pipeline import StepContext, StepError, store_image_file
from imageactions.swift import SwiftClient
from tests.conftest import wait_for_action
from tests.http_servers import LoopbackHandler, LoopbackServer
from tests.objectstore import object_store  # noqa: F401  (the session fixture)

from .conftest import import_body, random_image

ACTIONS = "/v2/image-actions"


def failed_import(alice, workers, source: dict, *, timeout=60, **properties):
    response = alice.post(ACTIONS, import_body(source, **properties), format="json")
    assert response.status_code == 201, response.json()
    action = wait_for_action(response.json()["id"], workers=workers, timeout=timeout)
    assert action.status == "failure", (action.status, action.message)
    body = alice.get(f"{ACTIONS}/{action.pk}").json()
    assert body["error_code"] == action.error_code and body["error_details"] == action.error_details
    return action


def qemu_img(*args):
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/status/404", ErrorCode.SOURCE_NOT_FOUND),
        ("/status/403", ErrorCode.SOURCE_REFUSED),
        ("/status/503", ErrorCode.SOURCE_UNREACHABLE),
        ("/truncated/disk.img?after=1000", ErrorCode.SOURCE_INTERRUPTED),
        ("/redirect-to?url=http://169.254.169.254/latest/meta-data", ErrorCode.URL_NOT_ALLOWED),
        ("/files/empty.img", ErrorCode.EMPTY_IMAGE),
        ("/files/movie.mp4", ErrorCode.NOT_A_DISK_IMAGE),
        ("/files/broken.gz", ErrorCode.DECOMPRESSION_FAILED),
    ],
)
def test_source_and_content_failures_have_their_code(alice, workers, image_server, path, code):
    image_server.add("disk.img", random_image(50_000, seed=60))
    image_server.add("empty.img", b"")
    image_server.add("movie.mp4", b"\x00\x00\x00\x20ftypisom" + b"\x00" * 5000)
    incompressible = random.Random(61).randbytes(200_000)
    image_server.add("broken.gz", gzip.compress(incompressible)[:3000])
    action = failed_import(alice, workers, {"location": image_server.url(path)})
    assert action.error_code == code, action.message
    if code == ErrorCode.SOURCE_NOT_FOUND:
        assert action.error_details["status"] == 404


def test_an_unreachable_source_is_source_unreachable(alice, workers, closed_port):
    action = failed_import(alice, workers, {"location": f"http://127.0.0.1:{closed_port}/disk.img"})
    assert action.error_code == ErrorCode.SOURCE_UNREACHABLE


def test_a_checksum_mismatch_gives_both_values(alice, workers, image_server):
    data = random_image(60_000, seed=62)
    wrong = hashlib.sha256(b"other").hexdigest()
    response = alice.post(
        ACTIONS,
        import_body({"location": image_server.add("c.img", data)}, checksum={"algo": "sha256", "value": wrong}),
        format="json",
    )
    action = wait_for_action(response.json()["id"], workers=workers)
    assert action.error_code == ErrorCode.CHECKSUM_MISMATCH
    assert action.error_details == {"algo": "sha256", "expected": wrong, "actual": hashlib.sha256(data).hexdigest()}


def test_a_format_other_than_declared_is_format_mismatch(alice, workers, image_server):
    url = image_server.add("raw.img", random_image(70_000, seed=63))
    action = failed_import(alice, workers, {"location": url}, disk_format="qcow2")
    assert action.error_code == ErrorCode.FORMAT_MISMATCH


def test_a_qcow2_with_a_backing_file_is_unsafe_and_a_cut_one_malformed(alice, workers, image_server, tmp_path):
    qemu_img("create", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw", str(tmp_path / "b.qcow2"), "1M")
    action = failed_import(
        alice, workers, {"location": image_server.add("b.qcow2", (tmp_path / "b.qcow2").read_bytes())}
    )
    assert action.error_code == ErrorCode.UNSAFE_IMAGE
    qemu_img("create", "-f", "qcow2", str(tmp_path / "ok.qcow2"), "64M")
    cut = (tmp_path / "ok.qcow2").read_bytes()[:300]
    action = failed_import(alice, workers, {"location": image_server.add("cut.qcow2", cut)})
    assert action.error_code == ErrorCode.MALFORMED_IMAGE, action.message


def test_limits_have_their_codes(alice, start_workers_with, image_server):
    workers = start_workers_with(IMAGEACTIONS_IMAGE_MAX_SIZE="100000")  # also the cap on decompressed bytes
    action = failed_import(alice, workers, {"location": image_server.add("big.img", random_image(150_000, seed=64))})
    assert action.error_code == ErrorCode.IMAGE_TOO_LARGE and action.error_details == {"limit": 100000}
    bomb = gzip.compress(b"\0" * 500_000)
    action = failed_import(alice, workers, {"location": image_server.add("bomb.gz", bomb)})
    assert action.error_code == ErrorCode.DECOMPRESSION_LIMIT


def test_a_quota_that_the_bytes_pass_is_quota_exceeded(alice, workers, image_server):
    ProjectQuota.objects.create(project="project-a", image_size_total=10_000)
    action = failed_import(alice, workers, {"location": image_server.add("q.img", random_image(50_000, seed=65))})
    assert action.error_code == ErrorCode.QUOTA_EXCEEDED
    assert action.error_details == {"quota": "image_size_total", "limit": 10_000, "usage": 0}


def test_error_code_filter_and_its_vocabulary(alice, workers, image_server):
    missing = failed_import(alice, workers, {"location": image_server.url("/status/404")})
    forbidden = failed_import(alice, workers, {"location": image_server.url("/status/403")})
    ids = lambda response: {action["id"] for action in response.json()["results"]}  # noqa: E731
    assert ids(alice.get(ACTIONS, {"error_code": "source_not_found"})) == {str(missing.pk)}
    assert ids(alice.get(ACTIONS, {"error_code": "source_not_found,source_refused"})) == {
        str(missing.pk),
        str(forbidden.pk),
    }
    refused = alice.get(ACTIONS, {"error_code": "oops"})
    assert refused.status_code == 400 and "checksum_mismatch" in refused.json()["errors"]["error_code"][0]
    ok = alice.post(ACTIONS, {"action_type": "test", "input": {}}, format="json").json()
    assert ok["error_code"] is None and ok["error_details"] == {}


# -- s3:// and swift:// sources -------------------------------------------------------------


class S3ErrorHandler(LoopbackHandler):
    """Answers every GET of s3://BUCKET/KEY (path style) with the S3 error that KEY names."""

    ERRORS = {
        "slowdown": (503, "SlowDown"),
        "internal": (500, "InternalError"),
        "denied": (403, "AccessDenied"),
        "missing": (404, "NoSuchKey"),
    }

    def do_GET(self):
        status, code = self.ERRORS[self.path.rsplit("/", 1)[1]]
        body = f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>as asked</Message></Error>'
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())


@pytest.mark.parametrize(
    ("key", "code"),
    [
        ("slowdown", ErrorCode.SOURCE_UNREACHABLE),
        ("internal", ErrorCode.SOURCE_UNREACHABLE),
        ("denied", ErrorCode.SOURCE_REFUSED),
        ("missing", ErrorCode.SOURCE_NOT_FOUND),
    ],
)
def test_s3_answers_have_their_codes_a_fault_on_s3s_side_is_unreachable(alice, start_workers_with, settings, key, code):
    with LoopbackServer(S3ErrorHandler).serving() as s3:
        settings.S3_SOURCE = {
            "endpoint_url": s3.url(""),
            "access_key": "a",
            "secret_key": "s",
            "addressing_style": "path",
        }
        workers = start_workers_with(IMAGEACTIONS_S3_SOURCE=json.dumps(settings.S3_SOURCE))
        action = failed_import(alice, workers, {"location": f"s3://bucket/{key}"}, timeout=90)
    assert action.error_code == code, action.message
    assert action.error_details["s3_error"] == S3ErrorHandler.ERRORS[key][1]


@pytest.mark.objectstore
def test_swift_sources_missing_refused_or_unreachable_have_their_codes(
    alice,
    object_store,  # noqa: F811
    start_workers_with,
    settings,
    closed_port,
):
    with SwiftClient(object_store.swift_auth_url, object_store.swift_user, object_store.swift_key) as swift:
        swift.authenticate()
        account = swift.storage_url.rsplit("/", 1)[1]
    unreachable = f"127.0.0.1:{closed_port}"
    credentials = {
        **object_store.swift_credentials(),
        unreachable: {"auth_url": f"http://{unreachable}/auth/v1.0", "user": "test:tester", "key": "testing"},
    }
    settings.SWIFT_CREDENTIALS = credentials
    workers = start_workers_with(IMAGEACTIONS_SWIFT_CREDENTIALS=json.dumps(credentials))

    missing = failed_import(alice, workers, {"location": f"swift://{object_store.hostport}/{account}/c/missing.img"})
    assert missing.error_code == ErrorCode.SOURCE_NOT_FOUND, missing.message
    no_route = failed_import(alice, workers, {"location": f"swift://{unreachable}/{account}/c/x.img"})
    assert no_route.error_code == ErrorCode.SOURCE_UNREACHABLE, no_route.message
    workers.stop()

    wrong_key = {object_store.hostport: {**object_store.swift_credentials()[object_store.hostport], "key": "wrong"}}
    settings.SWIFT_CREDENTIALS = wrong_key
    workers = start_workers_with(IMAGEACTIONS_SWIFT_CREDENTIALS=json.dumps(wrong_key))
    refused = failed_import(alice, workers, {"location": f"swift://{object_store.hostport}/{account}/c/x.img"})
    assert refused.error_code == ErrorCode.SOURCE_REFUSED, refused.message
    assert "rejected the credentials" in refused.message


# -- a download that broke and could not be resumed ------------------------------------------


class DropThenRefuse:
    """An HTTP source on 127.0.0.1 that sends part of its body, offering resumes (Accept-Ranges,
    ETag), closes the connection, and stops listening: the resume's connect is refused."""

    def __init__(self, data: bytes, after: int):
        self.data, self.after = data, after
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve_once, daemon=True)
        self.thread.start()

    def _serve_once(self):
        connection, _ = self.listener.accept()
        self.listener.close()  # from now on, connecting is refused
        with connection:
            connection.recv(65536)  # the request
            headers = (
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                f'Content-Length: {len(self.data)}\r\nAccept-Ranges: bytes\r\nETag: "v1"\r\n\r\n'
            )
            connection.sendall(headers.encode() + self.data[: self.after])


def test_a_download_that_broke_and_whose_resume_is_refused_is_source_interrupted(alice, workers):
    source = DropThenRefuse(random_image(200_000, seed=66), after=50_000)
    url = f"http://127.0.0.1:{source.port}/disk.img"
    action = failed_import(alice, workers, {"location": url})
    assert action.error_code == ErrorCode.SOURCE_INTERRUPTED, action.message
    assert action.message.startswith(
        f"Could not retrieve image. The connection to '{url}' closed after 48.8 KiB of 195.3 KiB, "
        f"and reconnecting to resume failed: Connection refused by '127.0.0.1:{source.port}'"
    )
    assert action.error_details == {"bytes_received": 50_000, "size_announced": 200_000, "resumes": 1}


def test_bytes_lost_with_the_workers_scratch_space_are_image_data_missing_not_a_store_fault(alice, tmp_path):
    # Reached when a step runs again on a worker whose scratch space lacks the file (another
    # host, or a scratch directory removed); called directly, as no API request can remove it.
    created = alice.post(ACTIONS, {"action_type": "test", "input": {"await_data": True}}, format="json").json()
    ctx = StepContext(ImageAction.objects.get(pk=created["id"]), None, None)
    with pytest.raises(StepError) as caught:
        store_image_file(ctx, tmp_path / "gone", image_id=str(uuid.uuid4()), size=10, stores=None, what="The image")
    assert caught.value.code == ErrorCode.IMAGE_DATA_MISSING
    assert str(caught.value) == "The image was lost: its worker's scratch space is gone. Start the action again"
