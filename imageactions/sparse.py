"""Sparse image files: blocks of zeros are left as holes instead of being written.

A fresh disk image is mostly zeros. Skipping over them saves the disk writes and the space;
the file still reads back byte for byte (a hole reads as zeros), so sizes and hashes are those
of every byte. Reading skips the holes too (SEEK_DATA), handing out zeros from memory.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from itertools import chain
from typing import BinaryIO

# The smallest run of zeros left as a hole: the usual filesystem block, and qemu-img's own
# default for `convert -S`.
HOLE_SIZE = 4096
READ_CHUNK_SIZE = 1024 * 1024
# Compared against, never written: `ZEROS.startswith(data)` is a memcmp that copies nothing.
ZEROS = bytes(READ_CHUNK_SIZE)
ZERO_BLOCK = bytes(HOLE_SIZE)


def is_zeros(data) -> bool:
    """Whether a bytes-like object of at most READ_CHUNK_SIZE bytes holds only zeros."""
    return ZEROS.startswith(data)


class SparseWriter:
    """Writes consecutive chunks into a new, empty file, seeking over their all-zero blocks
    (HOLE_SIZE, aligned to the file's start) instead of writing them.

    `finish()` gives the file its full length when it ends in zeros. With `sparse` False every
    byte is written, as a plain write would.
    """

    def __init__(self, file: BinaryIO, *, sparse: bool = True):
        self.file = file
        self.sparse = sparse
        self._offset = 0  # bytes passed so far, written or skipped over
        self._skipped = 0  # zeros passed over since the file's position was last moved

    def write(self, chunk) -> None:
        if not self.sparse:
            self.file.write(chunk)
            return
        size = len(chunk)
        if size <= len(ZEROS) and is_zeros(chunk):  # the common case in an empty disk: one memcmp
            self._skipped += size
            self._offset += size
            return
        if self._all_data(chunk):  # the common case in a full disk: one C-speed search
            self._write_data(chunk)
            self._offset += size
            return
        view = memoryview(chunk)
        data_start = None  # where the current run of blocks with data began
        start = 0
        while start < size:
            # Blocks aligned to the file, not to the chunk: a hole is only a hole in whole blocks.
            end = min(start + HOLE_SIZE - (self._offset + start) % HOLE_SIZE, size)
            if not is_zeros(view[start:end]):
                if data_start is None:
                    data_start = start
            else:
                if data_start is not None:
                    self._write_data(view[data_start:start])
                    data_start = None
                self._skipped += end - start
            start = end
        if data_start is not None:
            self._write_data(view[data_start:])
        self._offset += size

    def _all_data(self, chunk) -> bool:
        """Whether no block of `chunk` (aligned to the file, whole or cut by the chunk's ends)
        is all zeros: then the loop of write() would write it whole."""
        if not isinstance(chunk, bytes):
            return False
        size = len(chunk)
        head = -self._offset % HOLE_SIZE  # the cut block at the start, up to the first boundary
        tail = head + (size - head) // HOLE_SIZE * HOLE_SIZE  # where the cut block at the end begins
        if head >= size or tail <= head:
            return False
        return (
            (head == 0 or not is_zeros(chunk[:head]))
            and (tail == size or not is_zeros(chunk[tail:]))
            and chunk.find(ZERO_BLOCK, head, tail) == -1
        )

    def finish(self) -> None:
        """Extend the file over the zeros at its end; call once, after the last write."""
        if self._skipped:
            self.file.seek(self._skipped, os.SEEK_CUR)
            self._skipped = 0
            self.file.truncate()

    def _write_data(self, data) -> None:
        if self._skipped:
            self.file.seek(self._skipped, os.SEEK_CUR)
            self._skipped = 0
        self.file.write(data)


def read_chunks(file: BinaryIO, chunk_size: int = READ_CHUNK_SIZE) -> Iterator[bytes | memoryview]:
    """The file's bytes from its current position to its end, in chunks of at most
    `chunk_size` (READ_CHUNK_SIZE at most); holes come as read-only views of ZEROS, not read.

    Data is read with pread at explicit offsets, past the file object's buffer: SEEK_DATA and
    SEEK_HOLE move the descriptor's position, which a buffered read would not know of. The file
    object is left at the end of what was read.
    """
    chunk_size = min(chunk_size, len(ZEROS))
    fd = file.fileno()
    position, end = file.tell(), os.fstat(fd).st_size
    zeros = memoryview(ZEROS)
    # The extents of data, then the end: what lies before each is a hole.
    for data_start, data_end in chain(data_extents(fd, position, end), [(end, end)]):
        while position < data_start:
            step = min(chunk_size, data_start - position)
            yield zeros[:step]
            position += step
        while position < data_end:
            chunk = os.pread(fd, min(chunk_size, data_end - position), position)
            if not chunk:  # the file shrank while it was read
                file.seek(position)
                return
            yield chunk
            position += len(chunk)
    file.seek(position)


def data_extents(fd: int, start: int, end: int) -> Iterator[tuple[int, int]]:
    """(first, last + 1) of each stretch between `start` and `end` of the open file `fd` that is
    not a hole, in order; a file system that cannot tell has one stretch: all of it."""
    position = start
    while position < end:
        data_start = _seek(fd, position, os.SEEK_DATA, end)
        if data_start >= end:
            return
        position = _seek(fd, data_start, os.SEEK_HOLE, end)
        yield data_start, position


def _seek(fd: int, position: int, whence: int, end: int) -> int:
    """Where the next data (SEEK_DATA) or hole (SEEK_HOLE) starts at or after `position`, at most
    `end`; a file system that cannot tell has data everywhere."""
    try:
        return min(os.lseek(fd, position, whence), end)
    except OSError as error:
        if error.errno == errno.ENXIO:  # SEEK_DATA: nothing but a hole up to the end
            return end
        if error.errno in (errno.EINVAL, errno.EOPNOTSUPP):
            return position if whence == os.SEEK_DATA else end
        raise
