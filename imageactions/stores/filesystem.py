"""The filesystem image store: one file per image under a root directory (the embedded default)."""

import errno
import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from django.conf import settings

from ..sparse import SparseWriter
from .base import (
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

    def _write_atomically(self, key: str, target: Path, source: BinaryIO, *, size: int | None, progress) -> None:
        partial = _partial_name(target)
        done = 0
        try:
            with open(partial, "xb") as out:
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
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        _fsync_directory(target.parent)

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
