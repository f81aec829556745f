"""Parallel ranged fetch: an http import read over several connections from a server that limits
each connection's rate, against a single-stream fetch+write+sha512 of the same URL (`curl | tee |
sha512sum`), and the worker's peak memory for two image sizes (flat: the reorder buffer is capped
at connections x part size, whatever the size).

Usage: python benchmarks/parallel_fetch.py [SIZE_GIB=0.25] [MIB_S_PER_CONNECTION=10] [CONNECTIONS=4]
The issue's full run: SIZE_GIB=1 (the smaller size is always a quarter of it).
"""

import json
import os
import sqlite3
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _stack import (
    GiB,
    MiB,
    Stack,
    fetch_baseline,
    large_import_env,
    peak_rss_mib,
    report_row,
    write_random_file,
)

SEND_PIECE = 256 * 1024


class ThrottledRangeHandler(BaseHTTPRequestHandler):
    """GET /NAME of a file on disk, whole or one `Range: bytes=A-B` (or `A-`) with an ETag and
    If-Range, each answer sent at no more than the server's rate: a source whose connections are
    each limited (a remote server, a long path), so that more connections go faster."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = self.server.files.get(self.path)
        if path is None:
            self.send_error(404)
            return
        size = path.stat().st_size
        etag = f'"{size}-{int(path.stat().st_mtime)}"'
        start, end = 0, size - 1
        wanted = self.headers.get("Range", "")
        partial = wanted.startswith("bytes=") and self.headers.get("If-Range", etag) == etag
        if partial:
            first, _, last = wanted.removeprefix("bytes=").partition("-")
            start, end = int(first), min(int(last) if last else end, end)
        self.send_response(206 if partial else 200)
        self.send_header("Content-Length", str(end - start + 1))
        if partial:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag)
        self.end_headers()
        self._send(path, start, end - start + 1)

    def _send(self, path: Path, start: int, length: int):
        rate, began, sent = self.server.rate, time.monotonic(), 0
        with open(path, "rb") as f:
            f.seek(start)
            try:
                while sent < length:
                    piece = f.read(min(SEND_PIECE, length - sent))
                    self.wfile.write(piece)
                    sent += len(piece)
                    if (ahead := sent / rate - (time.monotonic() - began)) > 0:
                        time.sleep(ahead)
            except OSError:
                self.close_connection = True  # the client closed (the end of a first answer's part)


def start_server(rate: float) -> ThreadingHTTPServer:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), ThrottledRangeHandler)
    httpd.daemon_threads = True
    httpd.files, httpd.rate = {}, rate
    Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def fetch_facts(stack: Stack, action_id: str) -> dict:
    """How the import read its source (its state's "fetch": connections, buffer peak)."""
    with sqlite3.connect(stack.sqlite_database) as db:
        (state,) = db.execute(
            "SELECT state FROM imageactions_imageaction WHERE id = ?", (action_id.replace("-", ""),)
        ).fetchone()
    return json.loads(state).get("fetch", {})


def main():
    size = int(float(sys.argv[1]) * GiB) if len(sys.argv) > 1 else GiB // 4
    rate = float(sys.argv[2]) * MiB if len(sys.argv) > 2 else 10 * MiB
    connections = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    small = size // 4
    env = {
        **large_import_env(size),
        "IMAGEACTIONS_FETCH_CONNECTIONS": str(connections),
        # The quarter-size run is read in parallel too, so both sizes measure the same reader.
        "IMAGEACTIONS_FETCH_PARALLEL_THRESHOLD": str(min(small, 64 * MiB)),
    }
    httpd = start_server(rate)
    try:
        with Stack("parallel_fetch", embedded=True, env=env) as stack:
            session, api, worker = stack.start_throughput_service()
            results, timeout = {}, 120 + 3 * size / rate
            for label, image_size in (("small", small), ("large", size)):
                if label == "large":  # a fresh worker per size: its peak RSS is this size's
                    stack.stop_workers()
                    worker = stack.start_workers(workers=1)
                    stack.wait_for_workers()
                image = stack.work / f"{label}.raw"
                write_random_file(image, image_size)
                httpd.files[f"/{label}.raw"] = image
                url = f"http://127.0.0.1:{httpd.server_address[1]}/{label}.raw"
                if label == "large":  # the image was just written: in the page cache for both runs
                    results["baseline_s"] = fetch_baseline(url, stack.work / "baseline.out")
                elapsed, action = stack.run_action(
                    session, api, "import", {"location": url, "image_properties": {"name": label}}, timeout=timeout
                )
                results[label] = {
                    "size_mib": round(image_size / MiB),
                    "import_s": round(elapsed, 2),
                    "import_mib_s": round(image_size / MiB / elapsed, 1),
                    "peak_rss_mib": round(max(peak_rss_mib(worker)), 1),
                    "fetch": fetch_facts(stack, action["id"]),
                    "steps_s": stack.step_durations(action["id"]),
                }
                image.unlink()
    finally:
        httpd.shutdown()
    base, ours = results["baseline_s"], results["large"]["import_s"]
    print(
        json.dumps(
            {
                "size_gib": round(size / GiB, 3),
                "mib_s_per_connection": rate / MiB,
                "connections": connections,
                "baseline_s": round(base, 2),
                "baseline_mib_s": round(size / MiB / base, 1),
                "speedup": round(base / ours, 2),
                "small": results["small"],
                "large": results["large"],
                "peak_rss_mib": {results[k]["size_mib"]: results[k]["peak_rss_mib"] for k in ("small", "large")},
                "loadavg": os.getloadavg(),
            },
            indent=2,
        )
    )
    row = report_row(
        f"parallel fetch, {connections} connections at {rate / MiB:g} MiB/s each, {size / GiB:g} GiB",
        baseline=f"{base:.1f} s",
        ours=f"{ours:.1f} s",
        ratio=base / ours,
        target=">= 3",
    )
    sys.exit(0 if row["met"] else 1)


if __name__ == "__main__":
    main()
