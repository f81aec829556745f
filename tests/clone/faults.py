"""Fault injection for clone tests: readers the copy step is told to wrap around the source
(settings.CLONE_STREAM_FILTER, set in the workers' environment only)."""

import time

CORRUPTED_OFFSET = 1000


class _FlipOneByte:
    """Passes the bytes through, with the byte at CORRUPTED_OFFSET inverted: a copy damaged in flight."""

    def __init__(self, reader):
        self.reader, self.position = reader, 0

    def read(self, amount=-1):
        data = self.reader.read(amount)
        start, self.position = self.position, self.position + len(data)
        if start <= CORRUPTED_OFFSET < self.position:
            at = CORRUPTED_OFFSET - start
            data = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
        return data


def flip_one_byte(reader):
    return _FlipOneByte(reader)


class _Slow:
    """Passes the bytes through at about 4 MiB/s (1 MiB reads), so a test can cancel mid-copy."""

    def __init__(self, reader):
        self.reader = reader

    def read(self, amount=-1):
        time.sleep(0.25)
        return self.reader.read(amount)


def slow_reader(reader):
    return _Slow(reader)
