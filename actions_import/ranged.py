"""Parallel ranged fetch: a large source read over several connections, one range ("part") each,
and handed on as one ordered stream.

`ParallelRangeReader` has the read(n) of a single stream, so staging decompresses and hashes in
one ordered pass as before. Worker threads take the parts in order; a part is fetched only while
it lies within `connections` parts of the one being read, so the parts held in memory (the
reorder buffer) never exceed connections x part size, whatever the image's size. The part being
read streams through as its bytes arrive. A part whose connection breaks is resumed on its own
from where it stopped, a bounded number of times; a source that answers a range otherwise than
asked (changed under us, refused) fails the whole read.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from imageactions.pipeline import CHUNK_SIZE, ErrorCode, StepError, human_size

log = logging.getLogger(__name__)

# Seconds close() waits for the worker threads after shutting their connections.
THREADS_STOP_SECONDS = 5.0


@dataclass
class RangeBody:
    """One answer's bytes: read(n); close() when done; abort() from another thread makes a
    blocked read() raise."""

    read: Callable[[int], bytes]
    close: Callable[[], None]
    abort: Callable[[], None]


class RangeRefused(StepError):
    """The source answered a range request in a way that resuming cannot fix (the object changed,
    the range was refused): the read fails at once."""


# open_range(start, end) -> the body of bytes start..end (inclusive); raises RangeRefused, or a
# StepError of the source (retried when its code says the source may be reachable again).
RangeOpener = Callable[[int, int], RangeBody]
RETRYABLE_OPEN_ERRORS = (ErrorCode.SOURCE_UNREACHABLE, ErrorCode.SOURCE_INTERRUPTED)


@dataclass
class _Part:
    index: int
    start: int
    length: int
    received: int = 0
    chunks: deque = field(default_factory=deque)  # received, not yet read
    breaks: int = 0  # its connections that broke or could not be opened, of every try


class ParallelRangeReader:
    """Reads `size` bytes of a source as parts of `part_size` over `connections` threads.

    `first` is the body of the answer that announced the size (the whole object): the first
    part is read from it, saving a request. `open_range` opens every other part and every
    resumed one; `max_resumes` bounds the resumes of one part.
    """

    def __init__(
        self,
        *,
        what: str,
        size: int,
        first: RangeBody,
        open_range: RangeOpener,
        connections: int,
        part_size: int,
        max_resumes: int,
    ):
        self.what, self.size, self.part_size = what, size, part_size
        self.connections = max(1, min(connections, -(-size // part_size)))
        self.max_resumes = max_resumes
        self.buffer_cap = self.connections * part_size
        self.buffer_peak = 0
        self.resumes = 0
        self.bytes_read = 0
        self._first: RangeBody | None = first
        self._open_range = open_range
        self._parts_total = -(-size // part_size)
        self._parts: dict[int, _Part] = {}
        self._head = 0  # the part read() is in
        self._next = 0  # the next part a thread takes
        self._held = 0  # bytes received and not yet read
        self._error: BaseException | None = None
        self._stopped = False
        self._changed = threading.Condition()
        self._open: dict[int, RangeBody] = {}  # part index -> the body a thread reads it from
        self._threads = [
            threading.Thread(target=self._work, name=f"fetch-part-{n}", daemon=True) for n in range(self.connections)
        ]
        for thread in self._threads:
            thread.start()

    # -- the reading side ----------------------------------------------------------------

    def read(self, amount: int = -1) -> bytes:
        if amount is None or amount < 0:
            return b"".join(iter(lambda: self.read(CHUNK_SIZE), b""))
        if amount == 0:
            return b""
        with self._changed:
            while True:
                if self._error is not None:
                    raise self._error
                if self._head >= self._parts_total:
                    return b""
                part = self._parts.get(self._head)
                if part is not None and part.chunks:
                    data = part.chunks.popleft()
                    if len(data) > amount:
                        part.chunks.appendleft(data[amount:])
                        data = data[:amount]
                    self._held -= len(data)
                    self.bytes_read += len(data)
                    if not part.chunks and part.received == part.length:
                        del self._parts[self._head]
                        self._head += 1
                        self._changed.notify_all()  # a place in the window: the next part may start
                    return data
                self._changed.wait()

    def facts(self) -> dict:
        """How the source was read, for the action's state."""
        return {
            "connections": self.connections,
            "part_size": self.part_size,
            "parts": self._parts_total,
            "resumes": self.resumes,
            "buffer_cap_bytes": self.buffer_cap,
            "buffer_peak_bytes": self.buffer_peak,
        }

    def abort(self) -> None:
        """Stop every thread's transfer (their blocked reads raise); read() raises from now on."""
        with self._changed:
            self._stopped = True
            if self._error is None:
                self._error = StepError(
                    f"Could not retrieve image. The download from '{self.what}' was stopped",
                    code=ErrorCode.SOURCE_INTERRUPTED,
                )
            self._changed.notify_all()
            bodies = [*self._open.values(), *([self._first] if self._first else [])]
        for body in bodies:
            try:
                body.abort()
            except Exception:  # already closed by its thread
                pass

    def close(self) -> None:
        self.abort()
        for thread in self._threads:
            thread.join(THREADS_STOP_SECONDS)
        with self._changed:
            first, self._first = self._first, None
        if first is not None:  # stopped before its thread took it
            first.close()

    # -- the fetching side ----------------------------------------------------------------

    def _work(self) -> None:
        try:
            while (part := self._take_part()) is not None:
                self._fetch(part)
        except BaseException as error:  # handed to read(), which raises it in the step
            with self._changed:
                if self._error is None:
                    self._error = error
                self._stopped = True
                self._changed.notify_all()

    def _take_part(self) -> _Part | None:
        """The next part, once it is within the window of the part being read; None at the end."""
        with self._changed:
            while not self._stopped and self._next < self._parts_total and self._next >= self._head + self.connections:
                self._changed.wait()
            if self._stopped or self._next >= self._parts_total:
                return None
            index, self._next = self._next, self._next + 1
            start = index * self.part_size
            part = _Part(index, start, min(self.part_size, self.size - start))
            self._parts[index] = part
            return part

    def _fetch(self, part: _Part) -> None:
        while part.received < part.length and not self._stopped:
            body = self._open_part(part)
            if body is None:
                return  # stopped meanwhile
            try:
                while part.received < part.length and not self._stopped:
                    data = body.read(min(CHUNK_SIZE, part.length - part.received))
                    if not data:
                        raise ConnectionError("the answer ended before the end of the range")
                    self._deliver(part, data)
            except Exception as error:
                if self._stopped:
                    return
                self._note_break(part, error)
            finally:
                with self._changed:
                    self._open.pop(part.index, None)
                body.close()

    def _open_part(self, part: _Part) -> RangeBody | None:
        """The body that goes on with `part`: the first answer for the first part, else a range
        request; an unreachable source is tried again like a broken connection."""
        with self._changed:
            body, self._first = (self._first, None) if part.index == 0 and part.breaks == 0 else (None, self._first)
        if body is None:
            while True:
                start, end = part.start + part.received, part.start + part.length - 1
                try:
                    body = self._open_range(start, end)
                    break
                except StepError as error:
                    if isinstance(error, RangeRefused) or error.code not in RETRYABLE_OPEN_ERRORS or self._stopped:
                        raise
                    self._note_break(part, error)
        with self._changed:
            if self._stopped:
                body.close()
                return None
            self._open[part.index] = body
        return body

    def _deliver(self, part: _Part, data: bytes) -> None:
        with self._changed:
            part.chunks.append(data)
            part.received += len(data)
            self._held += len(data)
            self.buffer_peak = max(self.buffer_peak, self._held)
            if part.index == self._head:
                self._changed.notify_all()

    def _note_break(self, part: _Part, error: BaseException) -> None:
        """Count a broken connection of `part`; past max_resumes, fail saying where it broke."""
        part.breaks += 1
        attempt = part.breaks
        if attempt > self.max_resumes:
            at = part.start + part.received
            raise StepError(
                f"Could not retrieve image. The connection to '{self.what}' for bytes {part.start} to "
                f"{part.start + part.length - 1} of {human_size(self.size)} broke {attempt} times, the last at "
                f"byte {at} ({reason_of(error)}); try again later",
                code=ErrorCode.SOURCE_INTERRUPTED,
                details={"part_start": part.start, "part_length": part.length, "broke_at": at, "size": self.size},
            ) from None
        with self._changed:
            self.resumes += 1
        log.info("part at byte %d of %s broke at %d: %r; resuming", part.start, self.what, part.received, error)
        with self._changed:
            # A source that just dropped us may need a moment; close() ends the wait early.
            self._changed.wait_for(lambda: self._stopped, timeout=min(0.25 * 2**attempt, 4))


def reason_of(error: BaseException) -> str:
    """What went wrong, without the "Could not retrieve image." that starts every source error."""
    return str(error).removeprefix("Could not retrieve image.").strip() or type(error).__name__
