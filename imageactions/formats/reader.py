"""Bounded positional reads from an image file: inspection never reads more than a small budget,
whatever the file's size or its headers claim."""

import os
import stat
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
