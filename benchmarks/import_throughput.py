"""Import throughput: an http import into the filesystem store against fetch+write+sha512 of
the same URL, and the worker's peak memory.

Usage: python benchmarks/import_throughput.py [SIZE_GIB]   (default 1)
"""

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
GiB = 1024**3
CHUNK = 1024 * 1024


class FileHandler(BaseHTTPRequestHandler):
    """Serves the one benchmark file with sendfile, so the server costs little CPU."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = self.server.image_path
        size = path.stat().st_size
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        self.wfile.flush()
        with open(path, "rb") as f:
            try:
                self.connection.sendfile(f)
            except OSError:
                pass


def write_random_file(path: Path, size: int) -> None:
    block = os.urandom(64 * CHUNK)  # repeated: random enough for hashing, cheap to make
    with open(path, "wb") as out:
        left = size
        while left:
            out.write(block[: min(left, len(block))])
            left -= min(left, len(block))


def baseline(url: str, target: Path) -> float:
    """`curl URL | tee file | sha512sum`, in Python: stream, write, hash."""
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


def manage(env, *args, capture=False):
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args], cwd=ROOT, env=env, check=True,
        capture_output=capture, text=True,
    )


def peak_rss_kib(pids) -> dict[int, int]:
    peaks = {}
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks[pid] = int(line.split()[1])
        except OSError:
            pass
    return peaks


def descendants(pid: int) -> list[int]:
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


def main():
    size = int(float(sys.argv[1]) * GiB) if len(sys.argv) > 1 else GiB
    work = Path(tempfile.mkdtemp(prefix="imageactions-bench-"))
    env = dict(
        os.environ, DJANGO_SETTINGS_MODULE="settings", IMAGEACTIONS_DATA_DIR=str(work / "data"),
        IMAGEACTIONS_URL_ALLOWED_NETWORKS="127.0.0.0/8", IMAGEACTIONS_SECRET_KEY="benchmark",
        IMAGEACTIONS_WORKERS="1", IMAGEACTIONS_ACTION_APPS="actions_import", PYTHONUNBUFFERED="1",
        IMAGEACTIONS_IMAGE_MAX_SIZE=str(max(size, GiB) * 2),
    )
    worker = None
    httpd = None
    try:
        image = work / "image.raw"
        write_random_file(image, size)
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), FileHandler)
        httpd.image_path = image
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{httpd.server_address[1]}/image.raw"

        manage(env, "migrate", "-v", "0")
        token = manage(env, "create_api_user", "bench", "--project", "bench", capture=True).stdout.strip()
        worker = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "worker"], cwd=ROOT, env=env,
            stdout=open(work / "worker.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        api = start_api(env, work)
        time.sleep(3)  # the cluster's processes come up

        baseline(url, work / "warm-up")  # page cache and TCP warm, for both runs alike
        base = baseline(url, work / "baseline.out")

        session = requests.Session()
        session.headers["Authorization"] = f"Token {token}"
        start = time.perf_counter()
        created = session.post(
            f"{api}/v2/image-actions",
            json={"action_type": "import", "input": {"location": url, "image_properties": {"name": "bench"}}},
        )
        created.raise_for_status()
        action_url = f"{api}/v2/image-actions/{created.json()['id']}"
        deadline = time.monotonic() + 60 + 30 * size / GiB
        while True:
            body = session.get(action_url).json()
            if body["status"] in ("success", "failure", "cancelled"):
                break
            if worker.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the import is still {body['status']} and the worker has stopped or is stuck")
            time.sleep(0.05)
        elapsed = time.perf_counter() - start
        if body["status"] != "success":
            raise SystemExit(f"import ended {body['status']}: {body['message']}")
        peaks = peak_rss_kib(descendants(worker.pid))
        worker_peak = max(peaks.values()) / 1024

        print(json.dumps({
            "size_gib": round(size / GiB, 2),
            "baseline_s": round(base, 2),
            "import_s": round(elapsed, 2),
            "ratio": round(elapsed / base, 3),
            "baseline_mib_s": round(size / CHUNK / base, 1),
            "import_mib_s": round(size / CHUNK / elapsed, 1),
            "worker_peak_rss_mib": round(worker_peak, 1),
            "worker_processes_peak_rss_mib": sorted(round(v / 1024, 1) for v in peaks.values()),
            "steps_s": step_durations(work / "data" / "imageactions.sqlite3"),
        }, indent=2))
    finally:
        if worker is not None:
            os.killpg(worker.pid, 15)
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, 9)
                worker.wait()
        stop_api()
        if httpd is not None:
            httpd.shutdown()
        shutil.rmtree(work, ignore_errors=True)


def step_durations(database: Path) -> dict[str, float]:
    """Seconds each step ran (from the action's event log); the rest of import_s is queueing."""
    import sqlite3
    from datetime import datetime

    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT step, started_at, finished_at FROM imageactions_actionevent").fetchall()
    parse = datetime.fromisoformat
    return {step: round((parse(end) - parse(start)).total_seconds(), 2) for step, start, end in rows}


_api_process = []


def start_api(env, work: Path) -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "2",
         "imageactions.wsgi:application"],
        cwd=ROOT, env=env, stdout=open(work / "api.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    _api_process.append(process)
    base = f"http://127.0.0.1:{port}"
    for _ in range(150):
        try:
            requests.get(f"{base}/v2/image-actions", timeout=5)
            return base
        except requests.RequestException:
            time.sleep(0.2)
    raise SystemExit("the API did not start; see api.log")


def stop_api():
    for process in _api_process:
        process.terminate()
        process.wait(timeout=20)


if __name__ == "__main__":
    main()
