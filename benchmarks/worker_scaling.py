"""Small-import throughput (actions/s) with 1, 2 and 4 worker processes on the Redis broker and
PostgreSQL: N imports of one 64 KiB image are created at once, timed from the first POST until
the last action ended (read from PostgreSQL, so polling does not load the API).

Usage: python benchmarks/worker_scaling.py [IMPORTS]   (default 100 per run)
"""

import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _stack import ImageServer, Stack, api_session, create_import, small_image, wait_all

WORKER_COUNTS = (1, 2, 4)
RUN_TIMEOUT_S = 300


def run(stack: Stack, api: str, token: str, url: str, imports: int, workers: int) -> dict:
    stack.start_workers("default", workers=workers)
    stack.wait_for_workers()
    session = api_session(token, pool_size=16)
    start = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        created = list(pool.map(lambda n: create_import(session, api, url, f"w{workers}-{n}"), range(imports)))
    bad = [r for r in created if r.status_code != 201]
    if bad:
        raise SystemExit(f"{len(bad)} creates failed, e.g. {bad[0].status_code}: {bad[0].text[:300]}")
    stack.wait_until_ended(stack.ended_before + imports, deadline=time.monotonic() + RUN_TIMEOUT_S)
    elapsed = time.perf_counter() - start
    stack.ended_before += imports
    ended = wait_all(session, api, [r.json()["id"] for r in created], deadline=time.monotonic() + 30)
    failed = [b for b in ended.values() if b["status"] != "success"]
    if failed:
        raise SystemExit(f"{len(failed)} imports did not succeed, e.g. {failed[0]['status']}: {failed[0]['message']}")
    stack.stop_workers()
    return {
        "worker_processes": workers,
        "imports": imports,
        "wall_s": round(elapsed, 2),
        "actions_per_s": round(imports / elapsed, 2),
    }


def main():
    imports = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    server = ImageServer()
    url = server.add("/small.raw", small_image(64 * 1024))
    try:
        with Stack("imageactions_scaling") as stack:
            token = stack.create_user("bench", "bench")
            stack.ended_before = 0
            api = stack.start_api(workers=4, threads=8)
            rows = [run(stack, api, token, url, imports, workers) for workers in WORKER_COUNTS]
    finally:
        server.close()
    print(f"cpus: {os.cpu_count()}  imports per run: {imports}  image: 64 KiB  broker: Redis  database: PostgreSQL")
    print(f"{'workers':>8} {'wall s':>8} {'actions/s':>10}")
    for row in rows:
        print(f"{row['worker_processes']:>8} {row['wall_s']:>8} {row['actions_per_s']:>10}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
