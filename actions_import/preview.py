"""What an import would find at its source, checked without importing (`?dry_run=true`): the
URL policy and the source's answer, its announced size and type, and from its first bytes the
compression and the disk format, each refused as the import itself would refuse it."""

from __future__ import annotations

import io
import threading

from django.conf import settings

from imageactions.pipeline import (
    ErrorCode,
    ImageFormatError,
    SizeLimitExceeded,
    StepError,
    TransferError,
    check_announced_size,
    detect_compression,
    normalise_declared_format,
    open_decompressed,
    sniff_format,
    step_error_of,
)

from .serializers import UPLOAD
from .sources import Location, OpenedSource, open_source, parse_location
from .steps import receivable_bytes, too_large

# Enough for every format's header (and, compressed, for the header once decompressed).
HEAD_BYTES = 64 * 1024
# The import's words for a source without bytes (its verify step), so both say the same.
EMPTY = "The image is empty (0 bytes); check the source and try again"


def preview_import(input_data: dict, owner: str) -> dict:
    if input_data.get("source") == UPLOAD:
        return {"source": {"kind": "upload", "note": "The bytes come with PUT .../data; they are checked then."}}
    location = parse_location(input_data["location"])
    limit, quota = receivable_bytes(owner)
    try:
        opened, head = SourceHead(location, limit).read(settings.DRY_RUN_READ_SECONDS)
    except SizeLimitExceeded as error:  # the announced size: over the cap, or over the project's quota
        raise too_large(owner, quota, error) from None
    try:
        if not head:
            raise StepError(EMPTY, code=ErrorCode.EMPTY_IMAGE)
        compression = detect_compression(head)
        image_head = head
        if compression:
            if not settings.DECOMPRESS_IMPORTS:
                raise StepError(
                    f"The image is {compression}-compressed, and this service does not decompress images",
                    code=ErrorCode.NOT_A_DISK_IMAGE,
                )
            image_head = _decompressed_head(head, compression)
        disk_format = sniff_format(image_head)
        declared = normalise_declared_format(input_data.get("image_properties", {}).get("disk_format"))
    except (TransferError, ImageFormatError) as error:
        raise step_error_of(error) from None
    if declared == "vpc" and disk_format == "raw":
        # A fixed VHD keeps its only footer at the end, which the first bytes do not show.
        disk_format = None
    elif declared and declared != disk_format:
        raise StepError(
            f"The image was declared as {declared} but its first bytes are {disk_format}; "
            "declare the format the image really has",
            code=ErrorCode.FORMAT_MISMATCH,
            details={"declared": declared, "detected": disk_format},
        )
    return {
        "source": {
            "kind": location.kind,
            "size": opened.size,
            "content_type": opened.content_type,
            "compression": compression,
            "disk_format": disk_format,
        }
    }


class SourceHead:
    """Opens the source and reads its first HEAD_BYTES on a thread of its own, so that the API
    thread answering the dry run waits for them at most DRY_RUN_READ_SECONDS, whatever the
    source does: a connect that hangs, headers that never come, a body that stalls or drips.
    Past that time the read is aborted and the thread ends (within the HTTP timeouts at worst).
    """

    def __init__(self, location: Location, limit: int):
        self.location, self.limit = location, limit
        self.opened: OpenedSource | None = None
        self.received = 0
        self.error: BaseException | None = None
        self._chunks: list[bytes] = []
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._abandoned = False

    def read(self, seconds: float) -> tuple[OpenedSource, bytes]:
        """The opened source and its first bytes (fewer when it has fewer); the StepError the
        import would fail with; or `timed_out` when they did not all come within `seconds`."""
        threading.Thread(target=self._run, name="dry-run-source", daemon=True).start()
        if not self._done.wait(seconds):
            self._abandon()
            raise StepError(
                f"The source did not answer the dry run with its first {HEAD_BYTES // 1024} KiB within "
                f"{seconds:g} s; the import itself waits longer: check that the source is reachable and "
                "serving, or create the import without a dry run",
                code=ErrorCode.TIMED_OUT,
                details={"seconds": seconds, "bytes_wanted": HEAD_BYTES},
            )
        if self.error is not None:
            if isinstance(self.error, TransferError) and not isinstance(self.error, SizeLimitExceeded):
                raise step_error_of(self.error) from None
            raise self.error
        return self.opened, b"".join(self._chunks)

    def _run(self) -> None:
        try:
            opened = open_source(self.location)
            with self._lock:
                self.opened, abandoned = opened, self._abandoned
            try:
                if not abandoned:
                    check_announced_size(opened.size, self.limit)
                    while self.received < HEAD_BYTES and (chunk := opened.reader.read(HEAD_BYTES - self.received)):
                        self._chunks.append(chunk)
                        self.received += len(chunk)
            finally:
                opened.close()
        except BaseException as error:  # handed to the API thread, which raises it
            self.error = error
        finally:
            self._done.set()

    def _abandon(self) -> None:
        with self._lock:
            self._abandoned, opened = True, self.opened
        if opened is not None:
            try:
                opened.abort()
            except Exception:  # the connection is being closed by the reading thread already
                pass


def _decompressed_head(head: bytes, compression: str) -> bytes:
    """The first decompressed bytes of a compressed head (a truncated stream: what came out before its end)."""
    reader = open_decompressed(
        io.BytesIO(head),
        compression,
        max_output=settings.DECOMPRESS_MAX_OUTPUT,
        max_ratio=settings.DECOMPRESS_MAX_RATIO,
    )
    out = []
    try:
        while sum(map(len, out)) < HEAD_BYTES and (chunk := reader.read(HEAD_BYTES)):
            out.append(chunk)
    except ImageFormatError:
        if not out:
            raise
    return b"".join(out)
