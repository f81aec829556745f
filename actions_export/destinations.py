"""Where an export writes its bytes: an image store (the download link's or a named one), or an
http(s) URL that accepts a PUT. Every failure is a StepError the user can act on."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import BinaryIO

import requests
from django.conf import settings

from imageactions.pipeline import (
    CHUNK_SIZE,
    IMAGE_HASHES,
    ErrorCode,
    ImageStore,
    ParallelHasher,
    StepError,
    StoreError,
    UnresolvableHost,
    UrlPolicy,
    UrlRefused,
    error_code_of,
    pinned_session,
    translated_request_errors,
)

from .serializers import without_query

USER_AGENT = "ImageActions-export/1"
FAILED = "Could not upload the export."

Progress = Callable[[int, int | None], None]


class ExportedBytes:
    """The bytes being exported, read once from `source`: hashed and counted on the way.

    Readable as read(n) (image stores) and as an iterator of chunks (an HTTP PUT body).
    """

    def __init__(self, source: BinaryIO, size: int, algorithms: tuple[str, ...] = IMAGE_HASHES):
        self.source, self.size = source, size
        self.bytes_read = 0
        self.hasher = ParallelHasher(algorithms)

    def read(self, amount: int = -1) -> bytes:
        data = self.source.read(CHUNK_SIZE if amount is None or amount < 0 else amount)
        self.take(data)
        return data

    def take(self, data: bytes) -> None:
        """Count and hash bytes of the export that were read elsewhere (by a store, reading back
        the copy it is writing), as if read from `source`."""
        self.bytes_read += len(data)
        if self.bytes_read > self.size:
            raise StepError(
                f"The image's bytes are longer than its recorded size of {self.size} bytes; tell an operator",
                code=ErrorCode.CHECKSUM_MISMATCH,
                details={"size": self.size, "bytes_read": self.bytes_read},
            )
        if data:
            self.hasher.update(data)

    def chunks(self, progress: Progress | None = None) -> Iterator[bytes]:
        while chunk := self.read(CHUNK_SIZE):
            yield chunk
            if progress:
                progress(self.bytes_read, self.size)

    def read_to_end(self, progress: Progress | None = None) -> None:
        for _chunk in self.chunks(progress):
            pass

    def hexdigests(self) -> dict[str, str]:
        """The hashes of everything read, once the source was read to its end."""
        if self.bytes_read != self.size:
            raise StepError(
                f"Only {self.bytes_read} of the image's {self.size} bytes could be read; try again, "
                f"and tell an operator if it keeps failing",
                code=ErrorCode.IMAGE_DATA_MISSING,
                details={"size": self.size, "bytes_read": self.bytes_read},
            )
        return self.hasher.hexdigests()

    def close(self) -> None:
        self.hasher.close()
        self.source.close()


class SizedBody:
    """An HTTP request body of known length, sent as it is read (requests sets Content-Length
    from len(); without it, it would switch to chunked encoding, which presigned URLs refuse)."""

    def __init__(self, exported: ExportedBytes, progress: Progress | None):
        self.exported, self.progress = exported, progress

    def __len__(self) -> int:
        return self.exported.size

    def __iter__(self) -> Iterator[bytes]:
        return self.exported.chunks(self.progress)


# -- image stores ---------------------------------------------------------------------------


def write_to_store(store: ImageStore, key: str, exported: ExportedBytes, progress: Progress | None) -> None:
    try:
        store.put_stream(key, exported, size=exported.size, progress=progress)
    except StoreError as error:
        raise store_failed(error, store.name) from None


def store_failed(error: StoreError, store: str) -> StepError:
    """A store error on the way (the image's store or the destination's) as the export's failure."""
    return StepError(f"{FAILED} {error}", code=error_code_of(error), details={"store": store})


# -- http(s) PUT ------------------------------------------------------------------------------


def put_to_url(url: str, exported: ExportedBytes, progress: Progress | None) -> None:
    """PUT the bytes to `url`, connected to the address the URL policy checked; no redirects."""
    shown = without_query(url)
    policy = UrlPolicy.from_settings()
    try:
        host, port, address = policy.address_of(url)
    except UrlRefused as refusal:
        raise StepError(
            f"{FAILED} The url '{shown}' is not allowed: {refusal}",
            code=ErrorCode.URL_NOT_ALLOWED,
            details={"url": shown},
        ) from None
    except UnresolvableHost as error:
        raise StepError(f"{FAILED} {error}", code=ErrorCode.DESTINATION_UNREACHABLE, details={"url": shown}) from None
    with pinned_session(str(address)) as session:
        with translated_request_errors(
            FAILED, f"{host}:{port}", shown, upload=exported, code=ErrorCode.DESTINATION_UNREACHABLE
        ):
            response = session.put(
                url,
                data=SizedBody(exported, progress),
                allow_redirects=False,
                timeout=(settings.HTTP_CONNECT_TIMEOUT, settings.HTTP_READ_TIMEOUT),
                headers={"Content-Type": "application/octet-stream", "User-Agent": USER_AGENT},
            )
        with response:
            _check_answer(response, shown)


def _check_answer(response: requests.Response, shown: str) -> None:
    status = response.status_code
    if 200 <= status < 300:
        return
    answer = f"{status} {response.reason or ''}".strip()
    details = {"status": status, "url": shown}
    if 300 <= status < 400:
        raise StepError(
            f"The destination answered {answer} (a redirect) for '{shown}'; redirects are not followed "
            f"for uploads, so give the final URL",
            code=ErrorCode.DESTINATION_REFUSED,
            details=details,
        )
    if status in (404, 410):
        code = ErrorCode.DESTINATION_NOT_FOUND
    elif status >= 500:
        code = ErrorCode.DESTINATION_UNREACHABLE  # a fault on the destination's side: try again later
    else:
        code = ErrorCode.DESTINATION_REFUSED
    raise StepError(f"The destination refused the upload: {answer} from '{shown}'", code=code, details=details)
