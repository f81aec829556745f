"""Sparse imports: an http import of a mostly-zero raw disk (plain and gzip-compressed) with
sparse writing on, against the same import with it off (IMAGEACTIONS_SPARSE_IMAGES=false, every
byte written: the code path before sparse images); and the disk the stored file uses.

Usage: python benchmarks/sparse_import.py [SIZE_GIB]   (default 1; the issue's figure is 8)
"""

import json
import os
import sys
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _stack import (
    CHUNK,
    GiB,
    ImageServer,
    MiB,
    Stack,
    api_session,
    large_import_env,
    report_row,
    size_argument,
    small_image,
)

DATA_AT_START = 2 * MiB  # a boot area and the first file-system structures
SCATTERED_PIECES = 32  # 64 KiB each: the rest of a fresh disk's data, spread over the disk
PIECE = 64 * 1024
MODES = {"dense": {"IMAGEACTIONS_SPARSE_IMAGES": "false"}, "sparse": {"IMAGEACTIONS_SPARSE_IMAGES": "true"}}


def write_mostly_zero_disk(path: Path, size: int) -> None:
    """A raw disk of `size` bytes, all zeros but DATA_AT_START and the scattered pieces. The
    zeros are holes here too, so making it costs no disk writes."""
    with open(path, "wb") as out:
        out.write(os.urandom(DATA_AT_START))
        for index in range(1, SCATTERED_PIECES + 1):
            out.seek(index * size // (SCATTERED_PIECES + 1))
            out.write(os.urandom(PIECE))
        out.truncate(size)


def write_gzip(source: Path, target: Path) -> None:
    """`gzip -6 < source > target`, in Python."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: a gzip header and trailer
    with open(source, "rb") as src, open(target, "wb") as out:
        while chunk := src.read(CHUNK):
            out.write(compressor.compress(chunk))
        out.write(compressor.flush())


def stored_file(stack: Stack, image_id: str) -> Path:
    [path] = (stack.work / "data").rglob(image_id)
    return path


def run_import(stack: Stack, session, api: str, url: str, size: int) -> dict:
    """One import to success: its time, steps and the disk its stored file uses; the file is
    then removed and written-back (untimed), so each import starts from a quiet disk."""
    elapsed, action = stack.run_action(
        session, api, "import", {"location": url, "image_properties": {"name": "bench"}}, timeout=120 + 60 * size / GiB
    )
    image_id = action["result"]["image_ref"]
    image = session.get(f"{api}/v2/images/{image_id}", timeout=30).json()
    path = stored_file(stack, image_id)
    info = path.stat()
    figures = {
        "seconds": round(elapsed, 2),
        "steps_s": stack.step_durations(action["id"]),
        "size": info.st_size,
        "disk_bytes": info.st_blocks * 512,
        "disk_fraction": round(info.st_blocks * 512 / info.st_size, 5),
        "hashes": (image["checksum"], image["os_hash_value"]),
    }
    path.unlink()
    os.sync()
    return figures


def main():
    size = size_argument()
    results: dict[str, dict[str, dict]] = {}
    with ImageServer() as server, Stack("sparse_import", embedded=True, env=large_import_env(size)) as stack:
        disk = stack.work / "disk.raw"
        write_mostly_zero_disk(disk, size)
        write_gzip(disk, stack.work / "disk.raw.gz")
        gzip_size = (stack.work / "disk.raw.gz").stat().st_size
        urls = {"plain": server.add("/disk.raw", disk), "gzip": server.add("/disk.raw.gz", stack.work / "disk.raw.gz")}
        warm_up = server.add("/warm-up.raw", small_image(MiB))
        session = api_session(stack.create_user("bench", "bench"))
        api = stack.start_api(workers=2, threads=1)
        os.sync()
        for mode, env in MODES.items():
            stack.start_workers(workers=1, env=env)
            stack.wait_for_workers()
            # A worker's first action pays for its start-up (imports, connections): not timed.
            stack.run_action(
                session, api, "import", {"location": warm_up, "image_properties": {"name": "warm"}}, timeout=60
            )
            results[mode] = {case: run_import(stack, session, api, url, size) for case, url in urls.items()}
            stack.stop_workers()
        hashes = {figures.pop("hashes") for cases in results.values() for figures in cases.values()}
        sizes = {figures["size"] for cases in results.values() for figures in cases.values()}
        if len(hashes) != 1 or sizes != {size}:
            raise SystemExit(f"the four imports stored different bytes: sizes {sizes}, hashes {hashes}")

    dense, sparse = results["dense"], results["sparse"]
    speedups = {case: dense[case]["seconds"] / sparse[case]["seconds"] for case in urls}
    print(
        json.dumps(
            {
                "size_gib": round(size / GiB, 2),
                "data_mib": round((DATA_AT_START + SCATTERED_PIECES * PIECE) / MiB, 1),
                "gzip_mib": round(gzip_size / MiB, 1),
                "load_average": os.getloadavg(),
                "speedup": {case: round(value, 2) for case, value in speedups.items()},
                **results,
            },
            indent=2,
        )
    )
    for case in urls:
        report_row(
            f"sparse import, {case}: time",
            baseline=f"{dense[case]['seconds']:.1f} s",
            ours=f"{sparse[case]['seconds']:.1f} s",
            ratio=speedups[case],
            target=">= 4",
        )
    fraction = max(sparse[case]["disk_fraction"] for case in urls)
    report_row(
        "sparse import: disk used / image size",
        baseline=f"{max(dense[case]['disk_fraction'] for case in urls):.3f}",
        ours=f"{fraction:.5f}",
        ratio=fraction,
        target="<= 0.01",
    )


if __name__ == "__main__":
    main()
