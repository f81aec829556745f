"""Every import failure carries a stable error_code (and the values checked in error_details),
each reached here through a real failure with real workers; ?error_code= finds them."""

import gzip
import hashlib
import random
import subprocess

import pytest

from imageactions.choices import ErrorCode
from imageactions.models import ProjectQuota
from tests.conftest import wait_for_action

from .conftest import import_body, random_image

ACTIONS = "/v2/image-actions"


def failed_import(alice, workers, source: dict, **properties):
    response = alice.post(ACTIONS, import_body(source, **properties), format="json")
    assert response.status_code == 201, response.json()
    action = wait_for_action(response.json()["id"], workers=workers)
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
