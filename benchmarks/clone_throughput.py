"""Clone throughput: a clone between two filesystem stores (POST to success, a worker running)
against a plain copy of the same bytes (shutil.copyfile, then sha512 of the copy) in the same run.

Usage: python benchmarks/clone_throughput.py [SIZE_GIB] [ROUNDS]   (default 1 GiB, 3 rounds; target
ratio <= 1.25). Baseline and clone alternate; the medians are compared, so a busy machine skews less.
"""

import json
import os
import statistics
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _stack import CHUNK, GiB, Stack, copy_baseline, size_argument, write_random_file


def rounds_of(times: list[float]) -> list[float]:
    return [round(t, 2) for t in times]


def main():
    size = size_argument()
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    stack = Stack("clone_throughput", embedded=True)
    stores = {
        "source": {"type": "filesystem", "path": str(stack.work / "source-store"), "region": "one"},
        "target": {"type": "filesystem", "path": str(stack.work / "target-store"), "region": "two"},
    }
    stack.env.update(
        IMAGEACTIONS_ACTION_APPS="actions_clone",
        IMAGEACTIONS_STORES=json.dumps(stores),
        IMAGEACTIONS_DEFAULT_STORE="source",
    )
    with stack:
        image_id = str(uuid.uuid4())
        key = f"images/{image_id}"
        source = stack.work / "source-store" / key
        source.parent.mkdir(parents=True)
        write_random_file(source, size)
        stack.record_image(image_id, "source", key, source)
        session, api, _worker = stack.start_throughput_service()

        plain_target = stack.work / "target-store" / "plain-copy"
        plain_target.parent.mkdir(parents=True)
        copy_baseline(source, plain_target)  # page cache warm, for both runs alike
        bases, durable_bases, clones = [], [], []
        for _ in range(rounds):
            bases.append(copy_baseline(source, plain_target))
            durable_bases.append(copy_baseline(source, plain_target, durable=True))
            elapsed, action = stack.run_action(
                session, api, "clone", {"image_id": image_id, "stores": ["target"]}, timeout=60 + 60 * size / GiB
            )
            clones.append(elapsed)
        base, durable_base, elapsed = map(statistics.median, (bases, durable_bases, clones))

        print(
            json.dumps(
                {
                    "size_gib": round(size / GiB, 2),
                    "baseline_s": round(base, 2),
                    "clone_s": round(elapsed, 2),
                    "ratio": round(elapsed / base, 3),
                    "target_ratio": 1.25,
                    "durable_baseline_s": round(durable_base, 2),
                    "ratio_to_durable_baseline": round(elapsed / durable_base, 3),
                    "rounds_s": {
                        "baseline": rounds_of(bases),
                        "durable_baseline": rounds_of(durable_bases),
                        "clone": rounds_of(clones),
                    },
                    "load_average": os.getloadavg()[0],
                    "baseline_mib_s": round(size / CHUNK / base, 1),
                    "clone_mib_s": round(size / CHUNK / elapsed, 1),
                    "steps_s_last_round": stack.step_durations(action["id"]),
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
