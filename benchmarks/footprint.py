"""Footprint of the embedded service: the sum of the proportional set sizes (PSS) of every
process `scripts/serve` runs (the script itself, gunicorn's arbiter and workers, the worker
pool's django-q2 cluster), idle and during one large http import, and that import's throughput
against fetch+write+sha512 of the same URL.

scripts/serve is started as a user starts it, with its own data directory and port; the only
settings given are the ones a loopback source needs (127.0.0.0/8 allowed, a large enough image
size limit). "Idle" is after a short warm-up of API requests (each gunicorn worker has served),
once the start-up schedules have run.

Targets: both PSS sums at most 300 MiB; the import within 1.25x of the baseline.

Usage: python benchmarks/footprint.py [SIZE_GIB]   (default 0.25; the issue's figure is for 1)
"""

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _stack import (
    CHUNK,
    ROOT,
    TERMINAL,
    GiB,
    ImageServer,
    api_session,
    create_import,
    free_port,
    large_import_env,
    pss_mib,
    report_row,
    write_random_file,
)
from import_throughput import baseline

TARGET_MIB = 300
WARM_UP_REQUESTS = 40
SAMPLE_INTERVAL = 0.2


class Serve:
    """scripts/serve in a session of its own, killed with every process below it on exit."""

    def __init__(self, work: Path, env: dict):
        self.log_path = work / "serve.log"
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}"
        self.env = dict(
            os.environ,
            IMAGEACTIONS_DATA_DIR=str(work / "data"),
            IMAGEACTIONS_BIND=f"127.0.0.1:{self.port}",
            **env,
        )
        self.process = None

    def __enter__(self):
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                ["bash", str(ROOT / "scripts" / "serve")],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def wait_until_ready(self, timeout: float = 600) -> str:
        """The demo user's token, once /readyz answers 200 (API up, worker pool alive). The
        timeout covers a first start, when scripts/serve creates the venv."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"scripts/serve exited with {self.process.returncode}:\n{self.log_tail()}")
            token = re.search(r"export TOKEN=(\S+)", self.log_path.read_text(errors="replace"))
            try:
                if token and requests.get(f"{self.api}/readyz", timeout=5).status_code == 200:
                    return token.group(1)
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise SystemExit(f"scripts/serve was not ready within {timeout:g} s:\n{self.log_tail()}")

    def pss(self) -> dict[str, float]:
        """Each process's PSS in MiB, by "PID command"."""
        return {f"{pid} {command_of(pid)}": mib for pid, mib in pss_mib(self.process.pid).items()}

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def __exit__(self, *exc):
        # Its children run in sessions of their own: SIGTERM lets the script stop them, and
        # whatever still runs after that is killed group by group.
        groups = {os.getpgid(pid) for pid in pss_mib(self.process.pid) if _alive(pid)}
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            pass
        for group in groups:
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait()
        return False


def _alive(pid: int) -> bool:
    try:
        os.getpgid(pid)
    except ProcessLookupError:
        return False
    return True


class PeakSampler(threading.Thread):
    """Samples the processes' PSS every SAMPLE_INTERVAL seconds until stopped; keeps the sample
    with the largest sum."""

    def __init__(self, serve: Serve):
        super().__init__(daemon=True)
        self.serve, self.peak, self.samples = serve, {}, 0
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.wait(SAMPLE_INTERVAL):
            sample = self.serve.pss()
            if sum(sample.values()) > sum(self.peak.values()):
                self.peak = sample
            self.samples += 1

    def stop(self) -> dict[str, float]:
        self.stopped.set()
        self.join()
        return self.peak


def command_of(pid: int) -> str:
    """What the process is, for the per-process figures: its command's last words."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [Path(word.decode()).name for word in argv if word][:3]
    return " ".join(words)


def warm_up(session, api: str) -> None:
    """Requests enough for every gunicorn worker to have loaded the API's views and served."""
    for n in range(WARM_UP_REQUESTS):
        path = ("/v2/image-actions", "/v2/images", "/healthz", "/readyz")[n % 4]
        session.get(f"{api}{path}", timeout=30).raise_for_status()


def idle_pss(serve: Serve, seconds: float = 3.0) -> dict[str, float]:
    """The sample with the largest PSS sum over `seconds` of idleness."""
    samples = []
    for _ in range(int(seconds / SAMPLE_INTERVAL)):
        samples.append(serve.pss())
        time.sleep(SAMPLE_INTERVAL)
    return max(samples, key=lambda sample: sum(sample.values()))


def rounded(sample: dict[str, float]) -> dict[str, float]:
    return {process: round(mib, 1) for process, mib in sample.items()}


def run_import(session, api: str, url: str, size: int) -> float:
    """Seconds from POST to `success` of an import of `url`, polled every 0.1 s."""
    start = time.perf_counter()
    created = create_import(session, api, url, "footprint")
    created.raise_for_status()
    action_url = f"{api}/v2/image-actions/{created.json()['id']}"
    deadline = time.monotonic() + 120 + 60 * size / GiB
    while (body := session.get(action_url, timeout=30).json())["status"] not in TERMINAL:
        if time.monotonic() > deadline:
            raise SystemExit(f"the import is still {body['status']} at the deadline")
        time.sleep(0.1)
    if body["status"] != "success":
        raise SystemExit(f"the import ended {body['status']}: {body['message']}")
    return time.perf_counter() - start


def main():
    size = int(float(sys.argv[1]) * GiB) if len(sys.argv) > 1 else GiB // 4
    env = {"IMAGEACTIONS_URL_ALLOWED_NETWORKS": "127.0.0.0/8", **large_import_env(size)}
    work = Path(tempfile.mkdtemp(prefix="imageactions-footprint-"))
    try:
        with ImageServer() as server, Serve(work, env) as serve:
            image = work / "image.raw"
            write_random_file(image, size)
            url = server.add("/image.raw", image)
            session = api_session(serve.wait_until_ready())
            warm_up(session, serve.api)
            time.sleep(3)  # the start-up schedules (reaper, purge, webhooks) run meanwhile
            idle = idle_pss(serve)

            baseline(url, work / "warm-up")  # page cache and TCP warm, for both runs alike
            base = baseline(url, work / "baseline.out")
            sampler = PeakSampler(serve)
            sampler.start()
            elapsed = run_import(session, serve.api, url, size)
            busy = sampler.stop()
            idle_after = idle_pss(serve)
    finally:
        if not os.environ.get("BENCH_KEEP"):
            subprocess.run(["rm", "-rf", str(work)], check=False)

    idle_sum, busy_sum = sum(idle.values()), sum(busy.values())
    print(
        json.dumps(
            {
                "size_gib": round(size / GiB, 2),
                "idle_pss_sum_mib": round(idle_sum, 1),
                "import_peak_pss_sum_mib": round(busy_sum, 1),
                "idle_after_import_pss_sum_mib": round(sum(idle_after.values()), 1),
                "samples_during_import": sampler.samples,
                "processes": len(idle),
                "idle_pss_mib": rounded(idle),
                "import_peak_pss_mib": rounded(busy),
                "idle_after_import_pss_mib": rounded(idle_after),
                "baseline_s": round(base, 2),
                "import_s": round(elapsed, 2),
                "baseline_mib_s": round(size / CHUNK / base, 1),
                "import_mib_s": round(size / CHUNK / elapsed, 1),
                "loadavg": os.getloadavg(),
            },
            indent=2,
        )
    )
    target = f"{TARGET_MIB} MiB"
    report_row("idle PSS sum", baseline=target, ours=f"{idle_sum:.0f} MiB", ratio=idle_sum / TARGET_MIB, target="<= 1")
    report_row(
        "PSS sum during import", baseline=target, ours=f"{busy_sum:.0f} MiB", ratio=busy_sum / TARGET_MIB, target="<= 1"
    )
    report_row(
        "import vs fetch+write+sha512",
        baseline=f"{size / CHUNK / base:.0f} MiB/s",
        ours=f"{size / CHUNK / elapsed:.0f} MiB/s",
        ratio=elapsed / base,
        target="<= 1.25",
    )


if __name__ == "__main__":
    main()
