"""Many imports at once: N http imports of SIZE each, POSTed together to a pool of N worker
processes on the embedded profile, against N `curl URL | tee FILE | sha512sum` pipelines started
together on the same URLs. Both are timed from the start to the last one's end, alternating
rounds, medians compared.

Each import passes its bytes once: fetched, written to staging, hashed with md5 and sha512 (the
two hashes Glance records), inspected, then moved into the filesystem store. The baseline hashes
with sha512 only; with more transfers than cores both are bound by the CPU, so the ratio says
how much the import costs beyond the work the baseline does.

Target: at most 1.1x. Usage: python benchmarks/concurrent_imports.py [SIZE_GIB] [IMPORTS] [ROUNDS]
(default 0.125 GiB, 4 imports, 2 rounds; the issue's figure is 1 GiB).
"""

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _stack import (
    GiB,
    ImageServer,
    MiB,
    Stack,
    api_session,
    cpu_seconds,
    create_import,
    large_import_env,
    median,
    peak_rss_mib,
    report_row,
    wait_all,
    write_random_file,
)

TARGET = "<= 1.1"


def children_cpu_seconds() -> float:
    """User and system CPU of this process's children that have ended (the baseline pipelines)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def baselines(urls: list[str], work: Path) -> float:
    """Seconds until the last of `curl URL | tee FILE | sha512sum` pipelines, one per URL,
    started together, has ended."""
    started = time.perf_counter()
    pipelines = [
        subprocess.Popen(
            ["bash", "-o", "pipefail", "-c", f"curl -sf '{url}' | tee '{work / f'baseline-{n}'}' | sha512sum"],
            stdout=subprocess.DEVNULL,
        )
        for n, url in enumerate(urls)
    ]
    failed = [pipeline.args for pipeline in pipelines if pipeline.wait() != 0]
    elapsed = time.perf_counter() - started
    for n in range(len(urls)):
        (work / f"baseline-{n}").unlink(missing_ok=True)
    if failed:
        raise SystemExit(f"a baseline pipeline failed: {failed[0]}")
    return elapsed


def imports(stack: Stack, session, api: str, urls: list[str], size: int) -> tuple[float, list[dict]]:
    """Seconds from the first POST until the last import has ended in success, and the actions."""
    started = time.perf_counter()
    created = [create_import(session, api, url, f"concurrent-{n}") for n, url in enumerate(urls)]
    for response in created:
        response.raise_for_status()
    ids = [response.json()["id"] for response in created]
    ended = wait_all(session, api, ids, deadline=time.monotonic() + 120 + 60 * len(urls) * size / GiB)
    elapsed = time.perf_counter() - started
    failed = [body for body in ended.values() if body["status"] != "success"]
    if failed:
        raise SystemExit(f"an import ended {failed[0]['status']}: {failed[0]['message']}")
    return elapsed, list(ended.values())


def main():
    size = int(float(sys.argv[1]) * GiB) if len(sys.argv) > 1 else GiB // 8
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    with ImageServer() as server, Stack("concurrent_imports", embedded=True, env=large_import_env(size)) as stack:
        # One source file per import, so no transfer is served from a page another just read.
        urls = []
        for n in range(count):
            path = stack.work / f"source-{n}.raw"
            write_random_file(path, size)
            urls.append(server.add(f"/source-{n}.raw", path))
        session = api_session(stack.create_user("bench", "bench"), pool_size=count + 2)
        worker = stack.start_workers(workers=count)
        api = stack.start_api(workers=2, threads=8)  # as scripts/serve runs it
        stack.wait_for_workers()

        baselines(urls, stack.work)  # page cache and TCP warm, for both runs alike
        base_times, import_times, steps = [], [], {}
        # CPU seconds of each side per round: with more transfers than cores, time follows CPU.
        cpu = {"baseline": [], "imports": []}
        for _ in range(rounds):
            before = children_cpu_seconds()
            base_times.append(baselines(urls, stack.work))
            cpu["baseline"].append(children_cpu_seconds() - before)
            before = cpu_seconds(stack.process_tree())
            elapsed, actions = imports(stack, session, api, urls, size)
            cpu["imports"].append(cpu_seconds(stack.process_tree()) - before)
            import_times.append(elapsed)
            steps = {action["id"]: stack.step_durations(action["id"]) for action in actions}
        base, ours = median(base_times), median(import_times)
        total_mib = count * size / MiB
        print(
            json.dumps(
                {
                    "size_gib": round(size / GiB, 3),
                    "imports": count,
                    "worker_processes": count,
                    "baseline_s": round(base, 2),
                    "imports_s": round(ours, 2),
                    "ratio": round(ours / base, 3),
                    "rounds_s": {
                        "baseline": [round(t, 2) for t in base_times],
                        "imports": [round(t, 2) for t in import_times],
                    },
                    "cpu_s_per_round": {side: [round(t, 2) for t in times] for side, times in cpu.items()},
                    "cpu_ratio": round(median(cpu["imports"]) / median(cpu["baseline"]), 3),
                    "baseline_mib_s": round(total_mib / base, 1),
                    "imports_mib_s": round(total_mib / ours, 1),
                    "worker_peak_rss_mib": sorted(round(peak, 1) for peak in peak_rss_mib(worker)),
                    "steps_s_last_round": steps,
                    "load_average": os.getloadavg(),
                },
                indent=2,
            )
        )
        report_row(
            f"{count} concurrent imports of {size / GiB:g} GiB",
            baseline=f"{base:.2f} s",
            ours=f"{ours:.2f} s",
            ratio=ours / base,
            target=TARGET,
        )


if __name__ == "__main__":
    main()
