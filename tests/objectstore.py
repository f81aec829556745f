"""The object store the tests talk to: a real Swift (S3 API and Swift API) on 127.0.0.1.

Started once per test session by scripts/object-store/start_swift.sh; see object_store().
"""

import os
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from botocore.exceptions import ClientError

from imageactions.stores import build_s3_client

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts" / "object-store"
TEST_BUCKET = "imageactions-test"
# Away from a developer's own Swift (8080, 6200-6202) and memcached (11211); when one of
# them is taken anyway, the operating system picks free ones (see choose_ports()).
PREFERRED_PORTS = {
    "SWIFT_PROXY_PORT": 18080,
    "SWIFT_OBJECT_PORT": 16200,
    "SWIFT_CONTAINER_PORT": 16201,
    "SWIFT_ACCOUNT_PORT": 16202,
    "SWIFT_MEMCACHED_PORT": 21211,
}
# The first start on a fresh machine installs Debian's swift packages.
START_TIMEOUT = 900


@dataclass(frozen=True)
class ObjectStoreServer:
    """Where the test Swift listens, and how to log in to it."""

    s3_endpoint: str
    s3_access_key: str
    s3_secret_key: str
    s3_region: str
    swift_auth_url: str
    swift_user: str
    swift_key: str
    swift_storage_url: str
    bucket: str
    directory: Path

    @property
    def hostport(self) -> str:
        """ "127.0.0.1:PORT", as in swift://127.0.0.1:PORT/... URLs and SWIFT_CREDENTIALS."""
        return urlsplit(self.s3_endpoint).netloc

    def s3_store_config(self, **overrides) -> dict:
        """An IMAGE_STORES entry for an S3 store in the test bucket."""
        return {
            "type": "s3",
            "bucket": self.bucket,
            "endpoint_url": self.s3_endpoint,
            "access_key": self.s3_access_key,
            "secret_key": self.s3_secret_key,
            "region_name": self.s3_region,
            "addressing_style": "path",
            "region": "test",
            **overrides,
        }

    def swift_credentials(self) -> dict:
        """A SWIFT_CREDENTIALS setting for this Swift."""
        return {self.hostport: {"auth_url": self.swift_auth_url, "user": self.swift_user, "key": self.swift_key}}

    def s3_client(self):
        return build_s3_client(
            endpoint_url=self.s3_endpoint,
            access_key=self.s3_access_key,
            secret_key=self.s3_secret_key,
            region_name=self.s3_region,
            addressing_style="path",
        )

    def create_bucket(self, name: str) -> None:
        try:
            self.s3_client().create_bucket(Bucket=name)
        except ClientError as error:
            if error.response["Error"]["Code"] != "BucketAlreadyOwnedByYou":
                raise


def choose_ports() -> dict[str, int]:
    # scripts/test runs the scale-out profile beside the embedded one: it never takes the
    # preferred ports, so the two sessions cannot race for them.
    scaleout = os.environ.get("IMAGEACTIONS_TEST_PROFILE") == "scaleout"
    if not scaleout and all(_port_is_free(port) for port in PREFERRED_PORTS.values()):
        return dict(PREFERRED_PORTS)
    sockets = []
    try:
        for _ in PREFERRED_PORTS:  # all held open at once, so the five are distinct
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return {name: sock.getsockname()[1] for name, sock in zip(PREFERRED_PORTS, sockets)}
    finally:
        for sock in sockets:
            sock.close()


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def start_object_store(directory: Path, *, workers: int = 0) -> ObjectStoreServer:
    """Start Swift with the project's script, or fail with the script's last words; `workers`
    forked processes per server (0: one process each, as the tests run it)."""
    script = SCRIPTS / "start_swift.sh"
    ports = {name: str(port) for name, port in choose_ports().items()}
    try:
        result = subprocess.run(
            ["bash", str(script), str(directory)],
            env={**os.environ, **ports, "SWIFT_WORKERS": str(workers)},
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as error:
        _fail_to_start(script, f"no answer after {START_TIMEOUT} s", error.stdout, error.stderr)
    if result.returncode != 0:
        _fail_to_start(script, f"exit status {result.returncode}", result.stdout, result.stderr)
    values = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    server = ObjectStoreServer(
        s3_endpoint=values["S3_ENDPOINT"],
        s3_access_key=values["S3_KEY"],
        s3_secret_key=values["S3_SECRET"],
        s3_region=values["S3_REGION"],
        swift_auth_url=values["SWIFT_AUTH_URL"],
        swift_user=values["SWIFT_USER"],
        swift_key=values["SWIFT_KEY"],
        swift_storage_url=values["SWIFT_STORAGE_URL"],
        bucket=TEST_BUCKET,
        directory=directory,
    )
    server.create_bucket(TEST_BUCKET)
    return server


def stop_object_store(directory: Path) -> None:
    subprocess.run(
        ["bash", str(SCRIPTS / "stop_swift.sh"), str(directory), "--purge"],
        capture_output=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def _fail_to_start(script: Path, why: str, stdout, stderr) -> None:
    output = "\n".join(part for part in (_text(stderr), _text(stdout)) if part)
    tail = "\n".join(output.splitlines()[-40:])
    # A failure, never a skip: CI must not pass without the object-store tests having run.
    pytest.fail(f"Could not start the test object store with {script} ({why}). Last lines:\n{tail}", pytrace=False)


def _text(output) -> str:
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


# One Swift per test session even when several modules import the fixture (each import is a
# fixture definition of its own): keyed by the session's temporary directory.
_running: dict[Path, ObjectStoreServer] = {}


@pytest.fixture(scope="session")
def object_store(tmp_path_factory) -> ObjectStoreServer:
    """A running Swift with s3api on 127.0.0.1 and an empty bucket `TEST_BUCKET`, for the whole session."""
    directory = tmp_path_factory.getbasetemp() / "object-store"
    if directory not in _running:
        directory.mkdir(exist_ok=True)
        try:
            _running[directory] = start_object_store(directory)
        except BaseException:
            stop_object_store(directory)
            raise
    yield _running[directory]
    if _running.pop(directory, None) is not None:
        stop_object_store(directory)
