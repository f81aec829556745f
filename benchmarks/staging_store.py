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
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _stack import (
    GiB,
    ImageServer,
    Stack,
    large_import_env,
    object_store,
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


# The test Swift's second account (scripts/object-store/start_swift.sh): a store the staging
# store's credentials cannot copy into server-side.
SECOND_ACCOUNT = {"access_key": "test2:tester2", "secret_key": "testing2"}


CLIENT_KEYS = ("endpoint_url", "access_key", "secret_key", "region_name", "addressing_style")


def s3_store(swift, bucket: str, **overrides) -> dict:
    """An IMAGEACTIONS_STORES entry for `bucket` of the benchmark's Swift, which it creates."""
    from imageactions.stores import build_s3_client  # importable once object_store() has run

    config = swift.s3_store_config(bucket=bucket, region="main", **overrides)
    build_s3_client(**{key: config[key] for key in CLIENT_KEYS}).create_bucket(Bucket=bucket)
    return config


def started(exits: ExitStack, name: str, env: dict, size: int) -> tuple[Stack, object, str]:
    """A stack (gunicorn and one worker) of its own, stopped when `exits` closes: (stack, session, api)."""
    stack = exits.enter_context(Stack(name, embedded=True, env={**large_import_env(size), **env}))
    session, api, _worker = stack.start_throughput_service()
    return stack, session, api


def main():
    size = size_argument()
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    store_sizes = [int(float(each) * GiB) for each in (sys.argv[3] if len(sys.argv) > 3 else "0.25,1").split(",")]
    with ExitStack() as exits:
        server = exits.enter_context(ImageServer())
        swift = exits.enter_context(object_store(Path(f"/tmp/imageactions-bench-swift-{os.getpid()}")))
        stores = {"s3": s3_store(swift, "images"), "elsewhere": s3_store(swift, "images-elsewhere", **SECOND_ACCOUNT)}
        common = {"IMAGEACTIONS_STORES": json.dumps(stores), "IMAGEACTIONS_DEFAULT_STORE": "s3"}
        staging = {"IMAGEACTIONS_STAGING_STORE": json.dumps(s3_store(swift, "staging"))}
        largest = max(size, *store_sizes)
        runs = {
            "filesystem": started(exits, "staging_local", common, largest),
            "s3": started(exits, "staging_s3", {**common, **staging}, largest),
        }

        # -- 1. the import, staged locally and in the bucket
        image = runs["filesystem"][0].work / "image.raw"
        write_random_file(image, size)
        url = server.add("/image.raw", image)
        stack, session, api = runs["filesystem"]
        stack.timed_import(session, api, url, size)  # page cache, TCP and Swift warm for both
        times = {"filesystem": [], "s3": []}
        steps = {}
        for _ in range(rounds):
            for name, (stack, session, api) in runs.items():
                elapsed, steps[name] = stack.timed_import(session, api, url, size)
                times[name].append(round(elapsed, 2))
        local_s, remote_s = statistics.median(times["filesystem"]), statistics.median(times["s3"])

        # -- 2. the store step: server-side copy against streaming, as the image grows
        store_steps = {}
        stack, session, api = runs["s3"]
        for store_size in store_sizes:
            path = stack.work / f"store-{store_size}.raw"
            write_random_file(path, store_size)
            store_url = server.add(f"/store-{store_size}.raw", path)
            for how, store in (("server-side", "s3"), ("streamed", "elsewhere")):
                _elapsed, step_seconds = stack.timed_import(session, api, store_url, store_size, stores=[store])
                store_steps.setdefault(how, []).append(step_seconds["store"])
            path.unlink()

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
