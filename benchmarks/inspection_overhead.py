"""Cost of quality control on the 1 GiB import benchmark: format inspection and verifiers against
the fetch of the same run, and an import of the gzip of the same data against the plain import.

Usage: python benchmarks/inspection_overhead.py [SIZE_GIB]   (default 1; target: inspection <= 1.05x)
"""

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from _stack import (  # noqa: E402
    CHUNK,
    GiB,
    ImageServer,
    Stack,
    large_import_env,
    report_row,
    size_argument,
    write_random_file,
)

from imageactions.formats import DISK_FORMATS, inspect_image  # noqa: E402
from imageactions.formats.verifiers import AllowedFormats, MaxVirtualSize, run_verifiers  # noqa: E402

RUNS = 2  # each import is run this often; the fastest counts (the machine may be shared)


def write_disk_like_file(path: Path, size: int) -> None:
    """Half random data, half zeros in 1 MiB runs: compressible the way a used disk is."""
    random_part = work_file = path.with_suffix(".random")
    write_random_file(work_file, min(size, 64 * CHUNK))
    block = random_part.read_bytes()
    zeros = bytes(CHUNK)
    with open(path, "wb") as out:
        out.writelines(
            block[(index // 2 % 64) * CHUNK :][:CHUNK] if index % 2 == 0 else zeros for index in range(size // CHUNK)
        )
    random_part.unlink()


def gzip_file(source: Path, target: Path) -> None:
    with open(source, "rb") as src, open(target, "wb") as out:
        subprocess.run(["gzip", "-1", "-c"], stdin=src, stdout=out, check=True)


def inspection_seconds(path: Path) -> float:
    """inspect_image + the two shipped verifiers, as the verify step runs them (page cache warm)."""
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        inspection = inspect_image(path, declared_format=None, max_virtual_size=1 << 40)
        run_verifiers(path, inspection, [MaxVirtualSize(1 << 40), AllowedFormats(DISK_FORMATS)])
        best = min(best, time.perf_counter() - start)
    return best


def main():
    size = size_argument()
    with ImageServer() as server, Stack("inspection_overhead", embedded=True, env=large_import_env(size)) as stack:
        image = stack.work / "image.raw"
        gzipped_image = stack.work / "image.raw.gz"
        write_disk_like_file(image, size)
        gzip_file(image, gzipped_image)
        urls = {path.name: server.add(f"/{path.name}", path) for path in (image, gzipped_image)}
        session, api, _worker = stack.start_throughput_service()

        plain, gzipped = [], []
        for _ in range(RUNS):  # interleaved, so a busy moment of the machine hits both alike
            plain.append(stack.timed_import(session, api, urls["image.raw"], size))
            gzipped.append(stack.timed_import(session, api, urls["image.raw.gz"], size))
        plain_s, plain_steps = min(plain, key=lambda run: run[0])
        gzip_s, gzip_steps = min(gzipped, key=lambda run: run[0])
        inspect_s = inspection_seconds(image)
        fetch_s = plain_steps["fetch"]

        print(
            json.dumps(
                {
                    "size_gib": round(size / GiB, 2),
                    "gzip_size_gib": round(gzipped_image.stat().st_size / GiB, 3),
                    "inspection_and_verifiers_s": round(inspect_s, 5),
                    "plain_import_s": round(plain_s, 2),
                    "plain_steps_s": plain_steps,
                    # The import with inspection against the same import without it.
                    "inspection_ratio_to_fetch": round((fetch_s + inspect_s) / fetch_s, 5),
                    "inspection_ratio_to_import": round(plain_s / (plain_s - inspect_s), 5),
                    "gzip_import_s": round(gzip_s, 2),
                    "gzip_steps_s": gzip_steps,
                    "decompression_ratio_to_plain_import": round(gzip_s / plain_s, 3),
                    "decompression_fetch_ratio": round(gzip_steps["fetch"] / fetch_s, 3),
                },
                indent=2,
            )
        )
        report_row(
            f"inspection and verifiers of a {size / GiB:g} GiB import",
            baseline=f"fetch {fetch_s:.2f} s",
            ours=f"fetch and inspection {fetch_s + inspect_s:.2f} s",
            ratio=(fetch_s + inspect_s) / fetch_s,
            target="<= 1.05",
        )


if __name__ == "__main__":
    main()
