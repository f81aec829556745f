"""What an import would find at its source, checked without importing (`?dry_run=true`): the
URL policy and the source's answer, its announced size and type, and from its first bytes the
compression and the disk format, each refused as the import itself would refuse it."""

from __future__ import annotations

import io
import time

from django.conf import settings

from imageactions.pipeline import (
    ErrorCode,
    ImageFormatError,
    StepError,
    TransferError,
    check_announced_size,
    detect_compression,
    error_code_of,
    normalise_declared_format,
    open_decompressed,
    sniff_format,
)

from .serializers import UPLOAD
from .sources import open_source, parse_location

# Enough for every format's header (and, compressed, for the header once decompressed).
HEAD_BYTES = 64 * 1024


def preview_import(input_data: dict) -> dict:
    if input_data.get("source") == UPLOAD:
        return {"source": {"kind": "upload", "note": "The bytes come with PUT .../data; they are checked then."}}
    deadline = time.monotonic() + settings.DRY_RUN_READ_SECONDS
    opened = open_source(parse_location(input_data["location"]))
    try:
        try:
            check_announced_size(opened.size, settings.IMAGE_MAX_SIZE)
            head = _read_up_to(opened.reader, HEAD_BYTES, deadline)
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
            raise StepError(str(error), code=error_code_of(error)) from None
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
    finally:
        opened.close()
    return {
        "source": {
            "kind": parse_location(input_data["location"]).kind,
            "size": opened.size,
            "content_type": opened.content_type,
            "compression": compression,
            "disk_format": disk_format,
        }
    }


def _read_up_to(reader, count: int, deadline: float) -> bytes:
    """Up to `count` bytes, or what came before the deadline: a dry run holds an API thread."""
    chunks, total = [], 0
    while total < count and time.monotonic() < deadline and (chunk := reader.read(min(16 * 1024, count - total))):
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


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
