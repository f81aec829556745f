"""Footprint of the embedded service: the sum of the proportional set sizes (PSS) of every
process `scripts/serve` runs (the script itself, gunicorn's arbiter and workers, the worker
pool's django-q2 cluster), idle and during one large http import, and that import's throughput.

scripts/serve is started as a user starts it, with its own data directory and port; the only
settings given are the ones a loopback source needs (127.0.0.0/8 allowed, a large enough image
size limit). "Idle" is after a short warm-up of API requests (each gunicorn worker has served),
once the start-up schedules have run.

The import's throughput is compared with that of the same import by the tree of a git REF when
one is given (e.g. the commit before a change that could cost throughput: the same measurement
runs first on `git archive REF`, with this checkout's .venv), else with fetch+write+sha512 of
the same URL, as benchmarks/import_throughput.py does.

Targets: both PSS sums at most 300 MiB; the import within 1.1x of REF's, or 1.25x of the baseline.

Usage: python benchmarks/footprint.py [SIZE_GIB] [REF]   (default 0.25; the issue's figure is for 1)
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

    def __init__(self, root: Path, work: Path, env: dict):
        self.root = root
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
                ["bash", str(self.root / "scripts" / "serve")],
                cwd=self.root,
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


def tree_of(ref: str, work: Path) -> Path:
    """The files of git `ref`, with this checkout's .venv (scripts/serve finds it installed)."""
    tree = work / "tree"
    tree.mkdir()
    archive = subprocess.run(["git", "archive", ref], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    (tree / ".venv").symlink_to(os.path.realpath(ROOT / ".venv"))
    return tree


def measure(root: Path, work: Path, url: str, size: int) -> dict:
    """scripts/serve of `root`: its PSS idle, at the peak of the import of `url`, idle after it,
    and the import's seconds."""
    env = {"IMAGEACTIONS_URL_ALLOWED_NETWORKS": "127.0.0.0/8", **large_import_env(size)}
    with Serve(root, work, env) as serve:
        session = api_session(serve.wait_until_ready())
        warm_up(session, serve.api)
        time.sleep(3)  # the start-up schedules (reaper, purge, webhooks) run meanwhile
        idle = idle_pss(serve)
        sampler = PeakSampler(serve)
        sampler.start()
        elapsed = run_import(session, serve.api, url, size)
        busy = sampler.stop()
        idle_after = idle_pss(serve)
    return {
        "idle_pss_sum_mib": round(sum(idle.values()), 1),
        "import_peak_pss_sum_mib": round(sum(busy.values()), 1),
        "idle_after_import_pss_sum_mib": round(sum(idle_after.values()), 1),
        "samples_during_import": sampler.samples,
        "import_s": round(elapsed, 2),
        "import_mib_s": round(size / CHUNK / elapsed, 1),
        "idle_pss_mib": rounded(idle),
        "import_peak_pss_mib": rounded(busy),
        "idle_after_import_pss_mib": rounded(idle_after),
    }


def main():
    size = int(float(sys.argv[1]) * GiB) if len(sys.argv) > 1 else GiB // 4
    ref = sys.argv[2] if len(sys.argv) > 2 else None
    work = Path(tempfile.mkdtemp(prefix="imageactions-footprint-"))
    figures = {"size_gib": round(size / GiB, 2)}
    try:
        with ImageServer() as server:
            image = work / "image.raw"
            write_random_file(image, size)
            url = server.add("/image.raw", image)
            baseline(url, work / "warm-up")  # page cache and TCP warm, for every run alike
            base = baseline(url, work / "baseline.out")
            figures.update(baseline_s=round(base, 2), baseline_mib_s=round(size / CHUNK / base, 1))
            if ref:
                (work / "ref").mkdir()
                figures[ref] = measure(tree_of(ref, work / "ref"), work / "ref", url, size)
            (work / "ours").mkdir()
            ours = figures["ours"] = measure(ROOT, work / "ours", url, size)
    finally:
        if not os.environ.get("BENCH_KEEP"):
            subprocess.run(["rm", "-rf", str(work)], check=False)
    figures["loadavg"] = os.getloadavg()
    print(json.dumps(figures, indent=2))

    target = f"{TARGET_MIB} MiB"
    for case, key in (("idle PSS sum", "idle_pss_sum_mib"), ("PSS sum during import", "import_peak_pss_sum_mib")):
        mib = ours[key]
        report_row(case, baseline=target, ours=f"{mib:.0f} MiB", ratio=mib / TARGET_MIB, target="<= 1")
    if ref:
        theirs = figures[ref]
        report_row(
            f"import throughput vs {ref}",
            baseline=f"{theirs['import_mib_s']:.0f} MiB/s",
            ours=f"{ours['import_mib_s']:.0f} MiB/s",
            ratio=ours["import_s"] / theirs["import_s"],
            target="<= 1.1",
        )
    else:
        report_row(
            "import vs fetch+write+sha512",
            baseline=f"{figures['baseline_mib_s']:.0f} MiB/s",
            ours=f"{ours['import_mib_s']:.0f} MiB/s",
            ratio=ours["import_s"] / base,
            target="<= 1.25",
        )


if __name__ == "__main__":
    main()
