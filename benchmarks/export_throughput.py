"""Export throughput: an export to a download link (no conversion; POST to success with a worker
running) against the issue's baseline in the same run, `cp SRC DST && sync && sha512sum DST` (in
Python: copy_baseline(durable=True)), the same proof the export keeps: the copy, read back once.

Twice: the image in the download link's own filesystem store (the export is a hard link, read
back), and the image in a store on another file system, /dev/shm (the kernel copies it, then it is
read back); each baseline copies the same source file to the download store's file system.

Usage: python benchmarks/export_throughput.py [SIZE_GIB] [ROUNDS]   (default 0.5 GiB, 3 rounds;
target ratio <= 1.2 for each case). Baseline and export alternate; the medians are compared.
Exits 1 when a target is missed.
"""

import json
import os
import shutil
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _stack import CHUNK, GiB, Stack, copy_baseline, report_row, size_argument, write_random_file

TARGET = "<= 1.2"
DEFAULT_SIZE_GIB = 0.5
CASES = {  # case of the report -> the store the image is in
    "export, same filesystem": "local",
    "export, from another filesystem": "memory",
}


def main():
    size = size_argument() if len(sys.argv) > 1 else int(DEFAULT_SIZE_GIB * GiB)
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    shm = Path(tempfile.mkdtemp(prefix="imageactions-export-bench-", dir="/dev/shm"))
    stack = Stack("export_throughput", embedded=True)
    roots = {"local": stack.work / "store", "memory": shm}
    stores = {name: {"type": "filesystem", "path": str(root), "region": "one"} for name, root in roots.items()}
    stack.env.update(
        IMAGEACTIONS_ACTION_APPS="actions_export",
        IMAGEACTIONS_STORES=json.dumps(stores),
        IMAGEACTIONS_DEFAULT_STORE="local",
    )
    rows = []
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

            figures = {
                "size_gib": round(size / GiB, 2),
                "baseline": "cp SRC DST && sync && sha512sum DST",
                "target_ratio": TARGET,
            }
            for case, store in CASES.items():
                image_id, source = images[store]
                plain_target = roots["local"] / "plain-copy"
                copy_baseline(source, plain_target)  # page cache warm, for both runs alike
                bases, exports = [], []
                for _ in range(rounds):
                    bases.append(copy_baseline(source, plain_target, durable=True))
                    elapsed, action = stack.run_action(
                        session,
                        api,
                        "export",
                        {"image_id": image_id, "destination": {"type": "download"}},
                        timeout=60 + 60 * size / GiB,
                    )
                    exports.append(elapsed)
                base, elapsed = statistics.median(bases), statistics.median(exports)
                figures[case] = {
                    "baseline_s": round(base, 2),
                    "export_s": round(elapsed, 2),
                    "ratio": round(elapsed / base, 3),
                    "rounds_s": {"baseline": [round(t, 2) for t in bases], "export": [round(t, 2) for t in exports]},
                    "baseline_mib_s": round(size / CHUNK / base, 1),
                    "export_mib_s": round(size / CHUNK / elapsed, 1),
                    "steps_s_last_round": stack.step_durations(action["id"]),
                }
                rows.append((case, base, elapsed))
            figures["load_average"] = os.getloadavg()
            print(json.dumps(figures, indent=2))
            met = [
                report_row(
                    case, baseline=f"{base:.2f} s", ours=f"{elapsed:.2f} s", ratio=elapsed / base, target=TARGET
                )["met"]
                for case, base, elapsed in rows
            ]
    finally:
        shutil.rmtree(shm, ignore_errors=True)
    sys.exit(0 if all(met) else 1)


if __name__ == "__main__":
    main()
