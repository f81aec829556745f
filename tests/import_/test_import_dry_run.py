"""POST ...?dry_run=true: an import checked as far as it can be without importing — the input,
the URL policy, the source's answer and, from its first bytes, compression and disk format."""

import gzip
import socket
import subprocess
import time

import pytest

from imageactions.models import IdempotencyKey, ImageAction

from .conftest import import_body, random_image, run_import

ACTIONS = "/v2/image-actions"


def dry_run(client, source: dict, **properties):
    return client.post(f"{ACTIONS}?dry_run=true", import_body(source, **properties), format="json")


@pytest.fixture
def qcow2_bytes(tmp_path) -> bytes:
    path = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "64M"], check=True)
    return path.read_bytes()


def test_a_dry_run_reports_what_the_source_holds_and_creates_nothing(alice, image_server, qcow2_bytes):
    response = dry_run(alice, {"location": image_server.add("disk.qcow2", qcow2_bytes)}, disk_format="qcow2")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["dry_run"] is True and body["action_type"] == "import"
    assert body["input"]["image_properties"]["name"] == "test-image"
    assert body["checks"]["source"] == {
        "kind": "http",
        "size": len(qcow2_bytes),
        "content_type": "application/octet-stream",
        "compression": None,
        "disk_format": "qcow2",
    }
    assert not ImageAction.objects.exists()


def test_a_fixed_vhd_declared_as_such_is_not_refused_for_what_its_head_does_not_show(alice, image_server, tmp_path):
    path = tmp_path / "fixed.vhd"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat=fixed", str(path), "8M"], check=True)
    response = dry_run(alice, {"location": image_server.add("fixed.vhd", path.read_bytes())}, disk_format="vhd")
    assert response.status_code == 200, response.json()
    assert response.json()["checks"]["source"]["disk_format"] is None  # its footer is at the end


def test_a_compressed_source_is_seen_through(alice, image_server):
    raw = random_image(300_000, seed=40)
    body = dry_run(alice, {"location": image_server.add("disk.raw.gz", gzip.compress(raw))}).json()
    assert body["checks"]["source"]["compression"] == "gzip"
    assert body["checks"]["source"]["disk_format"] == "raw"


@pytest.mark.parametrize(
    ("serve", "declared", "says", "code"),
    [
        (lambda server: server.url("/status/404"), None, "Received 404 response", "source_not_found"),
        (
            lambda server: server.add("movie.mp4", b"\x00\x00\x00\x20ftypisom" + b"\x00" * 5000),
            None,
            "MP4",
            "not_a_disk_image",
        ),
        (
            lambda server: server.add("raw.img", random_image(70_000, seed=41)),
            "qcow2",
            "declared as qcow2",
            "format_mismatch",
        ),
        (lambda server: server.url("/announce?length=999999999999999"), None, "larger than", "image_too_large"),
    ],
)
def test_a_source_the_import_would_fail_on_is_a_422_with_the_code_it_would_fail_with(
    alice, image_server, serve, declared, says, code
):
    properties = {"disk_format": declared} if declared else {}
    response = dry_run(alice, {"location": serve(image_server)}, **properties)
    assert response.status_code == 422, response.json()
    assert says in response.json()["errors"]["input"][0]
    assert response.json()["code"] == code
    assert not ImageAction.objects.exists()


def test_the_url_policy_applies_to_a_dry_run(alice, image_server, settings):
    settings.URL_ALLOWED_NETWORKS = []
    response = dry_run(alice, {"location": image_server.add("x.img", b"x" * 1000)})
    assert response.status_code == 422  # as the create itself: the input names a place it may not reach
    assert response.json()["code"] == "url_not_allowed"
    assert "not allowed" in response.json()["errors"]["input.location"][0]


def test_an_invalid_input_is_the_answer_of_the_create_and_a_dry_run_remembers_no_key(alice):
    assert dry_run(alice, {"location": "file:///etc/passwd"}).status_code == 422
    assert dry_run(alice, {"location": "http://example.com/x.img", "source": "upload"}).status_code == 400
    ok = alice.post(
        f"{ACTIONS}?dry_run=true", import_body({"source": "upload"}), format="json", HTTP_IDEMPOTENCY_KEY="k"
    )
    assert ok.status_code == 200 and ok.json()["checks"]["source"]["kind"] == "upload"
    assert not IdempotencyKey.objects.exists() and not ImageAction.objects.exists()
    assert alice.post(f"{ACTIONS}?dry_run=maybe", import_body({"source": "upload"}), format="json").status_code == 400


def test_an_empty_source_is_empty_image_as_in_the_import(alice, workers, image_server):
    url = image_server.add("empty.img", b"")
    response = dry_run(alice, {"location": url})
    assert response.status_code == 422, response.json()
    assert response.json()["code"] == "empty_image"
    action = run_import(alice, workers, {"location": url})
    assert action.error_code == "empty_image"
    assert response.json()["errors"]["input"] == [action.message]


def test_an_image_over_the_size_cap_has_the_limit_in_the_details_as_in_the_import(
    alice, start_workers_with, image_server, settings
):
    settings.IMAGE_MAX_SIZE = 100_000
    workers = start_workers_with(IMAGEACTIONS_IMAGE_MAX_SIZE="100000")
    url = image_server.add("big.img", random_image(150_000, seed=42))
    response = dry_run(alice, {"location": url})
    assert response.status_code == 422 and response.json()["code"] == "image_too_large"
    action = run_import(alice, workers, {"location": url})
    assert action.error_code == "image_too_large"
    assert response.json()["error_details"] == action.error_details == {"limit": 100_000}


class Silent:
    """A TCP port on 127.0.0.1 that takes connections (the kernel's backlog) and never answers."""

    def __enter__(self):
        self.socket = socket.create_server(("127.0.0.1", 0), backlog=8)
        return f"http://127.0.0.1:{self.socket.getsockname()[1]}/disk.img"

    def __exit__(self, *exc_info):
        self.socket.close()


@pytest.mark.parametrize("stall", ["before the headers", "in the body"])
def test_a_source_that_stalls_is_timed_out_within_the_dry_runs_bound(alice, image_server, settings, stall):
    settings.DRY_RUN_READ_SECONDS = 1
    image_server.add("stalling.img", random_image(200_000, seed=43))
    with Silent() as silent_url:
        url = silent_url if stall == "before the headers" else image_server.url("/stall/stalling.img?after=1000")
        began = time.monotonic()
        response = dry_run(alice, {"location": url})
        took = time.monotonic() - began
    # The API thread is free at the bound, though the source's own timeouts are a minute.
    assert took < 3, took
    assert response.status_code == 422, response.json()
    body = response.json()
    assert body["code"] == "timed_out"
    assert body["error_details"] == {"seconds": 1, "bytes_wanted": 65536}
    assert "did not answer the dry run with its first 64 KiB within 1 s" in body["errors"]["input"][0]


def test_a_source_announced_bigger_than_the_projects_byte_quota_leaves_is_the_imports_quota_exceeded(
    alice, image_server, settings
):
    settings.QUOTA_IMAGE_SIZE = 10_000
    response = dry_run(alice, {"location": image_server.url("/announce?length=20000")})
    assert response.status_code == 422, response.json()
    assert response.json()["code"] == "quota_exceeded"
    assert response.json()["error_details"] == {"quota": "image_size_total", "limit": 10_000, "usage": 0}
    settings.QUOTA_IMAGE_SIZE = 30_000  # room enough: the dry run goes on to the first bytes
    assert dry_run(alice, {"location": image_server.url("/announce?length=20000")}).json()["code"] != "quota_exceeded"
