"""Staging through the object store: what it costs an import, and what the store step saves.

1. An http import of SIZE into an S3 image store, staged on the worker's filesystem (the
   embedded default) against staged in an S3 bucket of the same Swift
   (IMAGEACTIONS_STAGING_STORE): POST to success, rounds alternating, medians compared.
2. The store step alone (its time from the action's event log), with S3 staging, for images of
   each STORE_SIZE: a server-side copy into an image store of the staging store's account,
   against streaming into a store of another account (the service cannot copy between
   accounts server-side). How each time grows with the image's size is printed too.

Everything runs on one machine against a Swift started here (scripts/object-store); a real
object store copies server-side at its own speed, so part 2's figures say how much of the
bytes' path the worker is out of, not what a cloud's copy costs.

Usage: python benchmarks/staging_store.py [SIZE_GIB] [ROUNDS] [STORE_SIZES_GIB]
       (default 1 GiB, 2 rounds, store sizes "0.25,1"; a comma-separated list)
"""

import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _stack import (
    GiB,
    ImageServer,
    ObjectStore,
    Stack,
    large_import_env,
    report_row,
    size_argument,
    write_random_file,
)

# Staging in the bucket writes the bytes to the object store while they arrive, and the store
# step copies them inside it: an import may take this much longer than one staged on disk.
IMPORT_TARGET = "<= 1.3"
# A server-side copy keeps the image's bytes off the worker: the store step should not be slower
# than streaming them through it,
STORE_TARGET = "<= 1.0"
# and should stay nearly flat as the image grows (the words): its time may grow at most
# half as fast as the image's size, from the smallest STORE_SIZE to the largest.
GROWTH_TARGET = "<= 0.5"


def start(name: str, env: dict, size: int):
    stack = Stack(name, embedded=True, env={**large_import_env(size), **env})
    stack.__enter__()
    session, api, _worker = stack.start_throughput_service()
    return stack, session, api


def main():
    size = size_argument()
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    store_sizes = [int(float(each) * GiB) for each in (sys.argv[3] if len(sys.argv) > 3 else "0.25,1").split(",")]
    stacks = []
    with ImageServer() as server, ObjectStore(Path(f"/tmp/imageactions-bench-swift-{os.getpid()}")) as swift:
        try:
            images = swift.s3_config("images", region="main")
            other_account = swift.s3_config("images-elsewhere", second_account=True, region="main")
            staging = json.dumps(swift.s3_config("staging"))
            stores = json.dumps({"s3": images, "elsewhere": other_account})
            common = {"IMAGEACTIONS_STORES": stores, "IMAGEACTIONS_DEFAULT_STORE": "s3"}
            largest = max(size, *store_sizes)
            local, *local_rest = start("staging_local", common, largest)
            remote, *remote_rest = start("staging_s3", {**common, "IMAGEACTIONS_STAGING_STORE": staging}, largest)
            stacks += [local, remote]

            # -- 1. the import, staged locally and in the bucket
            image = local.work / "image.raw"
            write_random_file(image, size)
            url = server.add("/image.raw", image)
            local.timed_import(*local_rest, url, size)  # page cache, TCP and Swift warm for both
            times = {"filesystem": [], "s3": []}
            steps = {}
            for _ in range(rounds):
                for name, (stack, *rest) in (("filesystem", (local, *local_rest)), ("s3", (remote, *remote_rest))):
                    elapsed, steps[name] = stack.timed_import(*rest, url, size)
                    times[name].append(round(elapsed, 2))
            local_s, remote_s = statistics.median(times["filesystem"]), statistics.median(times["s3"])

            # -- 2. the store step: server-side copy against streaming, as the image grows
            store_steps = {}
            session, api = remote_rest
            for store_size in store_sizes:
                path = remote.work / f"store-{store_size}.raw"
                write_random_file(path, store_size)
                store_url = server.add(f"/store-{store_size}.raw", path)
                for how, store in (("server-side", "s3"), ("streamed", "elsewhere")):
                    _elapsed, step_seconds = remote.timed_import(session, api, store_url, store_size, stores=[store])
                    store_steps.setdefault(how, []).append(step_seconds["store"])
                path.unlink()
        finally:
            for stack in stacks:
                stack.__exit__(None, None, None)

    gib = [round(each / GiB, 2) for each in store_sizes]
    print(
        json.dumps(
            {
                "import_size_gib": round(size / GiB, 2),
                "import_s": times,
                "steps_s_last_round": steps,
                "store_sizes_gib": gib,
                "store_step_s": store_steps,
                "load_average": os.getloadavg(),
            },
            indent=2,
        )
    )
    rows = [
        report_row(
            f"import of {size / GiB:g} GiB into S3, staged in S3 vs on the worker's disk",
            baseline=f"{local_s:.2f} s",
            ours=f"{remote_s:.2f} s",
            ratio=remote_s / local_s,
            target=IMPORT_TARGET,
        )
    ]
    for index, store_size in enumerate(store_sizes):
        server_side, streamed = store_steps["server-side"][index], store_steps["streamed"][index]
        rows.append(
            report_row(
                f"store step of {store_size / GiB:g} GiB, server-side copy vs streamed",
                baseline=f"{streamed:.2f} s",
                ours=f"{server_side:.2f} s",
                ratio=server_side / streamed,
                target=STORE_TARGET,
            )
        )
    if len(store_sizes) > 1:
        small, large = store_sizes.index(min(store_sizes)), store_sizes.index(max(store_sizes))
        growth = store_steps["server-side"][large] / store_steps["server-side"][small]
        rows.append(
            report_row(
                f"store step by server-side copy, {store_sizes[small] / GiB:g} to {store_sizes[large] / GiB:g} GiB: "
                "time's growth / size's growth",
                baseline=f"size x{store_sizes[large] / store_sizes[small]:g}",
                ours=f"time x{growth:.2f}",
                ratio=growth / (store_sizes[large] / store_sizes[small]),
                target=GROWTH_TARGET,
            )
        )
    sys.exit(0 if all(row["met"] for row in rows) else 1)


if __name__ == "__main__":
    main()
