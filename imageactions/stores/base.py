"""The interface every image store implements, its errors, and helpers shared by the stores."""

import io
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

from django.core.exceptions import ImproperlyConfigured

# Called as progress(bytes_done, bytes_total_or_None), always from the caller's thread, so a
# step can pass its ctx.progress straight through.
ProgressCallback = Callable[[int, int | None], None]


# How copy_from() copied: inside the object store's service, or by the kernel between two local
# files (copy_file_range, which may reflink).
COPIED_SERVER_SIDE, COPIED_BY_KERNEL = "server-side", "kernel"


class StoreError(Exception):
    """An image store could not do what was asked; the text is written for the user."""


class StoreUnavailable(StoreError):
    """The store could not be reached (refused, dropped or timed-out connection): worth retrying."""


class ObjectNotFound(StoreError):
    """The key names no object in the store."""


class InvalidKey(StoreError, ValueError):
    """The key is not a plain relative path inside the store."""


class ImageStore(ABC):
    """Where image bytes live: whole objects under relative keys such as "images/<uuid>".

    Objects are written once and never changed in place; a reader never sees half an object.
    """

    kind: str  # "filesystem" | "s3"

    def __init__(self, name: str, region: str):
        self.name = name
        self.region = region

    @abstractmethod
    def put_file(self, key: str, path: Path, *, size: int, progress: ProgressCallback | None = None) -> None:
        """Store the local file `path` as `key`.

        The file may be moved into the store (a rename where it is on the store's filesystem),
        so `path` may be gone afterwards; the caller removes it if it is still there.
        """

    @abstractmethod
    def put_stream(
        self, key: str, stream: BinaryIO, *, size: int | None, progress: ProgressCallback | None = None
    ) -> None:
        """Store everything read from `stream` as `key`; `size` is checked when it is given."""

    @abstractmethod
    def open_read(self, key: str, *, start: int = 0, end: int | None = None) -> BinaryIO:
        """A reader of bytes [start, end) of `key` (to its end when `end` is None).

        A range that starts at or past the end of the object reads as empty.
        """

    @abstractmethod
    def size(self, key: str) -> int:
        """The object's size in bytes; ObjectNotFound when there is none."""

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except ObjectNotFound:
            return False
        return True

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove `key`; removing a missing key is not an error."""

    def local_path(self, key: str) -> Path | None:
        """The file that holds `key` when the store is a local filesystem, else None."""
        return None

    def server_side_copy(self, src_store: "ImageStore", src_key: str, dst_key: str) -> bool:
        """Copy `src_key` of `src_store` to `dst_key` here without streaming the bytes through
        this process; False when the two stores cannot do that, and the caller streams instead.

        The copy may share its bytes with the source (a filesystem store's is a hard link).
        """
        return False

    def copy_from(
        self,
        src_store: "ImageStore",
        src_key: str,
        dst_key: str,
        *,
        size: int,
        progress: ProgressCallback | None = None,
        read_back: Callable[[bytes], None] | None = None,
    ) -> str | None:
        """Copy `src_key` (`size` bytes) of `src_store` to `dst_key` here as an object of its own,
        without the bytes passing through this process; returns how (COPIED_SERVER_SIDE or
        COPIED_BY_KERNEL), or None when the two stores cannot, and the caller streams instead.

        Unlike server_side_copy(), the copy shares no storage with the source, except as a
        copy-on-write clone of the file system (a reflink), which the first write would undo.

        `read_back`, where the store can, is given the copy's bytes in order, read back from the
        written copy while the copy goes on (from another thread), so that verifying the copy
        costs no pass of its own; where it was given fewer than `size` bytes (an S3 store gives
        none), the caller reads the copy back itself.
        """
        return None

    def location(self, key: str) -> str:
        """How users are told where an object is: store://NAME/KEY (S3 stores: s3://BUCKET/KEY)."""
        return f"store://{self.name}/{key}"

    def operator_location(self, key: str = "") -> str:
        """Where the store (or one object in it) really lives, for operators; never credentials."""
        return self.location(key)

    def describe(self) -> dict:
        """What the API may show about the store; never credentials or endpoints."""
        return {"name": self.name, "region": self.region, "kind": self.kind}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def validate_key(key: str) -> str:
    """`key` if it is a plain relative path; otherwise InvalidKey.

    ".." would climb out of the store, and the filesystem store keeps its partial writes under
    names that start with ".", so every component that starts with "." is refused.
    """
    if not isinstance(key, str) or not key or "\0" in key or key.startswith("/") or key.endswith("/"):
        raise InvalidKey(f"Invalid image store key {key!r}: it must be a relative path such as 'images/<id>'")
    for part in key.split("/"):
        if not part:
            raise InvalidKey(f"Invalid image store key {key!r}: empty path component")
        if part.startswith("."):
            raise InvalidKey(f"Invalid image store key {key!r}: no component may start with '.'")
    return key


def check_config(name: str, config: dict, *, required: Iterable[str], optional: Iterable[str]) -> None:
    """ImproperlyConfigured naming the store and the key when IMAGE_STORES[name] is incomplete or has a typo."""
    required, optional = set(required), set(optional)
    for key in sorted(required):
        if config.get(key) in (None, ""):
            raise ImproperlyConfigured(f"IMAGE_STORES[{name!r}] is missing {key!r}")
    unknown = sorted(set(config) - required - optional - {"type"})
    if unknown:
        known = ", ".join(sorted(required | optional | {"type"}))
        raise ImproperlyConfigured(f"IMAGE_STORES[{name!r}] has unknown key {unknown[0]!r} (known keys: {known})")


class ReaderAdapter(io.RawIOBase):
    """A read-only file object over `read_some(n) -> bytes`, at most `limit` bytes when given.

    Stores return these from open_read(), so callers get read(n)/readinto()/close() and
    `with` whatever the bytes come from; close() runs `on_close`.
    """

    def __init__(self, read_some: Callable[[int], bytes], on_close: Callable[[], None], limit: int | None = None):
        super().__init__()
        self._read_some = read_some
        self._on_close = on_close
        self._remaining = limit

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        if self._remaining is not None:
            size = min(size, self._remaining)
        if size == 0:
            return b""
        data = self._read_some(size)
        if self._remaining is not None:
            self._remaining -= len(data)
        return data

    def readall(self) -> bytes:
        pieces = []
        while piece := self.read(1024 * 1024):
            pieces.append(piece)
        return b"".join(pieces)

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            try:
                self._on_close()
            finally:
                super().close()


def empty_reader() -> BinaryIO:
    return io.BytesIO(b"")
