"""Serving while imports run: the download throughput of GET /v2/images/{id}/file and the
latency of GET /v2/image-actions, idle and while 4 large imports run on the same machine (one
worker process each, PostgreSQL and Redis), first with the workers at their default lower CPU
and I/O priority, then, for comparison, at the API's own priority. The imports' source is a
file server in a process of its own at the workers' niceness: in a cloud the sources are
elsewhere, and their serving must not be counted against this machine's API.

Targets: busy/idle download throughput and idle/busy list latency both at least 0.8.

Usage: python benchmarks/serving_under_imports.py [SIZE_GIB]   (each import; default 0.5)
"""

import json
import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _stack import (
    CHUNK,
    GiB,
    MiB,
    Stack,
    api_session,
    create_import,
    free_port,
    large_import_env,
    median,
    percentile,
    report_row,
    write_random_file,
)

IMPORTS = 4
SERVED_SIZE = 256 * MiB
DOWNLOADS = 6
LIST_REQUESTS = 150
TARGET_RATIO = 0.8
PRIORITIES = {
    "lower (default)": {"IMAGEACTIONS_WORKER_NICENESS": "10", "IMAGEACTIONS_WORKER_IO_PRIORITY": "best-effort"},
    "same as the API": {"IMAGEACTIONS_WORKER_NICENESS": "0", "IMAGEACTIONS_WORKER_IO_PRIORITY": ""},
}


def serving(session, api: str, image_id: str) -> dict:
    """Download throughput (MiB/s over DOWNLOADS whole downloads) and list latency (ms)."""
    downloaded, began = 0, time.perf_counter()
    for _ in range(DOWNLOADS):
        with session.get(f"{api}/v2/images/{image_id}/file", stream=True, timeout=120) as response:
            response.raise_for_status()
            for chunk in response.iter_content(CHUNK):
                downloaded += len(chunk)
    throughput = downloaded / MiB / (time.perf_counter() - began)
    latencies = []
    for _ in range(LIST_REQUESTS):
        began = time.perf_counter()
        session.get(f"{api}/v2/image-actions", params={"limit": 20}, timeout=30).raise_for_status()
        latencies.append(1000 * (time.perf_counter() - began))
    return {
        "download_mib_s": round(throughput, 1),
        "list_median_ms": round(median(latencies), 2),
        "list_p95_ms": round(percentile(latencies, 0.95), 2),
    }


def pending(session, api: str, ids) -> int:
    return sum(
        session.get(f"{api}/v2/image-actions/{id_}", timeout=30).json()["status"]
        not in ("success", "failure", "cancelled")
        for id_ in ids
    )


def busy(stack: Stack, session, api: str, source_url: str, image_id: str, env: dict, size: int) -> dict:
    stack.start_workers(workers=IMPORTS, env=env)
    stack.wait_for_workers()
    ids = [create_import(session, api, source_url, f"busy-{n}").json()["id"] for n in range(IMPORTS)]
    # Measure once every import is past waiting, while they all still run.
    deadline = time.monotonic() + 60
    while any(session.get(f"{api}/v2/image-actions/{id_}", timeout=30).json()["status"] == "waiting" for id_ in ids):
        if time.monotonic() > deadline:
            raise SystemExit(f"imports did not start:\n{stack.log_tail(stack.processes[-1][0])}")
        time.sleep(0.05)
    figures = serving(session, api, image_id)
    figures["imports_still_running_at_the_end"] = pending(session, api, ids)
    deadline = time.monotonic() + 120 + 120 * size / GiB
    while pending(session, api, ids):
        if time.monotonic() > deadline:
            raise SystemExit("imports did not end")
        time.sleep(0.5)
    failed = [
        body for id_ in ids if (body := session.get(f"{api}/v2/image-actions/{id_}").json())["status"] != "success"
    ]
    if failed:
        raise SystemExit(f"an import ended {failed[0]['status']}: {failed[0]['message']}")
    stack.stop_workers()
    return figures


def main():
    size = int(float(sys.argv[1]) * GiB) if len(sys.argv) > 1 else GiB // 2
    with Stack("serving_under_imports", env=large_import_env(size)) as stack:
        image_id = str(uuid.uuid4())
        served = stack.work / "data" / "images" / "images" / image_id
        served.parent.mkdir(parents=True)
        write_random_file(served, SERVED_SIZE)
        stack.record_image(image_id, "local", f"images/{image_id}", served)
        source = stack.work / "sources" / "source.raw"
        source.parent.mkdir()
        write_random_file(source, size)
        port = free_port()
        files = ["nice", "-n", "10", sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)]
        stack._spawn("sources", [*files, "--directory", str(source.parent)])
        source_url = f"http://127.0.0.1:{port}/source.raw"
        session = api_session(stack.create_user("bench", "bench"), pool_size=8)
        api = stack.start_api(workers=2, threads=8)  # as scripts/serve runs it

        serving(session, api, image_id)  # warm: page cache, connections, code
        idle = serving(session, api, image_id)
        figures = {
            "import_size_gib": round(size / GiB, 2),
            "imports": IMPORTS,
            "served_image_mib": SERVED_SIZE // MiB,
            "target_ratio": TARGET_RATIO,
            "idle": idle,
        }
        for label, env in PRIORITIES.items():
            measured = busy(stack, session, api, source_url, image_id, env, size)
            download = measured["download_mib_s"] / idle["download_mib_s"]
            latency = idle["list_median_ms"] / measured["list_median_ms"]
            figures[f"workers at {label}"] = {
                **measured,
                "download_ratio": round(download, 3),
                "list_latency_ratio": round(latency, 3),
                "met": download >= TARGET_RATIO and latency >= TARGET_RATIO,
            }
        figures["load_average"] = os.getloadavg()
        print(json.dumps(figures, indent=2))
        default = figures["workers at lower (default)"]
        report_row(
            f"image download while {IMPORTS} imports of {size / GiB:g} GiB run",
            baseline=f"idle {idle['download_mib_s']} MiB/s",
            ours=f"{default['download_mib_s']} MiB/s",
            ratio=default["download_ratio"],
            target=f">= {TARGET_RATIO}",
        )
        report_row(
            f"list latency while {IMPORTS} imports of {size / GiB:g} GiB run",
            baseline=f"idle {idle['list_median_ms']} ms",
            ours=f"{default['list_median_ms']} ms",
            ratio=default["list_latency_ratio"],
            target=f">= {TARGET_RATIO}",
        )


if __name__ == "__main__":
    main()
