"""Streaming copy of image bytes with hashing, a size cap and progress reports.

The bytes are read once, in fixed-size chunks: memory does not grow with the image.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .formats.errors import human_size
from .sparse import SparseWriter, read_chunks

CHUNK_SIZE = 1024 * 1024
# Chunks the hashers may lag behind the copy. Every algorithm hashes the same chunk objects, so
# this bounds the chunks held at once (about this many MiB) whatever the number of algorithms.
HASH_QUEUE_CHUNKS = 4
HEX_LENGTHS = {"md5": 32, "sha256": 64, "sha512": 128}
# What every image's bytes are hashed with, as Glance records them: md5 as `checksum`, sha512 as
# `os_hash_value`.
IMAGE_HASHES = ("md5", "sha512")

Progress = Callable[[int, int | None], None]
# Also given every chunk, in order (e.g. MultipartUpload.write: the bytes staged in S3 as well).
Sink = Callable[[bytes], None]


class TransferError(Exception):
    """The copy stopped; the text is written for the user."""


class SizeLimitExceeded(TransferError):
    """More bytes arrived (or were announced) than the cap allows."""

    def __init__(self, limit: int):
        super().__init__(f"The image is larger than the {human_size(limit)} limit")
        self.limit = limit


@dataclass(frozen=True)
class TransferResult:
    size: int
    hashes: dict[str, str]  # algorithm -> hex digest


def check_announced_size(announced: int | None, limit: int | None) -> None:
    """Fail before reading anything when the source says up front that it is too big."""
    if limit is not None and announced is not None and announced > limit:
        raise SizeLimitExceeded(limit)


class ParallelHasher:
    """Hashes a sequence of chunks with several algorithms, each on its own thread.

    hashlib releases the GIL for large updates, so md5 and sha512 run beside each other and
    beside the copy; each algorithm's updates stay in order on its single thread.
    """

    def __init__(self, algorithms: Iterable[str]):
        self.hashers = {algo: hashlib.new(algo) for algo in dict.fromkeys(algorithms)}
        # One single-thread executor per algorithm: a hasher's updates must run in order.
        self._executors = [ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"hash-{a}") for a in self.hashers]
        self._pending: deque[list[Future]] = deque()

    def update(self, chunk: bytes) -> None:
        updates = zip(self._executors, self.hashers.values())
        self._pending.append([executor.submit(h.update, chunk) for executor, h in updates])
        if len(self._pending) > HASH_QUEUE_CHUNKS:
            for future in self._pending.popleft():
                future.result()

    def hexdigests(self) -> dict[str, str]:
        self._drain()
        return {algo: h.hexdigest() for algo, h in self.hashers.items()}

    def close(self) -> None:
        for executor in self._executors:
            executor.shutdown(wait=True, cancel_futures=True)

    def _drain(self) -> None:
        while self._pending:
            for future in self._pending.popleft():
                future.result()

    def __enter__(self) -> ParallelHasher:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def copy_to_file(
    source: BinaryIO,
    path: Path | None,
    *,
    hash_algorithms: Iterable[str] = IMAGE_HASHES,
    max_size: int | None = None,
    total: int | None = None,
    progress: Progress | None = None,
    sparse: bool = False,
    also_to: Sink | None = None,
) -> TransferResult:
    """Copy everything `source.read()` yields into a new file at `path`, hashing on the way.

    Stops with SizeLimitExceeded as soon as more than `max_size` bytes arrived; `total` (when
    known) is what progress reports as the whole; with `sparse`, blocks of zeros are left as
    holes (SparseWriter). `also_to` is given every chunk too, in the same pass; with no `path`,
    it is the only place the bytes go. The partial file is removed on any error.
    """
    check_announced_size(total, max_size)
    done = 0
    try:
        with open(path, "wb") if path else nullcontext() as out, ParallelHasher(hash_algorithms) as hasher:
            writer = SparseWriter(out, sparse=sparse) if out else None
            while chunk := source.read(CHUNK_SIZE):
                done += len(chunk)
                if max_size is not None and done > max_size:
                    raise SizeLimitExceeded(max_size)
                hasher.update(chunk)
                if writer:
                    writer.write(chunk)
                if also_to:
                    also_to(chunk)
                if progress:
                    progress(done, total)
            if writer:
                writer.finish()
            digests = hasher.hexdigests()
    except BaseException:
        if path:
            _remove(path)
        raise
    if progress:
        progress(done, total)
    return TransferResult(size=done, hashes=digests)


def _remove(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def hash_file(
    path: Path,
    *,
    hash_algorithms: Iterable[str] = IMAGE_HASHES,
    progress: Callable[[], None] | None = None,
    also_to: Sink | None = None,
) -> TransferResult:
    """Size and hashes (`hash_algorithms`) of a file, in one streaming pass; `progress()` after
    each chunk; `also_to` is given every chunk too.

    Holes are hashed as the zeros they read as, without reading them."""
    size = 0
    with open(path, "rb") as file, ParallelHasher(hash_algorithms) as hasher:
        for chunk in read_chunks(file, CHUNK_SIZE):
            hasher.update(chunk)
            if also_to:
                also_to(chunk)
            size += len(chunk)
            if progress:
                progress()
        return TransferResult(size=size, hashes=hasher.hexdigests())
