"""Export throughput: an export to a download link (no conversion; POST to success with a worker
running) against a plain copy of the same bytes (shutil.copyfile, then sha512 of the copy) in the
same run. Twice: image and link in one filesystem store (the export is a hard link read back for
its sha512), and the image in a store on another file system, /dev/shm (the bytes are streamed).

Usage: python benchmarks/export_throughput.py [SIZE_GIB]   (default 1; target ratio <= 1.25)
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests

from import_throughput import CHUNK, GiB, manage, start_api, step_durations, stop_api, write_random_file

ROOT = Path(__file__).resolve().parent.parent
TARGET_RATIO = 1.25


def sha512_and_md5(path: Path) -> tuple[str, str]:
    sha512, md5 = hashlib.sha512(), hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            sha512.update(chunk)
            md5.update(chunk)
    return sha512.hexdigest(), md5.hexdigest()


def baseline(source: Path, target: Path) -> float:
    """`cp SOURCE TARGET && sha512sum TARGET`, in Python."""
    start = time.perf_counter()
    shutil.copyfile(source, target)
    digest = hashlib.sha512()
    with open(target, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    elapsed = time.perf_counter() - start
    target.unlink()
    return elapsed


def record_image(env: dict, image_id: str, key: str, path: Path, store: str = "local") -> str:
    """The Image row of bytes already in the store; returns its sha512."""
    sha512, md5 = sha512_and_md5(path)
    code = (
        "from imageactions.models import Image; "
        f"Image.objects.create(id={image_id!r}, name='bench', owner='bench', store={store!r}, store_key={key!r}, "
        f"size={path.stat().st_size}, checksum={md5!r}, os_hash_value={sha512!r}, disk_format='raw')"
    )
    manage(env, "shell", "-c", code)
    return sha512


def main():
    size = int(float(sys.argv[1]) * GiB) if len(sys.argv) > 1 else GiB
    work = Path(tempfile.mkdtemp(prefix="imageactions-export-bench-"))
    shm = Path(tempfile.mkdtemp(prefix="imageactions-export-bench-", dir="/dev/shm"))
    stores = {
        "local": {"type": "filesystem", "path": str(work / "store"), "region": "one"},
        "memory": {"type": "filesystem", "path": str(shm), "region": "one"},
    }
    env = dict(
        os.environ, DJANGO_SETTINGS_MODULE="settings", IMAGEACTIONS_DATA_DIR=str(work / "data"),
        IMAGEACTIONS_SECRET_KEY="benchmark", IMAGEACTIONS_WORKERS="1", IMAGEACTIONS_ACTION_APPS="actions_export",
        IMAGEACTIONS_STORES=json.dumps(stores), PYTHONUNBUFFERED="1",
    )
    worker = None
    try:
        images = {}
        for store, root in (("local", work / "store"), ("memory", shm)):
            image_id = str(uuid.uuid4())
            key = f"images/{image_id}"
            source = root / key
            source.parent.mkdir(parents=True)
            write_random_file(source, size)
            images[store] = image_id, source
        manage(env, "migrate", "-v", "0")
        for store, (image_id, source) in images.items():
            record_image(env, image_id, f"images/{image_id}", source, store)
        token = manage(env, "create_api_user", "bench", "--project", "bench", capture=True).stdout.strip()
        worker = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "worker"], cwd=ROOT, env=env,
            stdout=open(work / "worker.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        api = start_api(env, work)
        time.sleep(3)  # the cluster's processes come up
        session = requests.Session()
        session.headers["Authorization"] = f"Token {token}"

        figures = {"size_gib": round(size / GiB, 2), "target_ratio": TARGET_RATIO}
        for label, store in (("same_store_hard_link", "local"), ("other_file_system_streamed", "memory")):
            image_id, source = images[store]
            plain_target = work / "store" / "plain-copy"
            baseline(source, plain_target)  # page cache warm, for both runs alike
            base = baseline(source, plain_target)
            elapsed = export(session, api, image_id, worker, size)
            figures[label] = {
                "baseline_s": round(base, 2),
                "export_s": round(elapsed, 2),
                "ratio": round(elapsed / base, 3),
                "baseline_mib_s": round(size / CHUNK / base, 1),
                "export_mib_s": round(size / CHUNK / elapsed, 1),
            }
        figures["steps_s"] = step_durations(work / "data" / "imageactions.sqlite3")
        print(json.dumps(figures, indent=2))
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
        shutil.rmtree(shm, ignore_errors=True)


def export(session, api: str, image_id: str, worker, size: int) -> float:
    """Seconds from POST to success of a download export of the image; checks its sha512."""
    start = time.perf_counter()
    created = session.post(
        f"{api}/v2/image-actions",
        json={"action_type": "export", "input": {"image_id": image_id, "destination": {"type": "download"}}},
    )
    created.raise_for_status()
    action_url = f"{api}/v2/image-actions/{created.json()['id']}"
    deadline = time.monotonic() + 60 + 60 * size / GiB
    while True:
        body = session.get(action_url).json()
        if body["status"] in ("success", "failure", "cancelled"):
            break
        if worker.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the export is still {body['status']} and the worker has stopped or is stuck")
        time.sleep(0.05)
    elapsed = time.perf_counter() - start
    if body["status"] != "success":
        raise SystemExit(f"export ended {body['status']}: {body['message']}")
    return elapsed


if __name__ == "__main__":
    main()
