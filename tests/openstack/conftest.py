"""OpenStack's own clients (python-glanceclient, python-openstackclient, openstacksdk), installed from
PyPI with the test extras, against the API behind gunicorn with real workers; keystoneauth's
token-and-endpoint way of skipping Keystone, with an API token of this service."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.import_.conftest import api_server, closed_port, image_server, token_of  # noqa: F401  (fixtures)

BIN = Path(sys.executable).parent


class OpenStackClients:
    """The command-line clients as a user runs them (stdin closed: both treat a non-terminal
    stdin as image data), and an openstacksdk connection, all as one API user."""

    def __init__(self, base_url: str, token: str, home: Path):
        self.base_url, self.token, self.home = base_url, token, home

    def _run(self, command: list[str], timeout: int) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "IMAGEACTIONS_", "DJANGO_"))}
        env["HOME"] = str(self.home)  # glanceclient caches the image schema under ~/.glanceclient
        # With standard input closed (not merely empty), Python gives them sys.stdin = None.
        return subprocess.run(
            command, env=env, preexec_fn=lambda: os.close(0), capture_output=True, text=True, timeout=timeout
        )

    def glance(self, *args, timeout: int = 120) -> subprocess.CompletedProcess:
        base = [str(BIN / "glance"), "--os-image-url", self.base_url, "--os-auth-token", self.token]
        return self._run([*base, *args], timeout)

    def openstack(self, *args, timeout: int = 120) -> subprocess.CompletedProcess:
        base = [
            str(BIN / "openstack"),
            "--os-auth-type",
            "admin_token",
            "--os-endpoint",
            f"{self.base_url}/v2",
            "--os-token",
            self.token,
        ]
        return self._run([*base, *args], timeout)

    def sdk(self):
        import openstack

        return openstack.connect(auth_type="admin_token", auth={"endpoint": f"{self.base_url}/v2", "token": self.token})


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result.stdout


def json_out(result: subprocess.CompletedProcess):
    return json.loads(ok(result))


@pytest.fixture
def clients(api_server, alice, workers, tmp_path):  # noqa: F811  (api_server is the imported fixture)
    home = tmp_path / "home"
    home.mkdir()
    return OpenStackClients(api_server.base_url, token_of(alice), home)


@pytest.fixture
def three_stores(monkeypatch, settings, tmp_path):
    """Stores 'home' (the default), 'away' and 'far', for this test's API server and workers."""
    stores = {name: {"type": "filesystem", "path": str(tmp_path / name), "region": name} for name in STORE_NAMES}
    monkeypatch.setenv("IMAGEACTIONS_STORES", json.dumps(stores))
    monkeypatch.setenv("IMAGEACTIONS_DEFAULT_STORE", STORE_NAMES[0])
    settings.IMAGE_STORES, settings.DEFAULT_IMAGE_STORE = stores, STORE_NAMES[0]
    return stores


STORE_NAMES = ("home", "away", "far")


@pytest.fixture
def multistore_clients(three_stores, api_server, alice, start_workers, tmp_path):  # noqa: F811
    """The clients against a server and workers with three_stores (set up before both start)."""
    start_workers()
    home = tmp_path / "home-dir"
    home.mkdir()
    return OpenStackClients(api_server.base_url, token_of(alice), home)


def wait_for_image(alice, image_id, *, statuses=("active",), timeout=60) -> dict:
    """Poll GET /v2/images/{id} until its status is one of `statuses` (or a failed import shows)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = alice.get(f"/v2/images/{image_id}").json()
        if body["status"] in statuses or body.get("os_glance_failed_import"):
            return body
        time.sleep(0.1)
    raise AssertionError(f"image {image_id} still {body['status']!r} after {timeout}s")


def backing_file_qcow2(tmp_path: Path) -> Path:
    """A qcow2 whose backing file is a file of this host: refused by every import path."""
    path = tmp_path / "hostile.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", "/etc/hostname", "-F", "raw", str(path), "1M"], check=True
    )
    return path
