"""Bounded positional reads from an image file: inspection never reads more than a small budget,
whatever the file's size or its headers claim."""

import os
import stat
from collections import OrderedDict
from collections.abc import Callable
from contextlib import contextmanager
from functools import cached_property

from .errors import ImageFormatError, MalformedImageError, describe_size

# The largest tables read are 64 KiB each (a VMDK descriptor, a VHDX region or metadata
# table, qcow2 header extensions); a whole inspection stays well under this.
MAX_BYTES_READ = 1024 * 1024

# Enough to reach the ISO 9660 volume descriptors at 0x8001, 0x8801 and 0x9001.
HEAD_SIZE = 64 * 1024
# A streamOptimized VMDK footer: footer marker, header copy, end-of-stream marker.
TAIL_SIZE = 1536


class ReadBudgetExceeded(RuntimeError):
    """A bug: some inspection code tried to read more than MAX_BYTES_READ."""


class ImageReader:
    """Reads byte ranges of one open image file, counting every byte against a budget."""

    def __init__(self, fd: int, size: int, *, budget: int = MAX_BYTES_READ):
        self.fd = fd
        self.size = size
        self.budget = budget
        self.bytes_read = 0

    @classmethod
    @contextmanager
    def open(cls, path, *, budget: int = MAX_BYTES_READ):
        # O_NONBLOCK so that a FIFO or device in place of the file is refused, not waited on.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise ImageFormatError("The image is not a regular file and cannot be inspected.")
            yield cls(fd, info.st_size, budget=budget)
        finally:
            os.close(fd)

    def read_at(self, offset: int, length: int) -> bytes:
        """Up to `length` bytes at `offset`; fewer, or none, where the file ends.

        Offsets and lengths come from hostile headers, so anything outside the file is simply
        not there rather than an error from the OS."""
        if offset < 0 or length <= 0 or offset >= self.size:
            return b""
        length = min(length, self.size - offset)
        self.bytes_read += length
        if self.bytes_read > self.budget:
            raise ReadBudgetExceeded(f"inspection tried to read {self.bytes_read} bytes, budget {self.budget}")
        return self._read(offset, length)

    def _read(self, offset: int, length: int) -> bytes:
        chunks = []
        while length > 0:
            chunk = os.pread(self.fd, length, offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
            length -= len(chunk)
        return b"".join(chunks)

    def read_exact_at(self, offset: int, length: int, what: str) -> bytes:
        """Exactly `length` bytes at `offset`, or MalformedImageError naming `what` is cut off."""
        data = self.read_at(offset, length)
        if len(data) < length:
            raise MalformedImageError(
                f"The {what} is truncated: it needs {length} bytes at offset {offset}, but the file "
                f"ends at {describe_size(self.size)}. The upload may be incomplete; upload the whole image."
            )
        return data

    @cached_property
    def head(self) -> bytes:
        """The first bytes of the file, where nearly every format keeps its signature."""
        return self.read_at(0, HEAD_SIZE)

    @cached_property
    def tail(self) -> bytes:
        """The last bytes of the file, where VHD and streamOptimized VMDK keep footers."""
        start = max(0, self.size - TAIL_SIZE)
        if self.size <= HEAD_SIZE:
            return self.head[start:]
        return self.read_at(start, self.size - start)


# What one range request of a RangedImageReader fetches at least: the head (64 KiB) and the
# tables inspection reads are each one or two requests.
RANGE_BLOCK_SIZE = 256 * 1024
RANGE_CACHED_BLOCKS = 8


class RangedImageReader(ImageReader):
    """An ImageReader over bytes that are not in a local file: an object in a store, read with
    `read_range(offset, length)` (a range request). Reads are rounded out to blocks of
    RANGE_BLOCK_SIZE, the last few kept, so an inspection takes a handful of requests; the
    budget counts the bytes inspection asked for, as for a file. `requests` counts the reads."""

    def __init__(self, read_range: Callable[[int, int], bytes], size: int, *, budget: int = MAX_BYTES_READ):
        super().__init__(-1, size, budget=budget)
        self._read_range = read_range
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        self.requests = 0

    def _read(self, offset: int, length: int) -> bytes:
        first, last = offset // RANGE_BLOCK_SIZE, (offset + length - 1) // RANGE_BLOCK_SIZE
        missing = [index for index in range(first, last + 1) if index not in self._blocks]
        if missing:  # one request for the blocks from the first missing one to the last
            start = missing[0] * RANGE_BLOCK_SIZE
            end = min(self.size, (missing[-1] + 1) * RANGE_BLOCK_SIZE)
            data = self._read_range(start, end - start)
            self.requests += 1
            for index in range(missing[0], missing[-1] + 1):
                at = index * RANGE_BLOCK_SIZE - start
                self._blocks[index] = data[at : at + RANGE_BLOCK_SIZE]
        pieces = []
        for index in range(first, last + 1):
            self._blocks.move_to_end(index)
            pieces.append(self._blocks[index])
        while len(self._blocks) > max(RANGE_CACHED_BLOCKS, last - first + 1):
            self._blocks.popitem(last=False)
        at = offset - first * RANGE_BLOCK_SIZE
        return b"".join(pieces)[at : at + length]
