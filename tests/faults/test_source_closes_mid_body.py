"""An http source whose connection closes mid-body: resumed with Range where the server
supports it (the hashes run on over the resumed bytes), else a failure that says so."""

from imageactions.runner import scratch_dir
from tests.conftest import wait_for_action
from tests.import_.conftest import assert_image_of, assert_left_nothing, start_import

from .conftest import MiB, embedded_only, patterned_bytes, wait_until

pytestmark = embedded_only


def import_from(client, workers, url, timeout=60):
    action = wait_for_action(start_import(client, {"location": url}), workers=workers, timeout=timeout)
    # The runner publishes the end first and then removes the scratch directory.
    wait_until(lambda: not scratch_dir(action.pk).exists(), timeout=10, what="scratch removal")
    return action


def test_import_whose_connection_closes_twice_resumes_with_range_and_gets_the_right_hashes(
    alice, workers, faulty_server
):
    data = patterned_bytes(50 * MiB, seed=1)
    url = faulty_server.add("resumable.img", data, close_after=12 * MiB, closes=2)
    action = import_from(alice, workers, url)
    assert_image_of(action, data)
    requests = faulty_server.files["resumable.img"].requests
    etag = faulty_server.files["resumable.img"].etag
    assert [r.get("Range") for r in requests] == [None, f"bytes={12 * MiB}-", f"bytes={24 * MiB}-"]
    assert [r.get("If-Range") for r in requests] == [None, etag, etag]


def test_import_from_a_server_without_range_support_fails_saying_it_cannot_resume(alice, workers, faulty_server):
    url = faulty_server.add("no-ranges.img", patterned_bytes(50 * MiB), ranges=False, close_after=12 * MiB, closes=1)
    action = import_from(alice, workers, url)
    assert action.status == "failure"
    assert action.message == (
        f"Could not retrieve image. The connection to '{url}' closed after 12 MiB of 50 MiB, and the server "
        "does not support resuming; try again, or serve the image from a server that supports Range requests"
    )
    assert len(faulty_server.files["no-ranges.img"].requests) == 1
    assert_left_nothing(action)


def test_import_whose_server_answers_200_to_the_range_request_fails_instead_of_mixing_bytes(
    alice, workers, faulty_server
):
    url = faulty_server.add(
        "ignores-range.img", patterned_bytes(20 * MiB), close_after=5 * MiB, closes=1, ignore_range=True
    )
    action = import_from(alice, workers, url)
    assert action.status == "failure"
    assert action.message.startswith(
        f"Could not retrieve image. The connection to '{url}' closed after 5 MiB of 20 MiB, and the server "
        f"does not support resuming (it answered 200 to 'Range: bytes={5 * MiB}-'"
    )
    assert_left_nothing(action)


def test_import_whose_connection_keeps_closing_gives_up_after_the_configured_resumes(
    alice, start_workers, faulty_server
):
    workers = start_workers(env={"IMAGEACTIONS_HTTP_MAX_RESUMES": "2"})
    url = faulty_server.add("flapping.img", patterned_bytes(20 * MiB), close_after=2 * MiB, closes=100)
    action = import_from(alice, workers, url)
    assert action.status == "failure"
    assert action.message == (
        f"Could not retrieve image. The connection to '{url}' closed after 6 MiB of 20 MiB, "
        "and it closed again after 2 resumed downloads; try again later"
    )
    assert len(faulty_server.files["flapping.img"].requests) == 3
    assert_left_nothing(action)
