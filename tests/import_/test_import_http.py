"""Imports from http:// URLs through the API and real workers, against a loopback HTTP server."""

import hashlib
import time

import pytest

from imageactions.models import Image
from imageactions.runner import scratch_dir
from tests.conftest import wait_for_action

from .conftest import assert_image_of, assert_left_nothing, random_image, run_import, start_import

MiB = 1024 * 1024


def test_http_import_creates_an_active_image_with_its_hashes_and_properties(alice, workers, image_server):
    data = random_image(3 * MiB + 17)
    url = image_server.add("plain.img", data)
    action = run_import(
        alice,
        workers,
        {"location": url},
        name="plain",
        tags=["a", "b"],
        min_disk=1,
        visibility="shared",
        properties={"os_distro": "debian"},
    )
    image = assert_image_of(
        action,
        data,
        name="plain",
        min_disk=1,
        visibility="shared",
        properties={"os_distro": "debian"},
        created_by_action=action.pk,
        status="active",
    )
    assert sorted(image.tag_set.values_list("name", flat=True)) == ["a", "b"]
    body = alice.get(f"/v2/image-actions/{action.pk}").json()
    assert body["result"] == {"image_ref": str(image.pk), "stores": ["local"], "failed_stores": []}
    assert body["progress"]["bytes_total"] == len(data)
    assert body["progress"]["percent"] == 100.0


def test_http_import_follows_a_chain_of_redirects(alice, workers, image_server):
    data = random_image(100_000, seed=1)
    image_server.add("redirected.img", data)
    action = run_import(alice, workers, {"location": image_server.url("/redirect/3/redirected.img")})
    assert_image_of(action, data)


def test_http_import_fails_after_too_many_redirects(alice, workers, image_server):
    image_server.add("far.img", b"x" * 100)
    url = image_server.url("/redirect/6/far.img")
    action = run_import(alice, workers, {"location": url})
    assert action.status == "failure"
    assert (
        action.message
        == f"Could not retrieve image. '{url}' redirected more than 5 times; give the final URL of the image"
    )
    assert_left_nothing(action)


def test_http_import_of_a_missing_url_fails_with_the_404_and_the_url(alice, workers, image_server):
    url = image_server.url("/files/missing.img")
    action = run_import(alice, workers, {"location": url})
    assert action.status == "failure"
    assert action.message == f"Could not retrieve image. Received 404 response for url '{url}'"
    assert_left_nothing(action)


def test_http_import_redirected_to_the_metadata_address_is_refused(alice, workers, image_server):
    target = "http://169.254.169.254/latest/meta-data/"
    url = image_server.url(f"/redirect-to?url={target}")
    action = run_import(alice, workers, {"location": url})
    assert action.status == "failure"
    assert action.message == (
        f"Could not retrieve image. '{url}' redirected to '{target}', which is not allowed: "
        "link-local/metadata addresses are refused"
    )
    assert_left_nothing(action)


def test_http_import_redirected_to_a_loopback_address_outside_the_allowlist_is_refused(
    alice, start_workers_with, image_server
):
    workers = start_workers_with(IMAGEACTIONS_URL_ALLOWED_NETWORKS="127.0.0.1/32")
    image_server.add("elsewhere.img", b"y" * 100)
    target = image_server.url("/files/elsewhere.img", host="127.0.0.2")
    url = image_server.url(f"/redirect-to?url={target}")
    action = run_import(alice, workers, {"location": url})
    assert action.status == "failure"
    assert action.message == (
        f"Could not retrieve image. '{url}' redirected to '{target}', which is not allowed: "
        "loopback addresses are refused"
    )


def test_default_url_policy_refuses_loopback_sources_on_the_worker(alice, start_workers_with, image_server):
    workers = start_workers_with(IMAGEACTIONS_URL_ALLOWED_NETWORKS="")
    url = image_server.add("local.img", b"z" * 100)
    action = run_import(alice, workers, {"location": url})
    assert action.status == "failure"
    assert action.message == f"Could not retrieve image. The url '{url}' is not allowed: loopback addresses are refused"


def test_http_import_from_a_closed_port_fails_with_connection_refused(alice, workers, closed_port):
    action = run_import(alice, workers, {"location": f"http://127.0.0.1:{closed_port}/image.img"})
    assert action.status == "failure"
    assert action.message == f"Could not retrieve image. Connection refused by '127.0.0.1:{closed_port}'"


def test_http_import_from_an_unknown_host_fails_naming_the_host(alice, workers):
    action = run_import(alice, workers, {"location": "http://no-such-host.invalid/image.img"})
    assert action.status == "failure"
    assert action.message == "Could not retrieve image. The host name 'no-such-host.invalid' could not be resolved"


def test_http_import_that_stalls_mid_body_fails_after_the_read_timeout(alice, start_workers_with, image_server):
    workers = start_workers_with(IMAGEACTIONS_HTTP_READ_TIMEOUT="1")
    image_server.add("stalling.img", random_image(4 * MiB))
    url = image_server.url(f"/stall/stalling.img?after={2 * MiB}")
    action = run_import(alice, workers, {"location": url})
    assert action.status == "failure"
    assert action.message == f"Could not retrieve image. The download from '{url}' stalled for 1 s after 2 MiB"
    assert_left_nothing(action)


def test_http_import_whose_connection_closes_mid_body_fails_when_the_server_cannot_resume(alice, workers, image_server):
    # /truncated/ offers no Accept-Ranges (tests/faults/ covers the resume with Range).
    image_server.add("truncated.img", random_image(MiB))
    url = image_server.url(f"/truncated/truncated.img?after={MiB // 4}")
    action = run_import(alice, workers, {"location": url})
    assert action.status == "failure"
    assert action.message.startswith(
        f"Could not retrieve image. The connection to '{url}' closed after 256 KiB of 1 MiB, "
        "and the server does not support resuming"
    )
    assert_left_nothing(action)


def test_http_import_announcing_more_than_the_size_cap_fails_before_reading(alice, start_workers_with, image_server):
    workers = start_workers_with(IMAGEACTIONS_IMAGE_MAX_SIZE=str(10 * MiB))
    action = run_import(alice, workers, {"location": image_server.url(f"/announce?length={11 * MiB}")})
    assert action.status == "failure"
    assert action.message == "The image is larger than the 10 MiB limit"
    assert_left_nothing(action)


def test_http_import_larger_than_the_size_cap_without_announcing_it_stops_at_the_cap(
    alice, start_workers_with, image_server
):
    workers = start_workers_with(IMAGEACTIONS_IMAGE_MAX_SIZE=str(MiB))
    image_server.add("too-big.img", random_image(3 * MiB))
    action = run_import(alice, workers, {"location": image_server.url("/unannounced/too-big.img")})
    assert action.status == "failure"
    assert action.message == "The image is larger than the 1 MiB limit"
    assert_left_nothing(action)


@pytest.mark.parametrize("algo", ["sha256", "sha512", "md5"])
def test_http_import_with_the_right_checksum_succeeds(alice, workers, image_server, algo):
    data = random_image(200_000, seed=2)
    url = image_server.add(f"sum-{algo}.img", data)
    checksum = {"algo": algo, "value": hashlib.new(algo, data).hexdigest()}
    action = run_import(alice, workers, {"location": url}, checksum=checksum)
    assert_image_of(action, data)


def test_http_import_with_a_wrong_checksum_fails_naming_both_values(alice, workers, image_server):
    data = random_image(200_000, seed=3)
    url = image_server.add("wrong-sum.img", data)
    wrong = hashlib.sha256(b"something else").hexdigest()
    action = run_import(alice, workers, {"location": url}, checksum={"algo": "sha256", "value": wrong})
    assert action.status == "failure"
    assert action.message == f"Checksum mismatch: expected sha256 {wrong}, got {hashlib.sha256(data).hexdigest()}"
    assert_left_nothing(action)


def test_http_import_of_an_empty_body_fails(alice, workers, image_server):
    url = image_server.add("empty.img", b"")
    action = run_import(alice, workers, {"location": url})
    assert action.status == "failure"
    assert action.message == "The image is empty (0 bytes); check the source and try again"
    assert_left_nothing(action)


def test_cancelling_an_import_while_uploading_leaves_no_staged_bytes(alice, workers, image_server):
    image_server.add("slow.img", random_image(8 * MiB))
    action_id = start_import(alice, {"location": image_server.url("/slow/slow.img?rate=65536")})
    running = wait_for_action(action_id, statuses=("uploading",), workers=workers)
    deadline = time.monotonic() + 20
    while not (scratch_dir(action_id) / "staged").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (scratch_dir(action_id) / "staged").exists(), "the import never started staging"
    response = alice.post(f"/v2/image-actions/{action_id}/cancel")
    assert response.status_code == 202
    action = wait_for_action(action_id, workers=workers, timeout=20)
    assert action.status == "cancelled"
    assert running.progress_step == "fetch"
    assert_left_nothing(action)
    assert not Image.objects.exists()
