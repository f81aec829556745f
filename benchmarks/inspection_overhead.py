"""Cost of quality control on the 1 GiB import benchmark: format inspection and verifiers against
the fetch of the same run, and an import of the gzip of the same data against the plain import.

Usage: python benchmarks/inspection_overhead.py [SIZE_GIB]   (default 1; target: inspection <= 1.05x)
"""

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from http.server import ThreadingHTTPServer
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.import_throughput import (
    CHUNK,
    ROOT,
    FileHandler,
    GiB,
    manage,
    start_api,
    stop_api,
    write_random_file,
)
from imageactions.formats import DISK_FORMATS, inspect_image
from imageactions.formats.verifiers import AllowedFormats, MaxVirtualSize, run_verifiers

RUNS = 2  # each import is run this often; the fastest counts (the machine may be shared)


def write_disk_like_file(path: Path, size: int) -> None:
    """Half random data, half zeros in 1 MiB runs: compressible the way a used disk is."""
    random_part = work_file = path.with_suffix(".random")
    write_random_file(work_file, min(size, 64 * CHUNK))
    block = random_part.read_bytes()
    zeros = bytes(CHUNK)
    with open(path, "wb") as out:
        out.writelines(block[(index // 2 % 64) * CHUNK:][:CHUNK] if index % 2 == 0 else zeros for index in range(size // CHUNK))
    random_part.unlink()


def gzip_file(source: Path, target: Path) -> None:
    with open(source, "rb") as src, open(target, "wb") as out:
        subprocess.run(["gzip", "-1", "-c"], stdin=src, stdout=out, check=True)


def serve(directory: Path):
    """Serves one file per server (FileHandler serves `image_path`); answers the URL of each."""
    servers = {}
    for path in directory.iterdir():
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), FileHandler)
        httpd.image_path = path
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers[path.name] = httpd
    return servers


def run_import(session: requests.Session, api: str, url: str, size: int) -> tuple[float, str]:
    start = time.perf_counter()
    created = session.post(
        f"{api}/v2/image-actions",
        json={"action_type": "import", "input": {"location": url, "image_properties": {"name": "bench"}}},
    )
    created.raise_for_status()
    action_id = created.json()["id"]
    deadline = time.monotonic() + 120 + 60 * size / GiB
    while time.monotonic() < deadline:
        body = session.get(f"{api}/v2/image-actions/{action_id}").json()
        if body["status"] in ("success", "failure", "cancelled"):
            if body["status"] != "success":
                raise SystemExit(f"import ended {body['status']}: {body['message']}")
            return time.perf_counter() - start, action_id
        time.sleep(0.05)
    raise SystemExit("the import did not end in time")


def step_seconds(database: Path, action_id: str) -> dict[str, float]:
    with sqlite3.connect(database) as db:
        rows = db.execute(
            "SELECT step, started_at, finished_at FROM imageactions_actionevent WHERE action_id = ?",
            (action_id.replace("-", ""),),
        ).fetchall()
    parse = datetime.fromisoformat
    return {step: round((parse(end) - parse(start)).total_seconds(), 3) for step, start, end in rows}


def inspection_seconds(path: Path) -> float:
    """inspect_image + the two shipped verifiers, as the verify step runs them (page cache warm)."""
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        inspection = inspect_image(path, declared_format=None, max_virtual_size=1 << 40)
        run_verifiers(path, inspection, [MaxVirtualSize(1 << 40), AllowedFormats(DISK_FORMATS)])
        best = min(best, time.perf_counter() - start)
    return best


def main():
    size = int(float(sys.argv[1]) * GiB) if len(sys.argv) > 1 else GiB
    work = Path(tempfile.mkdtemp(prefix="imageactions-bench-"))
    files = work / "files"
    files.mkdir()
    env = dict(
        os.environ, DJANGO_SETTINGS_MODULE="settings", IMAGEACTIONS_DATA_DIR=str(work / "data"),
        IMAGEACTIONS_URL_ALLOWED_NETWORKS="127.0.0.0/8", IMAGEACTIONS_SECRET_KEY="benchmark",
        IMAGEACTIONS_WORKERS="1", IMAGEACTIONS_ACTION_APPS="actions_import", PYTHONUNBUFFERED="1",
        IMAGEACTIONS_IMAGE_MAX_SIZE=str(max(size, GiB) * 2),
    )
    worker, servers = None, {}
    try:
        image = files / "image.raw"
        write_disk_like_file(image, size)
        gzip_file(image, files / "image.raw.gz")
        servers = serve(files)
        urls = {name: f"http://127.0.0.1:{httpd.server_address[1]}/{name}" for name, httpd in servers.items()}

        manage(env, "migrate", "-v", "0")
        token = manage(env, "create_api_user", "bench", "--project", "bench", capture=True).stdout.strip()
        worker = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "worker"], cwd=ROOT, env=env,
            stdout=open(work / "worker.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        api = start_api(env, work)
        time.sleep(3)  # the cluster's processes come up
        session = requests.Session()
        session.headers["Authorization"] = f"Token {token}"
        database = work / "data" / "imageactions.sqlite3"

        plain, gzipped = [], []
        for _ in range(RUNS):  # interleaved, so a busy moment of the machine hits both alike
            elapsed, action_id = run_import(session, api, urls["image.raw"], size)
            plain.append((elapsed, step_seconds(database, action_id)))
            elapsed, action_id = run_import(session, api, urls["image.raw.gz"], size)
            gzipped.append((elapsed, step_seconds(database, action_id)))
        plain_s, plain_steps = min(plain, key=lambda run: run[0])
        gzip_s, gzip_steps = min(gzipped, key=lambda run: run[0])
        inspect_s = inspection_seconds(image)
        fetch_s = plain_steps["fetch"]

        print(json.dumps({
            "size_gib": round(size / GiB, 2),
            "gzip_size_gib": round((files / "image.raw.gz").stat().st_size / GiB, 3),
            "inspection_and_verifiers_s": round(inspect_s, 5),
            "plain_import_s": round(plain_s, 2),
            "plain_steps_s": plain_steps,
            # The import with inspection against the same import without it.
            "inspection_ratio_to_fetch": round((fetch_s + inspect_s) / fetch_s, 5),
            "inspection_ratio_to_import": round(plain_s / (plain_s - inspect_s), 5),
            "gzip_import_s": round(gzip_s, 2),
            "gzip_steps_s": gzip_steps,
            "decompression_ratio_to_plain_import": round(gzip_s / plain_s, 3),
            "decompression_fetch_ratio": round(gzip_steps["fetch"] / fetch_s, 3),
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
        for httpd in servers.values():
            httpd.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
