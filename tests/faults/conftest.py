"""The servers that fault tests start for themselves and then break: an HTTP image server with
Range support and throttling, and private PostgreSQL, Redis and Swift instances; plus a
"deployment" (API under gunicorn and worker processes) that runs against them."""

import glob
import hashlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import PROFILE, ROOT
from tests.http_servers import LoopbackHandler, LoopbackServer, free_port
from tests.objectstore import SCRIPTS, TEST_BUCKET, ObjectStoreServer

# The servers here are started per test, so the scale-out run (which exists to swap the
# shared servers) would only repeat these tests.
embedded_only = pytest.mark.skipif(
    PROFILE != "embedded", reason="fault tests bring their own servers; run once in the embedded run"
)
MiB = 1024 * 1024


def wait_until(condition, *, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(interval)


def require_binary(name: str, *candidates: str) -> str:
    """The path of a server binary; a failure (never a skip) naming what to install when missing."""
    for candidate in candidates:
        for path in sorted(glob.glob(candidate), reverse=True):
            if os.access(path, os.X_OK):
                return path
    found = shutil.which(name)
    if not found:
        pytest.fail(
            f"The fault tests need the '{name}' binary (PostgreSQL and Redis server packages); "
            f"install it (e.g. apt-get install postgresql redis-server)",
            pytrace=False,
        )
    return found


def patterned_bytes(size: int, seed: int = 0) -> bytes:
    block = b"".join(hashlib.sha512(f"{seed}.{i}".encode()).digest() for i in range(16384))  # 1 MiB
    return (block * (size // len(block) + 1))[:size]


# -- an HTTP image server whose connections break on demand ---------------------------------


class FaultyFile:
    def __init__(
        self, data: bytes, *, ranges: bool, close_after: int | None, closes: int, rate: float | None, ignore_range: bool
    ):
        self.data, self.ranges, self.close_after, self.closes = data, ranges, close_after, closes
        self.rate, self.ignore_range = rate, ignore_range
        self.etag = '"' + hashlib.md5(data[:MiB]).hexdigest() + f'-{len(data)}"'
        self.requests: list[dict] = []  # the headers of each GET, in order
        self.broken = 0  # connections closed mid-body so far


class FaultyImageServer(LoopbackServer):
    """Serves /NAME; per file: Range support (Accept-Ranges, ETag, If-Range), a connection that
    closes after `close_after` bytes for the first `closes` answers, a rate limit in bytes/s."""

    def __init__(self):
        super().__init__(FaultyRequestHandler)
        self.files: dict[str, FaultyFile] = {}

    def add(
        self, name: str, data: bytes, *, ranges=True, close_after=None, closes=0, rate=None, ignore_range=False
    ) -> str:
        self.files[name] = FaultyFile(
            data, ranges=ranges, close_after=close_after, closes=closes, rate=rate, ignore_range=ignore_range
        )
        return self.url(f"/{name}")


class FaultyRequestHandler(LoopbackHandler):
    owner: FaultyImageServer

    def do_GET(self):
        file = self.owner.files.get(self.path.lstrip("/"))
        if file is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        file.requests.append(dict(self.headers))
        start = self._range_start(file)
        body = memoryview(file.data)[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(file.data) - 1}/{len(file.data)}")
        if file.ranges:
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", file.etag)
        self.end_headers()
        limit = len(body)
        if file.close_after is not None and file.broken < file.closes:
            file.broken += 1
            limit = min(limit, file.close_after)
            self.close_connection = True
        self._send(body[:limit], file.rate)

    def _range_start(self, file: FaultyFile) -> int:
        wanted = self.headers.get("Range", "")
        if not (file.ranges and not file.ignore_range and wanted.startswith("bytes=") and wanted.endswith("-")):
            return 0
        if self.headers.get("If-Range", file.etag) != file.etag:
            return 0
        return int(wanted[len("bytes=") : -1])

    def _send(self, body: memoryview, rate: float | None) -> None:
        began, sent, piece = time.monotonic(), 0, 256 * 1024
        try:
            while sent < len(body):
                if self.owner.stopping.is_set():
                    return
                self.wfile.write(body[sent : sent + piece])
                sent += min(piece, len(body) - sent)
                if rate:
                    ahead = sent / rate - (time.monotonic() - began)
                    if ahead > 0:
                        time.sleep(ahead)
            self.wfile.flush()
        except OSError:
            pass  # the client went away (a killed worker)


@pytest.fixture
def faulty_server():
    with FaultyImageServer().serving() as server:
        yield server


# -- private PostgreSQL, Redis and Swift ----------------------------------------------------


def _as_postgres(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


class PrivatePostgres:
    """A PostgreSQL server of its own in a temporary directory (never the machine's on 5432)."""

    def __init__(self):
        self.initdb = require_binary("initdb", "/usr/lib/postgresql/*/bin/initdb")
        self.pg_ctl = str(Path(self.initdb).with_name("pg_ctl"))
        # Outside pytest's tmp_path: the postgres user cannot enter root's 0700 directories.
        self.directory = Path(tempfile.mkdtemp(prefix="imageactions-faults-pg-"))
        self.data = self.directory / "data"
        self.port = free_port()
        if os.geteuid() == 0:
            postgres = pwd.getpwnam("postgres")
            os.chown(self.directory, postgres.pw_uid, postgres.pw_gid)

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> "PrivatePostgres":
        self._run([self.initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync"], 60)
        self._run(
            [
                self.pg_ctl,
                "-D",
                str(self.data),
                "-l",
                str(self.directory / "server.log"),
                "-w",
                "-o",
                f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off",
                "start",
            ],
            60,
        )
        return self

    def restart(self) -> None:
        # -l again: without it the new server logs to pg_ctl's stdout and holds the pipe open.
        self._run(
            [
                self.pg_ctl,
                "-D",
                str(self.data),
                "-l",
                str(self.directory / "server.log"),
                "-m",
                "fast",
                "-w",
                "restart",
            ],
            60,
        )

    def create_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

    def stop(self) -> None:
        subprocess.run(
            _as_postgres([self.pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop"]),
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(self.directory, ignore_errors=True)

    def _run(self, command: list[str], timeout: float) -> None:
        result = subprocess.run(_as_postgres(command), capture_output=True, text=True, timeout=timeout, check=False)
        if result.returncode:
            log = self.directory / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise AssertionError(f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}\n{tail}")


@pytest.fixture
def private_postgres():
    server = PrivatePostgres().start()
    yield server
    server.stop()


class PrivateRedis:
    """A redis-server of its own that keeps nothing on disk: a restart loses every queued task."""

    def __init__(self, directory: Path):
        self.binary = require_binary("redis-server")
        self.directory, self.port = directory, free_port()
        self.process = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "PrivateRedis":
        with open(self.directory / "redis.log", "ab") as log:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                    "--dir",
                    str(self.directory),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        import redis

        client = redis.Redis.from_url(self.url)
        wait_until(lambda: _answers(client), timeout=10, what="redis-server start")
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()


def _answers(client) -> bool:
    import redis

    try:
        return client.ping()
    except redis.RedisError:
        return False


@pytest.fixture
def private_redis(tmp_path):
    server = PrivateRedis(tmp_path).start()
    yield server
    server.stop()


class PrivateSwift:
    """A Swift (s3api) of its own, on ports of its own, that a test may crash and start again
    (the session's shared object store serves other tests meanwhile)."""

    def __init__(self, directory: Path):
        self.directory = directory
        names = (
            "SWIFT_PROXY_PORT",
            "SWIFT_OBJECT_PORT",
            "SWIFT_CONTAINER_PORT",
            "SWIFT_ACCOUNT_PORT",
            "SWIFT_MEMCACHED_PORT",
        )
        self.ports = {name: str(free_port()) for name in names}

    def start(self) -> ObjectStoreServer:
        result = subprocess.run(
            ["bash", str(SCRIPTS / "start_swift.sh"), str(self.directory)],
            env={**os.environ, **self.ports},
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if result.returncode:
            pytest.fail(f"Could not start a private Swift:\n{result.stderr[-3000:]}", pytrace=False)
        values = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
        self.server = ObjectStoreServer(
            s3_endpoint=values["S3_ENDPOINT"],
            s3_access_key=values["S3_KEY"],
            s3_secret_key=values["S3_SECRET"],
            s3_region=values["S3_REGION"],
            swift_auth_url=values["SWIFT_AUTH_URL"],
            swift_user=values["SWIFT_USER"],
            swift_key=values["SWIFT_KEY"],
            swift_storage_url=values["SWIFT_STORAGE_URL"],
            bucket=TEST_BUCKET,
            directory=self.directory,
        )
        self.server.create_bucket(TEST_BUCKET)
        return self.server

    def crash_proxy(self) -> None:
        """kill -9 the proxy (the S3 endpoint): connections drop and new ones are refused at once."""
        os.kill(int((self.directory / "run" / "proxy-server.pid").read_text()), signal.SIGKILL)

    def stop(self, *, purge: bool = False) -> None:
        subprocess.run(
            ["bash", str(SCRIPTS / "stop_swift.sh"), str(self.directory), *(["--purge"] if purge else [])],
            capture_output=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            check=False,
        )


@pytest.fixture
def private_swift(tmp_path):
    swift = PrivateSwift(tmp_path / "swift")
    yield swift
    swift.stop(purge=True)


# -- a deployment of its own: the API under gunicorn and worker processes ------------------


class Deployment:
    """The service run the way production runs it, every part a process of its own, against
    the database and broker that `env` names; the test talks to it over HTTP only."""

    def __init__(self, directory: Path, env: dict):
        self.directory = directory
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEACTIONS_")}
        self.env = {
            **inherited,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "PYTHONUNBUFFERED": "1",
            "IMAGEACTIONS_TEST_PROFILE": "embedded",
            "IMAGEACTIONS_DATA_DIR": str(directory / "data"),
            **env,
        }
        self.processes: list[subprocess.Popen] = []
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.http = requests.Session()

    @property
    def data_dir(self) -> Path:
        return Path(self.env["IMAGEACTIONS_DATA_DIR"])

    def manage(self, *args: str, timeout: float = 120) -> str:
        result = subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert result.returncode == 0, f"manage.py {' '.join(args)} failed:\n{result.stdout}{result.stderr}"
        return result.stdout

    def set_up(self) -> "Deployment":
        self.manage("migrate", "--no-input")
        token = self.manage("create_api_user", "alice", "--project", "project-a").strip()
        self.http.headers["Authorization"] = f"Token {token}"
        return self

    def start_api(self, *options: str) -> subprocess.Popen:
        """Start gunicorn as scripts/serve does (`options` add to or override its command line)."""
        process = self._spawn(
            "api",
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                "2",
                "--timeout",
                "60",
                "imageactions.wsgi:application",
                "-c",
                "python:imageactions.gunicorn_hooks",
                "--preload",
                "--no-control-socket",
                *options,
            ],
        )
        wait_until(self._api_answers, timeout=30, what="gunicorn start", interval=0.2)
        return process

    def start_workers(self, workers: int = 2, **env: str) -> subprocess.Popen:
        return self._spawn(
            f"worker-{len(self.processes)}",
            [sys.executable, str(ROOT / "manage.py"), "worker", "--workers", str(workers)],
            env,
        )

    def create_test_action(self, **test_input) -> str:
        response = self.http.post(
            f"{self.base_url}/v2/image-actions", json={"action_type": "test", "input": test_input}, timeout=30
        )
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def action(self, action_id: str) -> dict:
        response = self.http.get(f"{self.base_url}/v2/image-actions/{action_id}", timeout=30)
        assert response.status_code == 200, response.text
        return response.json()

    def step_run_counts(self, action_id: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        for marker in (self.data_dir / "test-runs").glob(f"{action_id}.*.*.*"):
            step = marker.name.split(".")[1]
            counts[step] = counts.get(step, 0) + 1
        return counts

    def log_tail(self, lines: int = 60) -> str:
        text = []
        for log in sorted(self.directory.glob("*.log")):
            text.append(f"== {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(text)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)  # see WorkerPool.stop in tests/conftest.py
                process.wait()

    def _spawn(self, name: str, command: list[str], env: dict | None = None) -> subprocess.Popen:
        with open(self.directory / f"{name}.log", "ab") as log:
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                env={**self.env, **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    def _api_answers(self) -> bool:
        try:
            return self.http.get(f"{self.base_url}/v2/image-actions", timeout=5).status_code == 200
        except requests.RequestException:
            return False


@pytest.fixture
def deployment(tmp_path):
    """`deployment(env)`: a Deployment set up (migrated, one API user) with `env`; stopped after the test."""
    started = []

    def make(env: dict) -> Deployment:
        (tmp_path / "deployment").mkdir(exist_ok=True)
        started.append(Deployment(tmp_path / "deployment", env))
        return started[-1].set_up()

    yield make
    for each in started:
        each.stop()
