"""Parallel ranged fetch of http sources: a large source that serves ranges is read over several
connections by real workers, against a loopback server that serves ranges, counts them, and
breaks, changes or redirects them on demand."""

import hashlib
import threading
import time
from dataclasses import dataclass, field

import pytest

from actions_import.sources import open_source, parse_location
from imageactions.models import ImageAction
from imageactions.pipeline import StepError
from imageactions.runner import scratch_dir
from tests.conftest import wait_for_action
from tests.http_servers import LoopbackHandler, LoopbackServer

from .conftest import assert_image_of, assert_left_nothing, random_image, run_import, start_import

MiB = 1024 * 1024
PART = MiB
# Small parts and threshold, so a few MiB make many parts.
PARALLEL = {
    "IMAGEACTIONS_FETCH_CONNECTIONS": "4",
    "IMAGEACTIONS_FETCH_PART_SIZE": str(PART),
    "IMAGEACTIONS_FETCH_PARALLEL_THRESHOLD": str(4 * MiB),
}


@dataclass
class RangedFile:
    data: bytes
    ranges: bool = True
    drop_range_at: int | None = None  # the first `drops` range answers starting here close after...
    drop_after: int = 0  # ...this many bytes
    drops: int = 1
    change_after: int | None = None  # after this many range answers the file is another one
    honour_if_range: bool = True
    serves_ranges: bool = True  # False: announces ranges, answers a range request with all of it
    redirect_ranges_to: str | None = None
    rate: float | None = None  # bytes/s per connection
    version: int = 0
    requests: list = field(default_factory=list)  # (client port, Range, If-Range) of each GET

    @property
    def etag(self) -> str:
        return f'"v{self.version}-{hashlib.md5(self.data[:4096]).hexdigest()}"'

    def range_requests(self) -> list:
        return [r for r in self.requests if r[1]]


class RangeServer(LoopbackServer):
    """Serves /NAME with `Range: bytes=A-B` (and `bytes=A-`), an ETag and If-Range; counts the
    connections still being answered in `active`."""

    def __init__(self):
        super().__init__(RangeHandler)
        self.files: dict[str, RangedFile] = {}
        self.active = 0
        self.lock = threading.Lock()

    def add(self, name: str, data: bytes, **behaviour) -> str:
        self.files[name] = RangedFile(data, **behaviour)
        return self.url(f"/{name}")


class RangeHandler(LoopbackHandler):
    owner: RangeServer

    def do_GET(self):
        with self.owner.lock:
            self.owner.active += 1
        try:
            self._answer()
        finally:
            with self.owner.lock:
                self.owner.active -= 1

    def _answer(self):
        file = self.owner.files.get(self.path.lstrip("/").split("?")[0])
        if file is None:
            return self._empty(404)
        wanted = self.headers.get("Range")
        file.requests.append((self.client_address[1], wanted, self.headers.get("If-Range")))
        if wanted and file.redirect_ranges_to:
            return self._empty(302, ("Location", file.redirect_ranges_to))
        changes = file.change_after is not None and file.version == 0
        if wanted and changes and len(file.range_requests()) > file.change_after:
            file.version, file.data = 1, bytes(reversed(file.data))
        start, end = 0, len(file.data) - 1
        partial = bool(wanted and file.ranges and file.serves_ranges)
        if partial and file.honour_if_range and self.headers.get("If-Range", file.etag) != file.etag:
            partial = False
        if partial:
            first, _, last = wanted.removeprefix("bytes=").partition("-")
            start, end = int(first), min(int(last) if last else end, end)
        self.send_response(206 if partial else 200)
        self.send_header("Content-Length", str(end - start + 1))
        if partial:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(file.data)}")
        if file.ranges:
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", file.etag)
        self.end_headers()
        body = memoryview(file.data)[start : end + 1]
        if partial and start == file.drop_range_at and file.drops > 0:
            file.drops -= 1
            body, self.close_connection = body[: file.drop_after], True
        self._send(body, file.rate)

    def _send(self, body, rate):
        began, sent, piece = time.monotonic(), 0, 64 * 1024
        try:
            while sent < len(body) and not self.owner.stopping.is_set():
                self.wfile.write(body[sent : sent + piece])
                sent += len(body[sent : sent + piece])
                if rate and (ahead := sent / rate - (time.monotonic() - began)) > 0:
                    time.sleep(ahead)
            self.wfile.flush()
        except OSError:
            self.close_connection = True  # the client went away

    def _empty(self, status, *headers):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def range_server():
    with RangeServer().serving() as server:
        yield server


@pytest.fixture
def parallel_workers(start_workers_with):
    return start_workers_with(**PARALLEL)


def fetch_facts(action) -> dict:
    return ImageAction.objects.get(pk=action.pk).state["fetch"]


def test_large_import_is_fetched_over_several_connections_with_the_right_bytes(alice, parallel_workers, range_server):
    data = random_image(10 * MiB + 123, seed=40)
    url = range_server.add("big.img", data)
    action = run_import(alice, parallel_workers, {"location": url})
    assert_image_of(action, data)
    file = range_server.files["big.img"]
    # The first part comes with the first answer; each other part is one range request.
    assert file.requests[0][1:] == (None, None)
    # First a request of the last byte, to see that ranges are served, then the parts.
    assert file.range_requests()[0][1] == f"bytes={len(data) - 1}-{len(data) - 1}"
    assert sorted(r[1] for r in file.range_requests()[1:]) == sorted(
        f"bytes={start}-{min(start + PART, len(data)) - 1}" for start in range(PART, len(data), PART)
    )
    assert {r[2] for r in file.range_requests()} == {file.etag}
    assert len({r[0] for r in file.requests}) >= 2, "all parts came over one connection"
    facts = fetch_facts(action)
    assert facts["connections"] == 4
    assert facts["parts"] == 11
    assert facts["resumes"] == 0
    assert facts["buffer_cap_bytes"] == 4 * PART
    assert 0 < facts["buffer_peak_bytes"] <= facts["buffer_cap_bytes"]


def test_a_part_whose_connection_drops_is_resumed_on_its_own(alice, parallel_workers, range_server):
    data = random_image(9 * MiB + 5, seed=41)
    url = range_server.add("drops.img", data, drop_range_at=3 * PART, drop_after=300_000)
    action = run_import(alice, parallel_workers, {"location": url})
    assert_image_of(action, data)
    ranges = [r[1] for r in range_server.files["drops.img"].range_requests()]
    assert ranges.count(f"bytes={3 * PART}-{4 * PART - 1}") == 1
    assert f"bytes={3 * PART + 300_000}-{4 * PART - 1}" in ranges
    assert fetch_facts(action)["resumes"] == 1


def test_a_part_that_keeps_breaking_fails_the_import_after_the_configured_resumes(
    alice, start_workers_with, range_server
):
    workers = start_workers_with(IMAGEACTIONS_HTTP_MAX_RESUMES="2", **PARALLEL)
    data = random_image(9 * MiB, seed=46)
    url = range_server.add("flapping.img", data, drop_range_at=5 * PART, drop_after=0, drops=100)
    action = run_import(alice, workers, {"location": url})
    assert action.status == "failure"
    assert action.message.startswith(
        f"Could not retrieve image. The connection to '{url}' for bytes {5 * PART} to {6 * PART - 1} of 9 MiB "
        f"broke 3 times, the last at byte {5 * PART} ("
    )
    assert action.message.endswith("); try again later")
    assert action.error_code == "source_interrupted"
    assert [r[1] for r in range_server.files["flapping.img"].range_requests()].count(
        f"bytes={5 * PART}-{6 * PART - 1}"
    ) == 3
    assert_left_nothing(action)


@pytest.mark.parametrize("honour_if_range", [True, False], ids=["answers-200", "sends-another-etag"])
def test_an_image_that_changes_during_the_download_fails_instead_of_mixing_versions(
    alice, parallel_workers, range_server, honour_if_range
):
    data = random_image(12 * MiB, seed=42)
    url = range_server.add("changing.img", data, change_after=4, honour_if_range=honour_if_range, rate=8 * MiB)
    action = run_import(alice, parallel_workers, {"location": url})
    assert action.status == "failure"
    assert action.message.startswith(f"Could not retrieve image. The image at '{url}' changed while it was downloaded")
    assert action.error_code == "source_interrupted"
    assert_left_nothing(action)


def test_a_range_redirected_to_a_refused_address_is_refused_without_connecting(
    alice, start_workers_with, range_server, settings
):
    with RangeServer().serving() as trap:
        target = trap.url("/big.img")
        trap.add("big.img", random_image(10 * MiB, seed=43))
        url = range_server.add("redirected.img", random_image(10 * MiB, seed=43), redirect_ranges_to=target)
        settings.URL_ALLOWED_PORTS = [range_server.port]
        workers = start_workers_with(IMAGEACTIONS_URL_ALLOWED_PORTS=str(range_server.port), **PARALLEL)
        action = run_import(alice, workers, {"location": url})
        assert action.status == "failure"
        assert action.message.startswith(
            f"Could not retrieve image. '{url}' redirected to '{target}', which is not allowed"
        )
        assert action.error_code == "url_not_allowed"
        assert trap.files["big.img"].requests == []
        assert_left_nothing(action)


@pytest.mark.parametrize(("size", "ranges"), [(3 * MiB, True), (10 * MiB, False)], ids=["below-threshold", "no-ranges"])
def test_a_small_source_or_one_without_ranges_is_read_as_one_stream(
    alice, parallel_workers, range_server, size, ranges
):
    data = random_image(size, seed=44)
    url = range_server.add("single.img", data, ranges=ranges)
    action = run_import(alice, parallel_workers, {"location": url})
    assert_image_of(action, data)
    assert [r[1:] for r in range_server.files["single.img"].requests] == [(None, None)]
    assert fetch_facts(action) == {"connections": 1}


def test_a_source_that_announces_ranges_but_sends_all_of_it_is_read_as_one_stream(
    alice, parallel_workers, range_server
):
    data = random_image(6 * MiB, seed=46)
    url = range_server.add("cdn.img", data, serves_ranges=False)
    action = run_import(alice, parallel_workers, {"location": url})
    assert_image_of(action, data)
    # The first answer, the one range asked to see whether ranges are served, and nothing more.
    requests = [r[1] for r in range_server.files["cdn.img"].requests]
    assert requests == [None, f"bytes={len(data) - 1}-{len(data) - 1}"]
    assert fetch_facts(action) == {"connections": 1}


def test_cancelling_a_parallel_fetch_closes_every_connection(alice, parallel_workers, range_server):
    url = range_server.add("slow.img", random_image(16 * MiB, seed=45), rate=256 * 1024)
    action_id = start_import(alice, {"location": url})
    wait_for_action(action_id, statuses=("uploading",), workers=parallel_workers)
    deadline = time.monotonic() + 20
    while range_server.active < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert range_server.active == 4, "the fetch never had its four connections open"
    assert alice.post(f"/v2/image-actions/{action_id}/cancel").status_code == 202
    action = wait_for_action(action_id, workers=parallel_workers, timeout=20)
    assert action.status == "cancelled"
    while range_server.active and time.monotonic() < deadline + 20:
        time.sleep(0.05)
    assert range_server.active == 0, "connections of the cancelled fetch stayed open"
    assert not scratch_dir(action_id).exists()
    assert_left_nothing(action)


def test_abort_stops_every_thread_of_a_parallel_read(range_server, settings):
    settings.FETCH_CONNECTIONS, settings.FETCH_PART_SIZE, settings.FETCH_PARALLEL_THRESHOLD = 4, PART, 4 * MiB
    url = range_server.add("aborted.img", random_image(16 * MiB, seed=47), rate=256 * 1024)
    opened = open_source(parse_location(url), parallel=True)
    failure = []
    reading = threading.Thread(target=lambda: failure.append(_read_all_failing(opened.reader)))
    reading.start()
    try:
        deadline = time.monotonic() + 20
        while range_server.active < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert range_server.active == 4, "the read never had its four connections open"
        opened.abort()
        reading.join(20)
        assert not reading.is_alive(), "read() did not return after abort()"
        assert "was stopped" in str(failure[0])
    finally:
        opened.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("fetch-part-")]
    while range_server.active and time.monotonic() < deadline + 20:
        time.sleep(0.05)
    assert range_server.active == 0, "connections of the aborted read stayed open"


def _read_all_failing(reader) -> BaseException | None:
    try:
        while reader.read(MiB):
            pass
    except StepError as error:
        return error
    return None
