"""What Keystone costs per request: GET /v2/images latency through a live gunicorn (one sync
process, requests one at a time) with this service's own token (the baseline), with a Keystone
token validated once and then cached, and with the cache off (every request asks Keystone).
Keystone is the real one the tests use (installed from PyPI into .cache/, started here).

Usage: python benchmarks/keystone_auth.py [REQUESTS]   (default 300 per case)
"""

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _stack import Stack, api_session, median, percentile

from tests.keystone.server import SERVICE_PASSWORD, SERVICE_USER, start_keystone


def latencies(base: str, headers: dict, count: int) -> list[float]:
    session = api_session("unused")
    session.headers.pop("Authorization", None)
    session.headers.update(headers)
    for _ in range(10):  # warm up: connections, the first validation, Django's lazy set-up
        session.get(f"{base}/v2/images").raise_for_status()
    timings = []
    for _ in range(count):
        started = time.perf_counter()
        session.get(f"{base}/v2/images").raise_for_status()
        timings.append(time.perf_counter() - started)
    return timings


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    started = time.monotonic()
    keystone = start_keystone(Path(tempfile.mkdtemp(prefix="bench-keystone-")))
    print(f"Keystone set-up (install cached): {time.monotonic() - started:.1f} s")
    try:
        with Stack("keystone_auth", embedded=True) as stack:
            os.environ.update(keystone.admin_env())
            stack.env.update(keystone.admin_env())
            keystone_env = {
                "IMAGEACTIONS_KEYSTONE_URL": keystone.url,
                "IMAGEACTIONS_KEYSTONE_USER": SERVICE_USER,
                "IMAGEACTIONS_KEYSTONE_PASSWORD": SERVICE_PASSWORD,
            }
            own_token = stack.create_user("bench", "alpha")
            bases = {
                "own token": stack.start_api(workers=1, threads=1, label="api-own"),
                "keystone, cached": stack.start_api(
                    workers=1,
                    threads=1,
                    env={**keystone_env, "IMAGEACTIONS_KEYSTONE_CACHE_TIME": "300"},
                    label="api-cached",
                ),
                "keystone, no cache": stack.start_api(
                    workers=1,
                    threads=1,
                    env={**keystone_env, "IMAGEACTIONS_KEYSTONE_CACHE_TIME": "0"},
                    label="api-nocache",
                ),
            }
            stack.manage(
                "register_in_keystone", "--url", bases["keystone, cached"],
                "--service-user", SERVICE_USER, "--service-password", SERVICE_PASSWORD,
            )  # fmt: skip
            token = keystone.token("alpha-member")
            results = {
                "own token": latencies(bases["own token"], {"Authorization": f"Token {own_token}"}, count),
                "keystone, cached": latencies(bases["keystone, cached"], {"X-Auth-Token": token}, count),
                "keystone, no cache": latencies(bases["keystone, no cache"], {"X-Auth-Token": token}, count),
            }
    finally:
        keystone.stop()
    baseline = median(results["own token"])
    print(f"GET /v2/images, {count} sequential requests per case, one gunicorn sync process:")
    for name, values in results.items():
        print(
            f"  {name:20s} p50 {median(values) * 1000:7.2f} ms   p90 {percentile(values, 0.9) * 1000:7.2f} ms   "
            f"ratio to own token {median(values) / baseline:5.2f}x   "
            f"Keystone's share {max(0.0, median(values) - baseline) * 1000:6.2f} ms"
        )


if __name__ == "__main__":
    main()
