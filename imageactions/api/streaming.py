"""Downloads of stored bytes: single byte ranges, ETags and the streamed file response.

One implementation for every download the API serves (an image's bytes, an export's result),
following RFC 9110 sections 13 (conditional requests) and 14 (range requests).
"""

import base64
import re

from django.http import FileResponse, HttpResponse, JsonResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import exceptions, status
from rest_framework.negotiation import BaseContentNegotiation

from ..metrics import SERVED, bytes_moved
from ..pipeline import StoredFile
from ..stores import ObjectNotFound, StoreError, get_store

DOWNLOAD_BLOCK_SIZE = 1024 * 1024  # bytes per read from the store while streaming a download


class StoreUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "store_unavailable"
    default_detail = "The image store could not be used; try again later."


class RangeNotSatisfiable(Exception):
    pass


_BYTE_RANGE = re.compile(r"\s*(\d*)\s*-\s*(\d*)\s*", re.ASCII)


def requested_byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """[start, end) of the single byte range asked for, or None to send the whole file.

    A header that is not one valid byte range (another unit, a syntax error, several ranges)
    is ignored, as RFC 9110 section 14.2 allows; RangeNotSatisfiable when the range starts
    past the end.
    """
    if not header:
        return None
    unit, _, specs = header.partition("=")
    if unit.strip().lower() != "bytes":
        return None
    parts = [part for part in specs.split(",") if part.strip()]
    match = _BYTE_RANGE.fullmatch(parts[0]) if len(parts) == 1 else None
    if not match or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if not first:  # "-N": the last N bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable()
        return max(0, size - suffix), size
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        raise RangeNotSatisfiable()
    return start, size if not last else min(int(last) + 1, size)


def etag_matches(header: str | None, etag: str) -> bool:
    """If-None-Match's weak comparison: any listed tag (or "*") names this representation."""
    if not header:
        return False
    tags = [tag.strip().removeprefix("W/") for tag in header.split(",")]
    return "*" in tags or etag in tags


class IgnoreAcceptHeader(BaseContentNegotiation):
    """Downloads answer whatever the client accepts (e.g. application/octet-stream); errors stay JSON."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None


def stored_file_response(request, stored: StoredFile, *, what: str) -> HttpResponse:
    """The download of `stored`: 200 whole, 206 one range, 304 unchanged, 416 past the end.

    `what` names the file in error messages, e.g. "image <id>" or "the export of action <id>".
    """
    etag = f'"{stored.md5}"'
    if etag_matches(request.headers.get("If-None-Match"), etag):
        return HttpResponse(status=status.HTTP_304_NOT_MODIFIED, headers={"ETag": etag})
    range_header = request.headers.get("Range")
    if_range = request.headers.get("If-Range")
    if if_range is not None and if_range.strip() != etag:
        range_header = None  # the client's copy is stale: it needs the whole file
    try:
        byte_range = requested_byte_range(range_header, stored.size)
    except RangeNotSatisfiable:
        noun = "image" if what.startswith("image") else "file"
        return JsonResponse(
            {
                "code": "range_not_satisfiable",
                "detail": f"The range {range_header!r} starts past the end of the {noun} ({stored.size} bytes).",
                "errors": {},
            },
            status=status.HTTP_416_REQUESTED_RANGE_NOT_SATISFIABLE,
            headers={"Content-Range": f"bytes */{stored.size}", "ETag": etag},
        )
    start, end = byte_range or (0, stored.size)
    response = FileResponse(
        _open_bytes(stored, start, None if byte_range is None else end, what=what),
        as_attachment=True,
        filename=stored.filename,
        content_type="application/octet-stream",
        status=status.HTTP_206_PARTIAL_CONTENT if byte_range else status.HTTP_200_OK,
    )
    if request.method == "GET":  # DRF answers HEAD with the GET handler; no byte goes out then
        bytes_moved(SERVED, end - start)
    response.block_size = DOWNLOAD_BLOCK_SIZE
    response["Content-Length"] = str(end - start)
    response["Accept-Ranges"] = "bytes"
    response["ETag"] = etag
    if byte_range:
        response["Content-Range"] = f"bytes {start}-{end - 1}/{stored.size}"
    else:
        # Glance's header: the MD5 of the body, so only for the whole file.
        response["Content-MD5"] = base64.b64encode(bytes.fromhex(stored.md5)).decode()
    return response


def _open_bytes(stored: StoredFile, start: int, end: int | None, *, what: str):
    # The whole file opens as the store's own file object, so a WSGI server can sendfile() it.
    try:
        return get_store(stored.store).open_read(stored.key, start=start, end=end)
    except ObjectNotFound as error:
        raise StoreUnavailable(
            f"The bytes of {what} are missing from image store '{stored.store}'; tell an operator."
        ) from error
    except StoreError as error:
        raise StoreUnavailable(f"{what[0].upper()}{what[1:]} could not be read: {error}. Try again later.") from error


def download_parameters(noun: str) -> list[OpenApiParameter]:
    """The schema of the request headers every download honours; `noun` is what is downloaded."""
    return [
        OpenApiParameter(
            "Range",
            str,
            OpenApiParameter.HEADER,
            required=False,
            description=f"One byte range: bytes=0-99, bytes=100- or bytes=-100; several ranges get the whole {noun}.",
        ),
        OpenApiParameter(
            "If-None-Match",
            str,
            OpenApiParameter.HEADER,
            required=False,
            description="The ETag from an earlier download; answered 304 when it still matches.",
        ),
        OpenApiParameter(
            "If-Range",
            str,
            OpenApiParameter.HEADER,
            required=False,
            description=f"Honour Range only when the {noun} still has this ETag.",
        ),
    ]


def download_responses(noun: str) -> dict:
    """The schema of a download's successful answers (200, 206, 304); callers add their errors."""
    return {
        (200, "application/octet-stream"): OpenApiResponse(OpenApiTypes.BINARY, description=f"The whole {noun}."),
        (206, "application/octet-stream"): OpenApiResponse(
            OpenApiTypes.BINARY, description="The requested byte range, described by the Content-Range header."
        ),
        304: OpenApiResponse(description=f"The {noun} has the ETag given in If-None-Match."),
    }


class DownloadExpired(exceptions.APIException):
    status_code = status.HTTP_410_GONE
    default_code = "gone"
    default_detail = "The file has expired."


def request_body_is_empty(request) -> bool:
    """Whether the request (Django's) came without a body: a Content-Length of 0, or neither a
    length nor a chunked body. A chunked body is asked for its first byte, which is then put
    back in front of the rest for whoever reads the body."""
    meta = request.META
    length = (meta.get("CONTENT_LENGTH") or "").strip()
    if length:
        return length == "0"
    chunked = "chunked" in meta.get("HTTP_TRANSFER_ENCODING", "").lower()
    if not (chunked and meta.get("wsgi.input_terminated") and "wsgi.input" in meta):
        return True
    first = meta["wsgi.input"].read(1)
    if not first:
        return True
    meta["wsgi.input"] = _ReadBack(first, meta["wsgi.input"])
    return False


class _ReadBack:
    """A stream with the bytes already read from it in front again."""

    def __init__(self, head: bytes, rest):
        self.head, self.rest = head, rest

    def read(self, size: int = -1) -> bytes:
        if not self.head:
            return self.rest.read(size)
        if size is None or size < 0:
            data, self.head = self.head + self.rest.read(), b""
            return data
        data, self.head = self.head[:size], self.head[size:]
        return data
