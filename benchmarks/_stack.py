"""What the benchmarks share: a throw-away database (PostgreSQL, or SQLite for the embedded
profile) and Redis queue prefix, gunicorn and `manage.py worker` processes on 127.0.0.1, a
loopback server of image bytes, and the timing of actions from POST to success.

Everything a run creates (database, Redis keys, processes, temp directory) is removed on exit.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
TERMINAL = ("success", "failure", "cancelled")
MiB = 1024 * 1024
GiB = 1024 * MiB
CHUNK = MiB  # read and write unit of the baselines
# How a benchmark hands its verdicts to benchmarks/run_all: one line per case, this prefix and JSON.
ROW_PREFIX = "BENCHMARK-ROW "


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values, fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def median(values) -> float:
    return statistics.median(values)


def report_row(case: str, *, baseline: str, ours: str, ratio: float, target: str) -> dict:
    """Print one case's verdict for benchmarks/run_all and return it.

    `baseline` and `ours` are the two figures as a person reads them ("12.3 s", "410 MiB/s");
    `target` is the bound on `ratio`, "<= 1.2" or ">= 3".
    """
    import json

    bound, value = target.split()
    met = ratio <= float(value) if bound == "<=" else ratio >= float(value)
    row = {"case": case, "baseline": baseline, "ours": ours, "ratio": round(ratio, 3), "target": target, "met": met}
    print(ROW_PREFIX + json.dumps(row), flush=True)
    return row


class _ImageHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        body = self.server.files.get(self.path.split("?")[0])
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(body.stat().st_size if isinstance(body, Path) else len(body)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if isinstance(body, Path):
            self._send_file(body)
        else:
            self.wfile.write(body)

    def _send_file(self, path: Path):
        """With sendfile, so serving a large image costs the benchmark little CPU."""
        self.wfile.flush()
        with open(path, "rb") as f:
            try:
                self.connection.sendfile(f)
            except OSError:
                pass  # the client went away


class ImageServer:
    """Serves files on 127.0.0.1: `server.add('/a.raw', data)` returns the URL; `data` is bytes
    in memory, or the Path of a file on disk (a large image)."""

    def __init__(self):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _ImageHandler)
        self.httpd.daemon_threads = True
        self.httpd.request_queue_size = 256
        self.httpd.files = {}
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def add(self, path: str, data: bytes | Path) -> str:
        self.httpd.files[path] = data
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self):
        self.httpd.shutdown()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def size_argument(position: int = 1) -> int:
    """The SIZE_GIB command-line argument of the throughput benchmarks, in bytes (default 1 GiB)."""
    return int(float(sys.argv[position]) * GiB) if len(sys.argv) > position else GiB


def large_import_env(size: int) -> dict:
    """Settings that let an import of `size` bytes through the image size limit."""
    return {"IMAGEACTIONS_IMAGE_MAX_SIZE": str(max(size, GiB) * 2)}


def small_image(size: int) -> bytes:
    """Random bytes: the import inspects them as a raw disk (no format's magic matches)."""
    return os.urandom(size)


def write_random_file(path: Path, size: int) -> None:
    block = os.urandom(64 * CHUNK)  # repeated: random enough for hashing, cheap to make
    with open(path, "wb") as out:
        left = size
        while left:
            out.write(block[: min(left, len(block))])
            left -= min(left, len(block))


def sha512_and_md5(path: Path) -> tuple[str, str]:
    sha512, md5 = hashlib.sha512(), hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            sha512.update(chunk)
            md5.update(chunk)
    return sha512.hexdigest(), md5.hexdigest()


def fetch_baseline(url: str, target: Path) -> float:
    """Seconds of `curl URL | tee TARGET | sha512sum`, in Python: one stream, written and hashed.
    The file is removed afterwards."""
    start = time.perf_counter()
    digest = hashlib.sha512()
    with requests.get(url, stream=True, timeout=60) as response, open(target, "wb") as out:
        response.raise_for_status()
        while chunk := response.raw.read(CHUNK):
            out.write(chunk)
            digest.update(chunk)
    elapsed = time.perf_counter() - start
    target.unlink()
    return elapsed


def copy_baseline(source: Path, target: Path, *, durable: bool = False) -> float:
    """Seconds of `cp SOURCE TARGET && sha512sum TARGET`, in Python; `durable` adds the fsync the
    stores do. The copy is removed afterwards."""
    start = time.perf_counter()
    shutil.copyfile(source, target)
    if durable:
        with open(target, "rb") as f:
            os.fsync(f.fileno())
    digest = hashlib.sha512()
    with open(target, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    elapsed = time.perf_counter() - start
    target.unlink()
    return elapsed


def peak_rss_mib(process: subprocess.Popen) -> list[float]:
    """The peak resident memory (VmHWM) of each process below `process` (a worker's pool), in MiB."""
    peaks = []
    for pid in _descendants(process.pid):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) / 1024)
        except OSError:
            pass  # ended meanwhile
    return peaks


def pss_mib(pid: int) -> dict[int, float]:
    """The proportional set size of `pid` and of every process below it, in MiB: pages shared
    by several processes count once overall, in shares, so the values add up to their footprint."""
    sizes = {}
    for each in [pid, *_descendants(pid)]:
        try:
            rollup = Path(f"/proc/{each}/smaps_rollup").read_text().splitlines()
        except OSError:
            continue  # ended meanwhile
        sizes[each] = next(int(line.split()[1]) for line in rollup if line.startswith("Pss:")) / 1024
    return sizes


def cpu_seconds(pids) -> float:
    """User and system CPU time the processes `pids` have used so far (those gone count 0)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def _descendants(pid: int) -> list[int]:
    found, stack = [], [pid]
    while stack:
        parent = stack.pop()
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            found.append(child)
            stack.append(child)
    return found


@contextmanager
def object_store(directory: Path, *, workers: int = 2):
    """The tests' Swift with its S3 API (tests/objectstore.py) on 127.0.0.1, its data in
    `directory`, with `workers` processes per server (one process per server would measure one
    Python process); stopped and purged on exit."""
    sys.path.insert(0, str(ROOT))
    from tests.objectstore import start_object_store, stop_object_store

    try:
        yield start_object_store(directory, workers=workers)
    finally:
        stop_object_store(directory)


class Stack:
    """A PostgreSQL database, a Redis queue prefix, gunicorn and worker pools for one benchmark.

    `embedded=True` uses SQLite and the ORM broker instead (the default profile).
    """

    def __init__(self, name: str, *, embedded: bool = False, env: dict | None = None):
        self.name = f"{name}_{os.getpid()}"
        self.embedded = embedded
        self.work = Path(tempfile.mkdtemp(prefix=f"imageactions-{name}-"))
        self.processes: list[tuple[str, subprocess.Popen]] = []
        self.database_created = False
        self.env = dict(
            os.environ,
            DJANGO_SETTINGS_MODULE="settings",
            IMAGEACTIONS_DATA_DIR=str(self.work / "data"),
            IMAGEACTIONS_SECRET_KEY="benchmark-only-secret-key",
            IMAGEACTIONS_URL_ALLOWED_NETWORKS="127.0.0.0/8",
            IMAGEACTIONS_ACTION_APPS="actions_import",
            IMAGEACTIONS_API_RATE="1000000/min",
            IMAGEACTIONS_LOG_LEVEL="WARNING",
            # Workers at the priority of the baselines they are compared with: on a shared machine
            # the service's lower default priority would be measured instead of its work
            # (serving_under_imports.py measures the priorities themselves).
            IMAGEACTIONS_WORKER_NICENESS="0",
            IMAGEACTIONS_WORKER_IO_PRIORITY="",
            PYTHONUNBUFFERED="1",
        )
        if not embedded:
            self.env.update(
                IMAGEACTIONS_DATABASE_URL=f"{PG_ADMIN_URL}/{self.name}",
                IMAGEACTIONS_BROKER_URL=REDIS_URL,
                IMAGEACTIONS_QUEUE_PREFIX=f"{self.name}-",
            )
        self.env.update(env or {})

    # -- set-up ----------------------------------------------------------------------
    def __enter__(self):
        if not self.embedded:
            self.psql(f'CREATE DATABASE "{self.name}"', database="postgres")
            self.database_created = True
        self.manage("migrate", "-v", "0")
        return self

    @property
    def sqlite_database(self) -> Path:
        """The embedded profile's database file."""
        return self.work / "data" / "imageactions.sqlite3"

    def psql(self, sql: str, *, database: str | None = None) -> str:
        url = f"{PG_ADMIN_URL}/{database or self.name}"
        done = subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-qtAc", sql], capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"psql failed: {done.stderr.strip()}\n  SQL: {sql[:300]}")
        return done.stdout

    def wait_until_ended(self, count: int, *, deadline: float, interval: float = 0.1):
        """Wait until `count` actions have ended, reading PostgreSQL directly (API polling would
        load the same CPUs the workers need)."""
        import psycopg

        with psycopg.connect(f"{PG_ADMIN_URL}/{self.name}", autocommit=True) as db:
            while True:
                ended = db.execute(
                    "SELECT count(*) FROM imageactions_imageaction WHERE status = ANY(%s)", (list(TERMINAL),)
                ).fetchone()[0]
                if ended >= count:
                    return
                if time.monotonic() > deadline:
                    raise SystemExit(f"only {ended} of {count} actions ended before the deadline")
                time.sleep(interval)

    def manage(self, *args, capture: bool = False) -> str:
        done = subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), *args], cwd=ROOT, env=self.env, capture_output=True, text=True
        )
        if done.returncode:
            raise SystemExit(f"manage.py {' '.join(args)} failed:\n{done.stderr[-2000:]}")
        return done.stdout.strip()

    def record_image(self, image_id: str, store: str, key: str, path: Path) -> str:
        """The Image row of bytes already in `store` under `key` (made by the product's own
        create_image() in a manage.py shell); returns their sha512."""
        sha512, md5 = sha512_and_md5(path)
        self.manage(
            "shell",
            "-c",
            (
                "from imageactions.images import create_image; "
                f"create_image(id={image_id!r}, name='bench', owner='bench', locations={{{store!r}: {key!r}}}, "
                f"size={path.stat().st_size}, checksum={md5!r}, os_hash_value={sha512!r}, disk_format='raw')"
            ),
        )
        return sha512

    def run_action(
        self,
        session: requests.Session,
        api: str,
        action_type: str,
        input: dict,
        *,
        timeout: float,
        interval: float = 0.05,
    ) -> tuple[float, dict]:
        """POST an action and poll it until it ends: (seconds from POST to `success`, its body).
        Raises SystemExit when it ends otherwise, a process died or `timeout` passed."""
        start = time.perf_counter()
        created = session.post(f"{api}/v2/image-actions", json={"action_type": action_type, "input": input}, timeout=30)
        created.raise_for_status()
        action_url = f"{api}/v2/image-actions/{created.json()['id']}"
        deadline = time.monotonic() + timeout
        while (body := session.get(action_url, timeout=30).json())["status"] not in TERMINAL:
            stopped = [label for label, process in self.processes if process.poll() is not None]
            if stopped:
                raise SystemExit(
                    f"{stopped[0]} stopped while the {action_type} was {body['status']}:\n{self.log_tail(stopped[0])}"
                )
            if time.monotonic() > deadline:
                workers = [label for label, _process in self.processes if label.startswith("worker")]
                raise SystemExit(
                    f"the {action_type} is still {body['status']} after {timeout:g} s:\n"
                    f"{self.log_tail(workers[0]) if workers else ''}"
                )
            time.sleep(interval)
        elapsed = time.perf_counter() - start
        if body["status"] != "success":
            raise SystemExit(f"{action_type} ended {body['status']}: {body['message']}")
        return elapsed, body

    def timed_import(
        self, session: requests.Session, api: str, url: str, size: int, **input
    ) -> tuple[float, dict[str, float]]:
        """An http import of `url` (`size` bytes; more `input` fields as keywords) run to success:
        (seconds from POST to success, seconds per step)."""
        elapsed, action = self.run_action(
            session,
            api,
            "import",
            {"location": url, "image_properties": {"name": "bench"}, **input},
            timeout=120 + 60 * size / GiB,
        )
        return elapsed, self.step_durations(action["id"])

    def step_durations(self, action_id: str) -> dict[str, float]:
        """Seconds each step of the action ran (from its event log in the embedded profile's
        database); the rest of its POST-to-success time is queueing and polling."""
        with sqlite3.connect(self.sqlite_database) as db:
            rows = db.execute(
                "SELECT step, started_at, finished_at FROM imageactions_actionevent WHERE action_id = ?",
                (action_id.replace("-", ""),),
            ).fetchall()
        parse = datetime.fromisoformat
        return {step: round((parse(end) - parse(start)).total_seconds(), 3) for step, start, end in rows}

    def create_user(self, username: str, project: str) -> str:
        return self.manage("create_api_user", username, "--project", project)

    def create_users(self, users: list[tuple[str, str]]) -> list[str]:
        """Many users in one process (a manage.py start per user would take ~1 s each)."""
        code = (
            "import django, io, json, sys; django.setup()\n"
            "from django.core.management import call_command\n"
            "tokens = []\n"
            "for name, project in json.loads(sys.argv[1]):\n"
            "    out = io.StringIO(); call_command('create_api_user', name, '--project', project, stdout=out)\n"
            "    tokens.append(out.getvalue().strip())\n"
            "print(json.dumps(tokens))\n"
        )
        import json

        done = subprocess.run(
            [sys.executable, "-c", code, json.dumps(users)], cwd=ROOT, env=self.env, capture_output=True, text=True
        )
        if done.returncode:
            raise SystemExit(f"creating users failed:\n{done.stderr[-2000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    def _spawn(self, label: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
        log = open(self.work / f"{label}.log", "ab")
        process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**self.env, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append((label, process))
        return process

    def start_workers(
        self, pool: str = "default", workers: int | None = 2, env: dict | None = None
    ) -> subprocess.Popen:
        """A `manage.py worker` command; `workers=None` leaves the count to its default, as scripts/serve does."""
        label = f"worker-{pool}-{len(self.processes)}"
        count = ["--workers", str(workers)] if workers else []
        return self._spawn(label, [sys.executable, str(ROOT / "manage.py"), "worker", "--pool", pool, *count], env)

    def start_api(self, workers: int = 4, threads: int = 8, env: dict | None = None, label: str = "api") -> str:
        port = free_port()
        self._spawn(
            label,
            [
                sys.executable,
                "-m",
                "gunicorn",
                "imageactions.wsgi:application",
                "--no-control-socket",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(workers),
                "--worker-class",
                "gthread",
                "--threads",
                str(threads),
                "--timeout",
                "60",
                # Longer than the clients' pauses between requests, so the server does not
                # close a kept-alive connection just as a client reuses it (a reset).
                "--keep-alive",
                "10",
            ],
            env,
        )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                requests.get(f"{base}/v2/image-actions", timeout=5)
                return base
            except requests.RequestException:
                time.sleep(0.2)
        raise SystemExit(f"gunicorn did not answer within 60 s; see {self.work / f'{label}.log'}")

    def start_throughput_service(self) -> tuple[requests.Session, str, subprocess.Popen]:
        """The set-up every throughput benchmark times against: a user `bench`, one worker process
        and gunicorn with two single-threaded processes, ready. Returns (session, api URL, worker)."""
        session = api_session(self.create_user("bench", "bench"))
        worker = self.start_workers(workers=1)
        api = self.start_api(workers=2, threads=1)
        self.wait_for_workers()
        return session, api, worker

    def wait_for_workers(self, seconds: float = 4.0):
        """django-q2 clusters take a few seconds to fork their pool; tasks queued meanwhile wait."""
        time.sleep(seconds)
        for label, process in self.processes:
            if process.poll() is not None:
                raise SystemExit(f"{label} exited with {process.returncode}:\n{self.log_tail(label)}")

    def process_tree(self) -> list[int]:
        """Every process the stack started, with all their children (pool processes, gunicorn workers)."""
        return [pid for _label, process in self.processes for pid in (process.pid, *_descendants(process.pid))]

    def log_tail(self, label: str, lines: int = 30) -> str:
        path = self.work / f"{label}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop_workers(self):
        for _label, process in [p for p in self.processes if p[0].startswith("worker")]:
            self._kill(process)
        self.processes = [p for p in self.processes if not p[0].startswith("worker")]
        self.flush_queues()

    # -- tear-down -------------------------------------------------------------------
    @staticmethod
    def _kill(process: subprocess.Popen):
        # The whole process group: django-q2's guard, pool processes, monitor and pusher.
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.wait()

    def flush_queues(self):
        if self.embedded:
            return
        import redis

        broker = redis.Redis.from_url(REDIS_URL)
        for key in broker.scan_iter(f"django_q:{self.name}-*"):
            broker.delete(key)

    def __exit__(self, *exc):
        for _label, process in self.processes:
            self._kill(process)
        self.processes = []
        if not self.embedded:
            self.flush_queues()
            if self.database_created:
                self.psql(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)', database="postgres")
        if os.environ.get("BENCH_KEEP"):
            print(f"kept {self.work}", file=sys.stderr)
        else:
            shutil.rmtree(self.work, ignore_errors=True)
        return False


def api_session(token: str, pool_size: int = 4) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Token {token}"
    adapter = requests.adapters.HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size)
    session.mount("http://", adapter)
    return session


def create_import(session: requests.Session, api: str, url: str, name: str) -> requests.Response:
    return session.post(
        f"{api}/v2/image-actions",
        json={"action_type": "import", "input": {"location": url, "image_properties": {"name": name}}},
        timeout=30,
    )


def wait_all(session: requests.Session, api: str, ids, *, deadline: float, interval: float = 0.05) -> dict:
    """Poll each action until it ends; {id: final body}. Raises SystemExit at the deadline."""
    left, ended = set(ids), {}
    while left:
        for action_id in list(left):
            body = session.get(f"{api}/v2/image-actions/{action_id}", timeout=30).json()
            if body["status"] in TERMINAL:
                ended[action_id] = body
                left.discard(action_id)
        if left:
            if time.monotonic() > deadline:
                raise SystemExit(f"{len(left)} actions still not ended at the deadline, e.g. {sorted(left)[:3]}")
            time.sleep(interval)
    return ended
