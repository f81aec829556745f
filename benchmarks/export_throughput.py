"""Export throughput: an export to a download link (no conversion; POST to success with a worker
running) against a plain copy of the same bytes (shutil.copyfile, then sha512 of the copy) in the
same run. Twice: image and link in one filesystem store (the export is a hard link read back for
its sha512), and the image in a store on another file system, /dev/shm (the bytes are streamed).

Usage: python benchmarks/export_throughput.py [SIZE_GIB]   (default 1; target ratio <= 1.25)
"""

import json
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _stack import CHUNK, GiB, Stack, copy_baseline, size_argument, write_random_file

TARGET_RATIO = 1.25


def main():
    size = size_argument()
    shm = Path(tempfile.mkdtemp(prefix="imageactions-export-bench-", dir="/dev/shm"))
    stack = Stack("export_throughput", embedded=True)
    roots = {"local": stack.work / "store", "memory": shm}
    stores = {name: {"type": "filesystem", "path": str(root), "region": "one"} for name, root in roots.items()}
    stack.env.update(IMAGEACTIONS_ACTION_APPS="actions_export", IMAGEACTIONS_STORES=json.dumps(stores))
    try:
        with stack:
            images = {}
            for store, root in roots.items():
                image_id = str(uuid.uuid4())
                source = root / "images" / image_id
                source.parent.mkdir(parents=True)
                write_random_file(source, size)
                stack.record_image(image_id, store, f"images/{image_id}", source)
                images[store] = image_id, source
            session, api, _worker = stack.start_throughput_service()

            figures = {"size_gib": round(size / GiB, 2), "target_ratio": TARGET_RATIO}
            for label, store in (("same_store_hard_link", "local"), ("other_file_system_streamed", "memory")):
                image_id, source = images[store]
                plain_target = roots["local"] / "plain-copy"
                copy_baseline(source, plain_target)  # page cache warm, for both runs alike
                base = copy_baseline(source, plain_target)
                elapsed, action = stack.run_action(
                    session,
                    api,
                    "export",
                    {"image_id": image_id, "destination": {"type": "download"}},
                    timeout=60 + 60 * size / GiB,
                )
                figures[label] = {
                    "baseline_s": round(base, 2),
                    "export_s": round(elapsed, 2),
                    "ratio": round(elapsed / base, 3),
                    "baseline_mib_s": round(size / CHUNK / base, 1),
                    "export_mib_s": round(size / CHUNK / elapsed, 1),
                    "steps_s": stack.step_durations(action["id"]),
                }
            print(json.dumps(figures, indent=2))
    finally:
        shutil.rmtree(shm, ignore_errors=True)


if __name__ == "__main__":
    main()
