"""Fixtures for export tests: a loopback HTTP server that accepts PUTs (and serves what it got),
raw images made directly in the default store, and helpers to run an export to its end."""

import hashlib
import time

import pytest

from tests.conftest import wait_for_action
from tests.http_servers import LoopbackHandler, LoopbackServer, closed_port  # noqa: F401  (a fixture)
from tests.images.conftest import put_image

MiB = 1024 * 1024


def patterned_bytes(size: int, seed: int = 0) -> bytes:
    """A raw disk whose sectors differ from each other, so a misplaced block changes the hash."""
    block = hashlib.sha512(str(seed).encode()).digest()
    return b"".join(block[:56] + index.to_bytes(8, "big") for index in range(size // 64 + 1))[:size]


class PutServer(LoopbackServer):
    """An HTTP server on 127.0.0.1: PUT /files/NAME stores the body, GET /files/NAME serves it;
    PUT /status/CODE answers CODE without storing; PUT /slow/NAME reads 64 KiB per 0.1 s."""

    def __init__(self):
        super().__init__(PutRequestHandler)
        self.files: dict[str, bytes] = {}
        self.requests: list[dict] = []  # method, path, headers, bytes received, complete


class PutRequestHandler(LoopbackHandler):
    owner: PutServer

    def do_PUT(self):
        route, _, name = self.path.split("?", 1)[0].strip("/").partition("/")
        record = {"method": "PUT", "path": self.path, "headers": dict(self.headers), "received": 0, "complete": False}
        self.owner.requests.append(record)
        length = int(self.headers.get("Content-Length", "-1"))
        if route == "status":
            self.read_body(record, length)
            return self.answer(int(name))
        if route == "redirect":
            self.read_body(record, length)
            return self.answer(307, [("Location", self.owner.url(f"/files/{name}"))])
        body = self.read_body(record, length, slow=route == "slow")
        if body is None:
            return
        self.owner.files[name] = body
        self.answer(201)

    def read_body(self, record, length, slow=False):
        chunks = []
        while record["received"] < length:
            if slow and self.owner.stopping.wait(0.1):
                return None
            chunk = self.rfile.read(min(65536, length - record["received"]))
            if not chunk:
                return None  # the client went away (a cancelled export)
            chunks.append(chunk)
            record["received"] += len(chunk)
        record["complete"] = True
        return b"".join(chunks)

    def do_GET(self):
        data = self.owner.files.get(self.path.strip("/").partition("/")[2])
        if data is None:
            return self.answer(404)
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def answer(self, code, headers=()):
        self.send_response(code)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture(scope="session")
def put_server():
    with PutServer().serving() as server:
        yield server


@pytest.fixture
def raw_image(transactional_db):
    """An active 8 MiB raw image of project-a with patterned bytes, and those bytes."""
    data = patterned_bytes(8 * MiB)
    return put_image("project-a", data, name="web server", disk_format="raw", virtual_size=len(data)), data


def start_export(client, image_id, destination: dict, **fields) -> str:
    body = {"action_type": "export", "input": {"image_id": str(image_id), "destination": destination, **fields}}
    response = client.post("/v2/image-actions", body, format="json")
    assert response.status_code == 201, response.json()
    return response.json()["id"]


def run_export(client, workers, image_id, destination: dict, *, timeout=60, **fields):
    """POST an export, wait for it to end; the action as the API shows it to `client`."""
    action_id = start_export(client, image_id, destination, **fields)
    wait_for_action(action_id, workers=workers, timeout=timeout)
    return client.get(f"/v2/image-actions/{action_id}").json()


def download(client, action: dict, **headers):
    """GET the export's download link; the response with its streamed body joined as .body."""
    response = client.get(action["result"]["location"], **headers)
    response.body = b"".join(response.streaming_content) if response.streaming else response.content
    return response


def wait_until(predicate, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")
