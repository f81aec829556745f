"""Fixtures for import tests: a loopback HTTP image server, workers with their own settings,
a gunicorn serving the API, and helpers that check an action left nothing behind."""

import hashlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from imageactions.models import Image
from imageactions.runner import scratch_dir
from tests.conftest import ROOT, database_url, wait_for_action
from tests.http_servers import LoopbackHandler, LoopbackServer, closed_port, free_port  # noqa: F401  (a fixture)


class ImageServer(LoopbackServer):
    """An HTTP server on 127.0.0.1 whose paths behave as the tests need (see ImageRequestHandler)."""

    def __init__(self):
        super().__init__(ImageRequestHandler)
        self.files: dict[str, bytes] = {}

    def add(self, name: str, data: bytes) -> str:
        self.files[name] = data
        return self.url(f"/files/{name}")


class ImageRequestHandler(LoopbackHandler):
    """/files/NAME: the bytes; /status/CODE; /redirect/N/NAME: N redirects then the file;
    /redirect-to?url=U; /stall/NAME?after=B: B bytes then silence; /truncated/NAME?after=B:
    B bytes then the connection closes; /slow/NAME?rate=B: B bytes per 0.1 s;
    /unannounced/NAME: the file without a Content-Length;
    /announce?length=L: a Content-Length of L and a short body."""

    owner: ImageServer

    def do_GET(self):
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        segments = parts.path.strip("/").split("/")
        route, args = segments[0], segments[1:]
        handler = getattr(self, f"serve_{route.replace('-', '_')}", None)
        if handler is None:
            return self.send_status(404)
        handler(*args, **query)

    def send_status(self, code: int, headers=()):
        self.send_response(code)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def start_body(self, length: int):
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def serve_files(self, name):
        data = self.owner.files.get(name)
        if data is None:
            return self.send_status(404)
        self.start_body(len(data))
        self.wfile.write(data)

    def serve_status(self, code):
        self.send_status(int(code))

    def serve_redirect(self, hops, name):
        hops = int(hops)
        target = f"/redirect/{hops - 1}/{name}" if hops > 1 else f"/files/{name}"
        self.send_status(302, [("Location", target)])

    def serve_redirect_to(self, url):
        self.send_status(302, [("Location", url)])

    def serve_stall(self, name, after="0"):
        data = self.owner.files[name]
        self.start_body(len(data))
        self.wfile.write(data[: int(after)])
        self.wfile.flush()
        self.owner.stopping.wait(120)

    def serve_truncated(self, name, after="0"):
        data = self.owner.files[name]
        self.start_body(len(data))
        self.wfile.write(data[: int(after)])
        self.wfile.flush()
        self.close_connection = True

    def serve_slow(self, name, rate="65536"):
        data, rate = self.owner.files[name], int(rate)
        self.start_body(len(data))
        try:
            for start in range(0, len(data), rate):
                if self.owner.stopping.wait(0.1):
                    return
                self.wfile.write(data[start : start + rate])
                self.wfile.flush()
        except OSError:
            pass  # the client went away (a cancelled import)

    def serve_unannounced(self, name):
        self.send_response(200)
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(self.owner.files[name])
        self.close_connection = True

    def serve_announce(self, length):
        self.start_body(int(length))
        self.wfile.write(b"x" * 1024)
        self.close_connection = True


@pytest.fixture(scope="session")
def image_server():
    with ImageServer().serving() as server:
        yield server


@pytest.fixture
def start_workers_with(start_workers, monkeypatch):
    """`start_workers_with(IMAGEACTIONS_X="..."):` a worker pool whose settings differ from the tests'."""

    def start(**env):
        with monkeypatch.context() as patch:
            for name, value in env.items():
                patch.setenv(name, value)
            return start_workers()

    return start


def random_image(size: int, seed: int = 0) -> bytes:
    return (hashlib.sha512(str(seed).encode()).digest() * (size // 64 + 1))[:size]


def import_body(source: dict, *, name="test-image", checksum=None, **properties) -> dict:
    body = {"action_type": "import", "input": {**source, "image_properties": {"name": name, **properties}}}
    if checksum:
        body["input"]["checksum"] = checksum
    return body


def start_import(client, source: dict, **kwargs) -> str:
    response = client.post("/v2/image-actions", import_body(source, **kwargs), format="json")
    assert response.status_code == 201, response.json()
    return response.json()["id"]


def run_import(client, workers, source: dict, *, timeout=60, **kwargs):
    """POST an import, wait for it to end, return the action row."""
    return wait_for_action(start_import(client, source, **kwargs), workers=workers, timeout=timeout)


def assert_left_nothing(action):
    """A failed or cancelled import leaves no Image, no stored object and no scratch files."""
    assert not Image.objects.filter(created_by_action=action.pk).exists()
    assert not scratch_dir(action.pk).exists()
    from imageactions.stores import get_store

    for name, key in action.state.get("store_keys", {}).items():
        assert not get_store(name).exists(key)


def assert_image_of(action, data: bytes, **expected):
    """The action succeeded and its Image has the bytes' size and hashes."""
    assert action.status == "success", action.message
    image = Image.objects.get(pk=action.result["image_ref"])
    assert image.size == len(data)
    assert image.checksum == hashlib.md5(data).hexdigest()
    assert image.os_hash_algo == "sha512"
    assert image.os_hash_value == hashlib.sha512(data).hexdigest()
    assert image.owner == "project-a"
    for field, value in expected.items():
        assert getattr(image, field) == value, field
    from imageactions.stores import get_store

    with get_store(image.location.store).open_read(image.location.key) as stored:
        assert hashlib.sha512(stored.read()).hexdigest() == image.os_hash_value
    assert not scratch_dir(action.pk).exists()
    return image


# -- the API behind gunicorn (for chunked uploads, which need a real HTTP server) ----------


class ApiServer:
    def __init__(self, port: int, process: subprocess.Popen, log_path: Path):
        self.port, self.process, self.log_path = port, process, log_path
        self.base_url = f"http://127.0.0.1:{port}"

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


@pytest.fixture
def api_server(transactional_db, tmp_path):
    port = free_port()
    log_path = tmp_path / "gunicorn.log"
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="tests.settings", IMAGEACTIONS_DATABASE_URL=database_url())
    log = open(log_path, "ab")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--worker-class",
            "gthread",
            "--threads",
            "8",
            "--timeout",
            "120",
            "imageactions.wsgi:application",
            "--no-control-socket",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = ApiServer(port, process, log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            requests.get(server.base_url + "/v2/image-actions", timeout=5)
            break
        except requests.RequestException:
            time.sleep(0.2)
    else:
        process.kill()
        raise AssertionError(f"gunicorn did not start:\n{server.log_tail()}")
    yield server
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    log.close()


def token_of(client) -> str:
    return re.sub(r"^Token ", "", client._credentials["HTTP_AUTHORIZATION"])
