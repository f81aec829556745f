"""Import throughput: an http import into the filesystem store against fetch+write+sha512 of
the same URL, and the worker's peak memory.

Usage: python benchmarks/import_throughput.py [SIZE_GIB]   (default 1)
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _stack import (
    CHUNK,
    GiB,
    ImageServer,
    Stack,
    fetch_baseline,
    large_import_env,
    peak_rss_mib,
    report_row,
    size_argument,
    write_random_file,
)


def main():
    size = size_argument()
    with ImageServer() as server, Stack("import_throughput", embedded=True, env=large_import_env(size)) as stack:
        image = stack.work / "image.raw"
        write_random_file(image, size)
        url = server.add("/image.raw", image)
        session, api, worker = stack.start_throughput_service()

        fetch_baseline(url, stack.work / "warm-up")  # page cache and TCP warm, for both runs alike
        base = fetch_baseline(url, stack.work / "baseline.out")
        elapsed, action = stack.run_action(
            session,
            api,
            "import",
            {"location": url, "image_properties": {"name": "bench"}},
            timeout=60 + 30 * size / GiB,
        )
        peaks = peak_rss_mib(worker)
        print(
            json.dumps(
                {
                    "size_gib": round(size / GiB, 2),
                    "baseline_s": round(base, 2),
                    "import_s": round(elapsed, 2),
                    "ratio": round(elapsed / base, 3),
                    "baseline_mib_s": round(size / CHUNK / base, 1),
                    "import_mib_s": round(size / CHUNK / elapsed, 1),
                    "worker_peak_rss_mib": round(max(peaks), 1),
                    "worker_processes_peak_rss_mib": sorted(round(peak, 1) for peak in peaks),
                    "steps_s": stack.step_durations(action["id"]),
                },
                indent=2,
            )
        )
        report_row(
            f"import of {size / GiB:g} GiB (single stream)",
            baseline=f"curl | tee | sha512sum {base:.2f} s",
            ours=f"{elapsed:.2f} s",
            ratio=elapsed / base,
            target="<= 1.0",
        )


if __name__ == "__main__":
    main()
