"""Median POST-to-success time of a 1 MiB http import, one at a time, on the embedded profile
(SQLite, ORM broker) and on PostgreSQL + Redis; the target is at most 0.5 s.

Usage: python benchmarks/import_overhead.py [IMPORTS]   (default 15 per profile)
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _stack import ImageServer, MiB, Stack, api_session, median, percentile, small_image

TARGET_S = 0.5


def measure(stack: Stack, url: str, imports: int) -> list[float]:
    token = stack.create_user("bench", "bench")
    stack.start_workers("default", workers=2)
    api = stack.start_api(workers=2, threads=4)
    stack.wait_for_workers()
    session = api_session(token)
    times = []
    for number in range(imports + 1):  # the first one warms connections and imports; not counted
        elapsed, _action = stack.run_action(
            session,
            api,
            "import",
            {"location": url, "image_properties": {"name": f"overhead-{number}"}},
            timeout=60,
            interval=0.01,
        )
        if number:
            times.append(elapsed)
    return times


def main():
    imports = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    server = ImageServer()
    url = server.add("/one-mib.raw", small_image(MiB))
    results = {}
    try:
        for profile, embedded in (("embedded (SQLite, ORM broker)", True), ("PostgreSQL + Redis", False)):
            with Stack("imageactions_overhead", embedded=embedded) as stack:
                times = measure(stack, url, imports)
            results[profile] = {
                "imports": len(times),
                "median_s": round(median(times), 3),
                "p90_s": round(percentile(times, 0.9), 3),
                "min_s": round(min(times), 3),
                "max_s": round(max(times), 3),
                "meets_target": median(times) <= TARGET_S,
            }
    finally:
        server.close()
    print(json.dumps({"image_size_mib": 1, "target_median_s": TARGET_S, "profiles": results}, indent=2))
    if not all(r["meets_target"] for r in results.values()):
        raise SystemExit("the median POST-to-success time exceeds the target on at least one profile")


if __name__ == "__main__":
    main()
