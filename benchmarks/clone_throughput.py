"""Clone throughput: a clone between two filesystem stores (POST to success, a worker running)
against a plain copy of the same bytes (shutil.copyfile, then sha512 of the copy) in the same run.

Usage: python benchmarks/clone_throughput.py [SIZE_GIB] [ROUNDS]   (default 1 GiB, 3 rounds; target
ratio <= 1.25). Baseline and clone alternate; the medians are compared, so a busy machine skews less.
"""

import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests
from import_throughput import (
    CHUNK,
    GiB,
    manage,
    start_api,
    step_durations,
    stop_api,
    write_random_file,
)

ROOT = Path(__file__).resolve().parent.parent


def sha512_and_md5(path: Path) -> tuple[str, str]:
    sha512, md5 = hashlib.sha512(), hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            sha512.update(chunk)
            md5.update(chunk)
    return sha512.hexdigest(), md5.hexdigest()


def baseline(source: Path, target: Path, *, durable=False) -> float:
    """`cp SOURCE TARGET && sha512sum TARGET`, in Python; `durable` adds the fsync the stores do."""
    start = time.perf_counter()
    shutil.copyfile(source, target)
    if durable:
        with open(target, "rb") as f:
            os.fsync(f.fileno())
    digest = hashlib.sha512()
    with open(target, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    elapsed = time.perf_counter() - start
    target.unlink()
    return elapsed


def record_image(env: dict, image_id: str, key: str, path: Path) -> None:
    """The source Image row, made by the product's own create_image() in a manage.py shell."""
    sha512, md5 = sha512_and_md5(path)
    code = (
        "from imageactions.images import create_image; "
        f"create_image(id={image_id!r}, name='bench', owner='bench', store='source', store_key={key!r}, "
        f"size={path.stat().st_size}, checksum={md5!r}, os_hash_value={sha512!r}, disk_format='raw')"
    )
    manage(env, "shell", "-c", code)


def rounds_of(times: list[float]) -> list[float]:
    return [round(t, 2) for t in times]


def timed_clone(session, api: str, image_id: str, size: int, worker) -> float:
    """Seconds from POST to `success` of one clone into the target store."""
    start = time.perf_counter()
    created = session.post(
        f"{api}/v2/image-actions", json={"action_type": "clone", "input": {"image_id": image_id, "stores": ["target"]}}
    )
    created.raise_for_status()
    action_url = f"{api}/v2/image-actions/{created.json()['id']}"
    deadline = time.monotonic() + 60 + 60 * size / GiB
    while True:
        body = session.get(action_url).json()
        if body["status"] in ("success", "failure", "cancelled"):
            break
        if worker.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the clone is still {body['status']} and the worker has stopped or is stuck")
        time.sleep(0.05)
    elapsed = time.perf_counter() - start
    if body["status"] != "success":
        raise SystemExit(f"clone ended {body['status']}: {body['message']}")
    return elapsed


def main():
    size = int(float(sys.argv[1]) * GiB) if len(sys.argv) > 1 else GiB
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    work = Path(tempfile.mkdtemp(prefix="imageactions-clone-bench-"))
    stores = {
        "source": {"type": "filesystem", "path": str(work / "source-store"), "region": "one"},
        "target": {"type": "filesystem", "path": str(work / "target-store"), "region": "two"},
    }
    env = dict(
        os.environ, DJANGO_SETTINGS_MODULE="settings", IMAGEACTIONS_DATA_DIR=str(work / "data"),
        IMAGEACTIONS_SECRET_KEY="benchmark", IMAGEACTIONS_WORKERS="1", IMAGEACTIONS_ACTION_APPS="actions_clone",
        IMAGEACTIONS_STORES=json.dumps(stores), IMAGEACTIONS_DEFAULT_STORE="source", PYTHONUNBUFFERED="1",
    )
    worker = None
    try:
        image_id = str(uuid.uuid4())
        key = f"images/{image_id}"
        source = work / "source-store" / key
        source.parent.mkdir(parents=True)
        write_random_file(source, size)
        manage(env, "migrate", "-v", "0")
        record_image(env, image_id, key, source)
        token = manage(env, "create_api_user", "bench", "--project", "bench", capture=True).stdout.strip()
        worker = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "worker"], cwd=ROOT, env=env,
            stdout=open(work / "worker.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        api = start_api(env, work)
        time.sleep(3)  # the cluster's processes come up

        plain_target = work / "target-store" / "plain-copy"
        plain_target.parent.mkdir(parents=True)
        baseline(source, plain_target)  # page cache warm, for both runs alike
        session = requests.Session()
        session.headers["Authorization"] = f"Token {token}"
        bases, durable_bases, clones = [], [], []
        for _ in range(rounds):
            bases.append(baseline(source, plain_target))
            durable_bases.append(baseline(source, plain_target, durable=True))
            clones.append(timed_clone(session, api, image_id, size, worker))
        base, durable_base, elapsed = map(statistics.median, (bases, durable_bases, clones))

        print(json.dumps({
            "size_gib": round(size / GiB, 2),
            "baseline_s": round(base, 2),
            "clone_s": round(elapsed, 2),
            "ratio": round(elapsed / base, 3),
            "target_ratio": 1.25,
            "durable_baseline_s": round(durable_base, 2),
            "ratio_to_durable_baseline": round(elapsed / durable_base, 3),
            "rounds_s": {"baseline": rounds_of(bases), "durable_baseline": rounds_of(durable_bases),
                         "clone": rounds_of(clones)},
            "load_average": os.getloadavg()[0],
            "baseline_mib_s": round(size / CHUNK / base, 1),
            "clone_mib_s": round(size / CHUNK / elapsed, 1),
            "steps_s_last_round": step_durations(work / "data" / "imageactions.sqlite3"),
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
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
