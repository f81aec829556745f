"""The filesystem image store: one file per image under a root directory (the embedded default)."""

import errno
import os
import secrets
import threading
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from django.conf import settings

from ..sparse import SparseWriter, data_extents
from .base import (
    COPIED_BY_KERNEL,
    ImageStore,
    InvalidKey,
    ObjectNotFound,
    ProgressCallback,
    ReaderAdapter,
    StoreError,
    check_config,
    empty_reader,
    validate_key,
)

COPY_CHUNK_SIZE = 1024 * 1024
# What the kernel copies between two progress reports (each one a chance to see a cancel).
KERNEL_COPY_SLICE = 64 * 1024 * 1024
# copy_file_range's and sendfile's answers when they cannot copy between these two files (other
# file systems, an old kernel, a file system without the operation): the next way is tried.
CANNOT_COPY_HERE = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EPERM}


class FilesystemStore(ImageStore):
    kind = "filesystem"

    def __init__(self, name: str, *, path: str | Path, region: str | None = None):
        super().__init__(name, region or name)
        self.root = Path(path)

    @classmethod
    def from_config(cls, name: str, config: dict) -> "FilesystemStore":
        check_config(name, config, required=["path"], optional=["region"])
        return cls(name, path=config["path"], region=config.get("region"))

    def operator_location(self, key: str = "") -> str:
        return str(self.root / key) if key else str(self.root)

    # -- writing: always a complete file renamed into place, so readers never see half an image

    def put_file(self, key: str, path: Path, *, size: int, progress: ProgressCallback | None = None) -> None:
        target = self._prepare_target(key)
        with self._translate_os_errors("store", key):
            found = os.stat(path).st_size
            if found != size:
                raise StoreError(
                    f"The staged file {path} has {found} bytes, {size} were expected; "
                    f"nothing was stored in image store '{self.name}'"
                )
            try:
                os.replace(path, target)
            except OSError as error:
                if error.errno != errno.EXDEV:
                    raise
                with open(path, "rb") as source:
                    self._write_atomically(key, target, source, size=size, progress=progress)
                return
            _fsync_directory(target.parent)
        if progress:
            progress(size, size)

    def put_stream(
        self, key: str, stream: BinaryIO, *, size: int | None, progress: ProgressCallback | None = None
    ) -> None:
        target = self._prepare_target(key)
        with self._translate_os_errors("store", key):
            self._write_atomically(key, target, stream, size=size, progress=progress)

    def server_side_copy(self, src_store: ImageStore, src_key: str, dst_key: str) -> bool:
        # Objects are never changed in place, so a hard link is a complete copy that costs nothing.
        if not isinstance(src_store, FilesystemStore):
            return False
        source = src_store._path_for(src_key)
        target = self._prepare_target(dst_key)
        partial = _partial_name(target)
        with self._translate_os_errors("copy", dst_key):
            try:
                os.link(source, partial)
            except FileNotFoundError:
                raise ObjectNotFound(f"Object '{src_key}' was not found in image store '{src_store.name}'") from None
            except OSError as error:
                if error.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                    return False
                raise
            os.replace(partial, target)
            _fsync_directory(target.parent)
        return True

    def copy_from(
        self,
        src_store: ImageStore,
        src_key: str,
        dst_key: str,
        *,
        size: int,
        progress: ProgressCallback | None = None,
        read_back: Callable[[bytes], None] | None = None,
    ) -> str | None:
        # Two local files: the kernel copies, so the copy costs what `cp` does, and the read-back
        # (hashing, mostly) runs on another CPU beside it instead of after it.
        if not isinstance(src_store, FilesystemStore):
            return None
        target = self._prepare_target(dst_key)
        with src_store._translate_os_errors("read", src_key):
            source = open(src_store._path_for(src_key), "rb")
        with source, self._translate_os_errors("store", dst_key), _replacing(target) as out:
            found = os.fstat(source.fileno()).st_size
            if found != size:
                raise StoreError(
                    f"The object '{src_key}' of image store '{src_store.name}' has {found} bytes, {size} were "
                    f"expected; nothing was stored in image store '{self.name}'"
                )
            with _ReadBack(out.name, read_back) as reader:
                _copy_by_kernel(
                    source.fileno(),
                    out.fileno(),
                    size,
                    progress,
                    reader.complete_up_to,
                    keep_holes=settings.SPARSE_IMAGES,
                )
                os.fsync(out.fileno())  # now, while the read-back catches up
        return COPIED_BY_KERNEL

    def _write_atomically(self, key: str, target: Path, source: BinaryIO, *, size: int | None, progress) -> None:
        done = 0
        with _replacing(target) as out:
            writer = SparseWriter(out, sparse=settings.SPARSE_IMAGES)
            while chunk := source.read(COPY_CHUNK_SIZE):
                writer.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, size)
            writer.finish()
            if size is not None and done != size:
                raise StoreError(
                    f"The data for '{key}' had {done} bytes where {size} were expected; "
                    f"nothing was stored in image store '{self.name}'"
                )

    # -- reading

    def open_read(self, key: str, *, start: int = 0, end: int | None = None) -> BinaryIO:
        path = self._path_for(key)
        with self._translate_os_errors("read", key):
            file = open(path, "rb")
        if start == 0 and end is None:
            return file
        if end is not None and end <= start:
            file.close()
            return empty_reader()
        file.seek(start)
        return ReaderAdapter(file.read, file.close, limit=None if end is None else end - start)

    def size(self, key: str) -> int:
        path = self._path_for(key)
        with self._translate_os_errors("read", key):
            return path.stat().st_size

    def delete(self, key: str) -> None:
        path = self._path_for(key)
        with self._translate_os_errors("delete", key):
            path.unlink(missing_ok=True)
        # Keys like exports/ACTION/FILE leave a directory per action: remove those left empty.
        for directory in path.parents:
            if directory == self.root or not directory.is_relative_to(self.root):
                break
            try:
                directory.rmdir()
            except OSError:  # not empty (or already gone): its other objects keep it
                break

    def local_path(self, key: str) -> Path:
        return self._path_for(key)

    # -- helpers

    def _path_for(self, key: str) -> Path:
        path = self.root / validate_key(key)
        # validate_key refuses "..", but a symlink inside the root could still point outside it.
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise InvalidKey(f"Invalid image store key {key!r}: it leads outside image store '{self.name}'")
        return path

    def _prepare_target(self, key: str) -> Path:
        target = self._path_for(key)
        with self._translate_os_errors("store", key):
            target.parent.mkdir(parents=True, exist_ok=True)
        return target

    @contextmanager
    def _translate_os_errors(self, action: str, key: str):
        try:
            yield
        except FileNotFoundError as error:
            if action in ("read", "copy"):
                raise ObjectNotFound(f"Object '{key}' was not found in image store '{self.name}'") from None
            raise self._error(action, key, error) from error
        except OSError as error:
            raise self._error(action, key, error) from error

    def _error(self, action: str, key: str, error: OSError) -> StoreError:
        reason = error.strerror or str(error)
        return StoreError(f"The image store '{self.name}' could not {action} '{key}' under {self.root}: {reason}")


def _partial_name(target: Path) -> Path:
    # Starts with "." so that no valid key can name it (see validate_key).
    return target.with_name(f".{target.name}.partial-{secrets.token_hex(6)}")


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; without it a crash can lose an image already reported stored.
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def _replacing(target: Path):
    """A new file that replaces `target` when the block ends without an error, synced to disk
    first; removed when the block fails."""
    partial = _partial_name(target)
    try:
        with open(partial, "xb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    _fsync_directory(target.parent)


def _copy_by_kernel(
    source: int,
    target: int,
    size: int,
    progress: ProgressCallback | None,
    complete_up_to: Callable[[int], None],
    *,
    keep_holes: bool,
) -> None:
    """Copy the first `size` bytes of the open file `source` into `target` without them passing
    through this process, in slices with a progress report after each, and `complete_up_to(n)`
    when the first n bytes of `target` are final. With `keep_holes`, holes stay holes.

    copy_file_range first (the file system may reflink or copy on its side), sendfile where it
    cannot (between two file systems), reads and writes as the last resort.
    """
    ways = [_copy_file_range, _sendfile, _read_and_write]
    for start, end in data_extents(source, 0, size) if keep_holes else [(0, size)]:
        position = start
        while position < end:
            try:
                copied = ways[0](source, target, position, min(KERNEL_COPY_SLICE, end - position))
            except OSError as error:
                if error.errno not in CANNOT_COPY_HERE or len(ways) == 1:
                    raise
                ways.pop(0)
                continue
            if not copied:
                raise StoreError(f"The source file ended at {position} bytes, {size} were expected")
            position += copied
            complete_up_to(position)
            if progress:
                progress(position, size)
    os.ftruncate(target, size)  # a hole at the end is not written by any copy
    complete_up_to(size)
    if progress:
        progress(size, size)


def _copy_file_range(source: int, target: int, position: int, count: int) -> int:
    return os.copy_file_range(source, target, count, position, position)


def _sendfile(source: int, target: int, position: int, count: int) -> int:
    os.lseek(target, position, os.SEEK_SET)  # sendfile writes where the target file's offset is
    return os.sendfile(target, source, position, count)


def _read_and_write(source: int, target: int, position: int, count: int) -> int:
    data = os.pread(source, min(count, COPY_CHUNK_SIZE), position)
    return os.pwrite(target, data, position) if data else 0


class _ReadBack:
    """Reads a file while it is being written, up to where it is complete, and hands its bytes in
    order to `consume`, on a thread of its own; does nothing when `consume` is None.

    Leaving the block waits until everything complete was read, or stops the reading when the
    block failed; an error of the reading is raised there.
    """

    def __init__(self, path: str, consume: Callable[[bytes], None] | None):
        self._path, self._consume = path, consume
        self._complete, self._ended, self._abandoned = 0, False, False
        self._error: BaseException | None = None
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="read-back", daemon=True)

    def complete_up_to(self, position: int) -> None:
        if self._error:  # the copy stops too: it would be thrown away
            raise self._error
        with self._changed:
            self._complete = position
            self._changed.notify()

    def __enter__(self) -> "_ReadBack":
        if self._consume:
            self._thread.start()
        return self

    def __exit__(self, error_type, error, traceback) -> None:
        if not self._consume:
            return
        with self._changed:
            self._ended, self._abandoned = True, error_type is not None
            self._changed.notify()
        self._thread.join()
        if self._error and not error_type:
            raise self._error

    def _run(self) -> None:
        position = 0
        try:
            with open(self._path, "rb") as file:
                while True:
                    with self._changed:
                        self._changed.wait_for(lambda read=position: self._complete > read or self._ended)
                        if self._abandoned or (self._ended and position >= self._complete):
                            return
                        complete = self._complete
                    while position < complete:
                        chunk = os.pread(file.fileno(), min(COPY_CHUNK_SIZE, complete - position), position)
                        if not chunk:
                            raise StoreError(f"The copy ended at {position} bytes while {complete} were written")
                        self._consume(chunk)
                        position += len(chunk)
        except BaseException as error:  # raised in the copying thread, by __exit__
            self._error = error
