"""Where an import reads its bytes: http(s) URLs, s3:// and swift:// objects.

`open_source(location)` answers an open reader with the size the source announces; every
failure is a StepError whose text starts "Could not retrieve image." and says what to fix.
With `parallel=True` a large source that serves ranges is read over several connections
(actions_import/ranged.py), each connection checked as the first one was.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import unquote, urljoin, urlsplit

import requests
import urllib3
from django.conf import settings

from imageactions.pipeline import (
    ErrorCode,
    StepError,
    SwiftError,
    SwiftObjectChanged,
    UnresolvableHost,
    UrlPolicy,
    UrlRefused,
    build_s3_client,
    client_for_host,
    error_code_of,
    human_size,
    pinned_session,
    translated_request_errors,
    whole_number,
)

from .ranged import ParallelRangeReader, RangeBody, RangeOpener, RangeRefused, reason_of

log = logging.getLogger(__name__)

FAILED = "Could not retrieve image."
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
USER_AGENT = "ImageActions-import/1"


# -- locations ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Location:
    """A parsed import location: `kind` is http, s3 or swift; the other fields as they apply."""

    url: str
    kind: str
    bucket: str = ""  # s3
    key: str = ""  # s3
    host: str = ""  # swift: "host:port" as SWIFT_CREDENTIALS names it
    account: str = ""  # swift
    container: str = ""  # swift
    object: str = ""  # swift


def parse_location(url: str) -> Location:
    """The Location of `url`; ValueError with a message for the user when it is not one."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        return Location(url, "http")
    if scheme == "s3":
        key = unquote(parts.path.lstrip("/"))
        if not parts.netloc or not key:
            raise ValueError(f"An s3 location is s3://BUCKET/KEY; got '{url}'")
        return Location(url, "s3", bucket=parts.netloc, key=key)
    if scheme == "swift":
        segments = parts.path.lstrip("/").split("/", 2)
        if not parts.netloc or len(segments) < 3 or not all(segments):
            raise ValueError(f"A swift location is swift://HOST[:PORT]/ACCOUNT/CONTAINER/OBJECT; got '{url}'")
        account, container, obj = (unquote(s) for s in segments)
        return Location(url, "swift", host=parts.netloc, account=account, container=container, object=obj)
    raise ValueError(f"Only http, https, s3 and swift locations are accepted; got '{scheme or url}'")


@dataclass
class OpenedSource:
    reader: BinaryIO  # read(n) -> bytes; raises StepError with the user's message
    size: int | None  # what the source announced, if it did
    close: Callable[[], None]
    content_type: str | None = None  # what the source says the bytes are, if it does

    def abort(self) -> None:
        """Stop a read blocked in another thread (a dry run past its time): it raises there."""
        self.reader.abort()

    def facts(self) -> dict:
        """How the bytes are read: the connections, and for a parallel read its parts and buffer."""
        facts = getattr(self.reader, "facts", None)
        return facts() if facts else {"connections": 1}


def open_source(location: Location, *, parallel: bool = False) -> OpenedSource:
    """The source's bytes; `parallel`: over several connections when it is large and serves ranges."""
    if location.kind == "http":
        return open_http(location.url, UrlPolicy.from_settings(), parallel=parallel)
    if location.kind == "s3":
        return open_s3(location, parallel=parallel)
    return open_swift(location, parallel=parallel)


def reads_in_parallel(size: int | None, ranges: bool) -> bool:
    """Whether a source that announced `size` (and, `ranges`, serves ranges that can be checked
    for its version) is large enough to be read over several connections."""
    return (
        ranges
        and size is not None
        and settings.FETCH_CONNECTIONS > 1
        and size >= max(settings.FETCH_PARALLEL_THRESHOLD, 2 * settings.FETCH_PART_SIZE)
    )


def parallel_reader(what: str, size: int, first: RangeBody, open_range: RangeOpener) -> ParallelRangeReader:
    return ParallelRangeReader(
        what=what,
        size=size,
        first=first,
        open_range=open_range,
        connections=settings.FETCH_CONNECTIONS,
        part_size=settings.FETCH_PART_SIZE,
        max_resumes=settings.HTTP_MAX_RESUMES,
    )


def changed_during_download(what: str, how: str) -> RangeRefused:
    return RangeRefused(
        f"{FAILED} The image at '{what}' changed while it was downloaded ({how}); try again once it no longer changes",
        code=ErrorCode.SOURCE_INTERRUPTED,
        details={"url": what},
    )


def unexpected_range(what: str, got: str, expected: str) -> RangeRefused:
    return RangeRefused(
        f"{FAILED} '{what}' answered a request for the range '{expected}' with the range '{got}'",
        code=ErrorCode.SOURCE_REFUSED,
        details={"url": what, "expected": expected, "got": got},
    )


def _content_range(start: int, end: int, size: int) -> str:
    return f"bytes {start}-{end}/{size}"


def _same_range(header: str | None, expected: str) -> bool:
    return (header or "").replace(" ", "") == expected.replace(" ", "")


class GuardedReader:
    """A source's body as read(n), turning a stall or a dropped connection into a StepError."""

    def __init__(
        self,
        *,
        read: Callable[[int], bytes],
        what: str,
        size: int | None,
        stall_seconds: float,
        raw: urllib3.BaseHTTPResponse | None = None,
    ):
        self._read = read
        self.what, self.size, self.stall_seconds = what, size, stall_seconds
        self.bytes_read = 0
        self._raw = raw  # the connection's response, which abort() shuts down

    def abort(self) -> None:
        if self._raw is not None:
            self._raw.shutdown()

    def read(self, amount: int = -1) -> bytes:
        try:
            data = self._read(amount)
        except Exception as error:
            raise self._error(error) from error
        self.bytes_read += len(data)
        return data

    def _error(self, error: Exception) -> StepError:
        details = {"bytes_received": self.bytes_read, "size_announced": self.size}
        if _is_timeout(error):
            return StepError(
                f"{FAILED} The download from '{self.what}' stalled for {self.stall_seconds:g} s "
                f"after {human_size(self.bytes_read)}",
                code=ErrorCode.SOURCE_INTERRUPTED,
                details=details,
            )
        announced = f" of the {self.size} announced" if self.size is not None else ""
        return StepError(
            f"{FAILED} The connection to '{self.what}' broke after {self.bytes_read} bytes{announced}; "
            f"try again, or check that the source serves the whole image",
            code=ErrorCode.SOURCE_INTERRUPTED,
            details=details,
        )


def _is_timeout(error: BaseException | None) -> bool:
    from botocore.exceptions import ReadTimeoutError as BotoReadTimeout

    timeouts = (socket.timeout, TimeoutError, urllib3.exceptions.TimeoutError, requests.Timeout, BotoReadTimeout)
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, timeouts) or "timed out" in str(error).lower():
            return True
        error = error.__cause__ or error.__context__
    return False


# -- http and https ------------------------------------------------------------------------


def open_http(url: str, policy: UrlPolicy, *, parallel: bool = False) -> OpenedSource:
    """GET `url`, following up to HTTP_MAX_REDIRECTS redirects, each hop checked by `policy`."""
    response, current = _follow(url, policy)
    if response.status_code != 200:
        response.close()
        raise _status_error(response.status_code, current)
    return _http_source(response, current, policy, parallel=parallel)


def _status_error(status: int, url: str) -> StepError:
    return StepError(
        f"{FAILED} Received {status} response for url '{url}'",
        code=_http_error_code(status),
        details={"status": status, "url": url},
    )


def _follow(
    url: str, policy: UrlPolicy, *, headers: dict | None = None, sessions: dict | None = None
) -> tuple[requests.Response, str]:
    """The first answer to a GET of `url` that is not a redirect, and the URL that gave it."""
    current = url
    for _hop in range(settings.HTTP_MAX_REDIRECTS + 1):
        response = _get_pinned(current, url, policy, headers=headers, sessions=sessions)
        if response.status_code in REDIRECT_STATUSES and response.headers.get("Location"):
            response.close()
            current = urljoin(current, response.headers["Location"])
            continue
        return response, current
    raise StepError(
        f"{FAILED} '{url}' redirected more than {settings.HTTP_MAX_REDIRECTS} times; give the final URL of the image",
        code=ErrorCode.SOURCE_REFUSED,
        details={"redirects": settings.HTTP_MAX_REDIRECTS},
    )


def _http_error_code(status: int) -> str:
    """Missing (404, 410), a fault on the server's side that may pass (5xx), or refused."""
    if status in (404, 410):
        return ErrorCode.SOURCE_NOT_FOUND
    return ErrorCode.SOURCE_UNREACHABLE if status >= 500 else ErrorCode.SOURCE_REFUSED


def _http_source(response: requests.Response, url: str, policy: UrlPolicy, *, parallel: bool) -> OpenedSource:
    length = response.headers.get("Content-Length")
    size = whole_number(length or "", max_digits=20)
    content_type = response.headers.get("Content-Type")
    validator = _range_validator(response)
    if parallel and reads_in_parallel(size, validator is not None):
        ranges = HttpRanges(url, policy, validator=validator, size=size)
        if ranges.served():
            reader = parallel_reader(url, size, _http_body(response), ranges.open)

            def close():
                reader.close()
                ranges.close()

            return OpenedSource(reader, size, close, content_type)
        ranges.close()
    body = ResumableHttpBody(response, url, size=size, policy=policy)
    return OpenedSource(body, size, body.close, content_type)


def _http_body(response: requests.Response) -> RangeBody:
    return RangeBody(
        read=lambda amount: response.raw.read(amount, decode_content=False),
        close=response.close,
        abort=response.raw.shutdown,
    )


class RangesIgnored(RangeRefused):
    """A range request of the same version of the image was answered with all of it."""


class HttpRanges:
    """Opens ranges of the image at `url` (the URL the redirects led to) for the threads of a
    parallel read: each request is checked by the URL policy and pinned to the address checked,
    each of its redirects too; `If-Range` makes a changed image answer 200 instead of a range.
    Each thread keeps its connections (one session per address) from part to part."""

    def __init__(self, url: str, policy: UrlPolicy, *, validator: str, size: int):
        self.url, self.policy, self.validator, self.size = url, policy, validator, size
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()

    def open(self, start: int, end: int) -> RangeBody:
        headers = {"Range": f"bytes={start}-{end}", "If-Range": self.validator}
        response, current = _follow(self.url, self.policy, headers=headers, sessions=self._thread_sessions())
        expected = _content_range(start, end, self.size)
        status, got = response.status_code, response.headers.get("Content-Range", "")
        if status == 206 and self._same_version(response) and _same_range(got, expected):
            return _http_body(response)
        response.close()
        if status == 200 and self._same_version(response):
            raise RangesIgnored(f"{FAILED} '{current}' answered a range request with the whole image")
        if status in (200, 412, 416) or (status == 206 and not self._same_version(response)):
            raise changed_during_download(self.url, f"the request for bytes {start} to {end} was answered {status}")
        if status == 206:
            raise unexpected_range(current, got, expected)
        raise _status_error(status, current)

    def served(self) -> bool:
        """Whether the server answers range requests with ranges (one is asked, for the last
        byte): some announce ranges and send the whole image instead, which one stream reads."""
        try:
            self.open(self.size - 1, self.size - 1).close()
        except RangesIgnored:
            log.info("%s announces ranges but does not serve them: one stream", self.url)
            return False
        return True

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()

    def _same_version(self, response: requests.Response) -> bool:
        """A range of the version the first answer had: a server that ignores If-Range may still
        name another version in its validators."""
        etag, modified = response.headers.get("ETag"), response.headers.get("Last-Modified")
        if self.validator.endswith('"'):
            return etag is None or etag == self.validator
        return modified is None or modified == self.validator

    def _thread_sessions(self) -> dict:
        sessions = getattr(self._local, "sessions", None)
        if sessions is None:
            sessions = self._local.sessions = _SessionsByAddress(self._sessions, self._lock)
        return sessions


class _SessionsByAddress(dict):
    """One thread's pinned sessions, by address; each is also noted in `every` for closing."""

    def __init__(self, every: list, lock: threading.Lock):
        super().__init__()
        self._every, self._lock = every, lock

    def __missing__(self, address: str) -> requests.Session:
        session = self[address] = pinned_session(address)
        with self._lock:
            self._every.append(session)
        return session


class ResumableHttpBody(GuardedReader):
    """An http(s) body as read(n) that continues with `Range: bytes=N-` when the connection
    closes mid-body: the resumed bytes go on into the same hashes and staging file, so the
    transfer stays one pass.

    Resuming needs what the first answer announced: `Accept-Ranges: bytes`, a Content-Length and
    a validator (a strong ETag, else Last-Modified) sent as `If-Range`, so an image that changed
    on the server answers 200 instead of splicing two versions together.
    """

    def __init__(self, response: requests.Response, url: str, *, size: int | None, policy: UrlPolicy):
        super().__init__(read=self._read_current, what=url, size=size, stall_seconds=settings.HTTP_READ_TIMEOUT)
        self.url, self.policy = url, policy
        self.resumes = 0
        self._response = response
        self._validator = _range_validator(response)

    def read(self, amount: int = -1) -> bytes:
        while True:
            try:
                data = self._read_current(amount if amount >= 0 else None)
            except Exception as error:
                if _is_timeout(error):
                    raise self._error(error) from error
                log.info("connection to %s closed after %d bytes: %r", self.url, self.bytes_read, error)
                self._resume()
                continue
            if not data and amount != 0 and self.size is not None and self.bytes_read < self.size:
                self._resume()  # the body ended short without the client library noticing
                continue
            self.bytes_read += len(data)
            return data

    def close(self) -> None:
        self._response.close()

    def abort(self) -> None:
        self.resumes = settings.HTTP_MAX_RESUMES  # an aborted read is not resumed
        self._response.raw.shutdown()

    def _read_current(self, amount: int | None) -> bytes:
        return self._response.raw.read(amount, decode_content=False)

    def _resume(self) -> None:
        self._response.close()
        if self._validator is None or self.size is None:
            raise self._interrupted("and the server does not support resuming" + RESUME_ADVICE)
        if self.resumes >= settings.HTTP_MAX_RESUMES:
            raise self._interrupted(f"and it closed again after {self.resumes} resumed downloads; try again later")
        self.resumes += 1
        time.sleep(min(0.25 * 2**self.resumes, 4))  # a server that just dropped us may need a moment
        start = self.bytes_read
        try:
            response = _get_pinned(
                self.url,
                self.url,
                self.policy,
                headers={
                    "Range": f"bytes={start}-",
                    "If-Range": self._validator,
                },
            )
        except StepError as error:
            if error.code != ErrorCode.SOURCE_UNREACHABLE:
                raise
            # Bytes came, then stopped: the source was reached, so it is the transfer that broke.
            raise self._interrupted(f"and reconnecting to resume failed: {reason_of(error)}") from None
        if response.status_code == 200:
            response.close()
            raise self._interrupted(
                f"and the server does not support resuming (it answered 200 to 'Range: bytes={start}-'; "
                "the image may have changed on the server)" + RESUME_ADVICE
            )
        if response.status_code != 206:
            response.close()
            raise self._interrupted(f"and resuming it failed: received {response.status_code} response")
        expected = f"bytes {start}-{self.size - 1}/{self.size}"
        if response.headers.get("Content-Range", "").replace(" ", "") != expected.replace(" ", ""):
            response.close()
            raise self._interrupted(
                f"and the server answered the resume request with the range "
                f"'{response.headers.get('Content-Range', '')}' instead of '{expected}'"
            )
        log.info("resumed %s at byte %d (resume %d)", self.url, start, self.resumes)
        self._response = response

    def _interrupted(self, then: str) -> StepError:
        return StepError(
            self._closed(then),
            code=ErrorCode.SOURCE_INTERRUPTED,
            details={"bytes_received": self.bytes_read, "size_announced": self.size, "resumes": self.resumes},
        )

    def _closed(self, then: str) -> str:
        of = f" of {human_size(self.size)}" if self.size is not None else ""
        return f"{FAILED} The connection to '{self.url}' closed after {human_size(self.bytes_read)}{of}, {then}"


RESUME_ADVICE = "; try again, or serve the image from a server that supports Range requests"


def _range_validator(response: requests.Response) -> str | None:
    """What If-Range can send to resume this body; None when the server did not offer ranges."""
    ranges = {unit.strip().lower() for unit in response.headers.get("Accept-Ranges", "").split(",")}
    if "bytes" not in ranges:
        return None
    etag = response.headers.get("ETag", "")
    if etag and not etag.startswith("W/"):  # If-Range takes strong validators only (RFC 9110 13.1.5)
        return etag
    return response.headers.get("Last-Modified") or None


def _get_pinned(
    url: str, original: str, policy: UrlPolicy, *, headers: dict | None = None, sessions: dict | None = None
) -> requests.Response:
    """GET one hop, connected to the address the policy checked (DNS is asked only once);
    `sessions` (address -> session) keeps connections for the next request to that address."""
    try:
        host, port, address = policy.address_of(url)
    except UrlRefused as refusal:
        details = {"url": url}
        if url == original:
            raise StepError(
                f"{FAILED} The url '{url}' is not allowed: {refusal}", code=ErrorCode.URL_NOT_ALLOWED, details=details
            ) from None
        raise StepError(
            f"{FAILED} '{original}' redirected to '{url}', which is not allowed: {refusal}",
            code=ErrorCode.URL_NOT_ALLOWED,
            details=details,
        ) from None
    except UnresolvableHost as error:
        raise StepError(f"{FAILED} {error}", code=ErrorCode.SOURCE_UNREACHABLE, details={"url": url}) from None
    session = pinned_session(str(address)) if sessions is None else sessions[str(address)]
    with translated_request_errors(FAILED, f"{host}:{port}", url):
        return session.get(
            url,
            stream=True,
            allow_redirects=False,
            timeout=(settings.HTTP_CONNECT_TIMEOUT, settings.HTTP_READ_TIMEOUT),
            headers={"Accept-Encoding": "identity", "User-Agent": USER_AGENT, **(headers or {})},
        )


# -- s3:// ---------------------------------------------------------------------------------


def open_s3(location: Location, *, parallel: bool = False) -> OpenedSource:
    client = s3_source_client()
    name = f"s3://{location.bucket}/{location.key}"
    obj = _get_s3_object(client, location, name)
    body, size, etag = obj["Body"], obj.get("ContentLength"), obj.get("ETag")
    # GetObject takes a Range in every S3 (Swift's s3api does not say Accept-Ranges); an answer
    # that is not the range asked for fails on its Content-Range.
    if parallel and reads_in_parallel(size, bool(etag)):

        def open_range(start: int, end: int) -> RangeBody:
            part = _get_s3_object(client, location, name, Range=f"bytes={start}-{end}", IfMatch=etag)
            expected = _content_range(start, end, size)
            if not _same_range(part.get("ContentRange"), expected):
                part["Body"].close()
                raise unexpected_range(name, part.get("ContentRange", ""), expected)
            return _s3_body(part["Body"])

        reader = parallel_reader(name, size, _s3_body(body), open_range)
        return OpenedSource(reader, size, reader.close, obj.get("ContentType"))
    reader = GuardedReader(
        read=body.read,
        what=name,
        size=size,
        stall_seconds=settings.HTTP_READ_TIMEOUT,
        raw=getattr(body, "_raw_stream", None),  # botocore's StreamingBody wraps a urllib3 response
    )
    return OpenedSource(reader, size, body.close, obj.get("ContentType"))


def _s3_body(body) -> RangeBody:
    return RangeBody(read=body.read, close=body.close, abort=body._raw_stream.shutdown)


def _get_s3_object(client, location: Location, name: str, **conditions) -> dict:
    """GetObject of the location (with `conditions`: Range, IfMatch), its failures in the user's words."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return client.get_object(Bucket=location.bucket, Key=location.key, **conditions)
    except ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "PreconditionFailed" or status == 412:
            raise changed_during_download(name, "its ETag is no longer the one it had") from None
        raise StepError(
            f"{FAILED} {_s3_error_text(error, location)}",
            code=_s3_error_code(code, status),
            details={"s3_error": code, "status": status},
        ) from None
    except BotoCoreError as error:
        raise StepError(
            f"{FAILED} The S3 service could not be reached for '{name}': {error}", code=ErrorCode.SOURCE_UNREACHABLE
        ) from None


def _s3_error_code(code: str, status: int | None) -> str:
    """Missing (404, NoSuchKey, NoSuchBucket), a passing fault on S3's side (5xx, SlowDown: try
    again later), or refused (403 and every other answer)."""
    if code in ("NoSuchKey", "404", "NotFound", "NoSuchBucket") or status in (404, 410):
        return ErrorCode.SOURCE_NOT_FOUND
    if code in S3_SERVER_FAULTS or (status is not None and status >= 500):
        return ErrorCode.SOURCE_UNREACHABLE
    return ErrorCode.SOURCE_REFUSED


# S3's error codes of a fault on its side that may pass (its 5xx answers, and throttling).
S3_SERVER_FAULTS = ("InternalError", "ServiceUnavailable", "SlowDown", "500", "503")


def s3_source_client():

    config = settings.S3_SOURCE
    if not config:
        raise StepError(
            f"{FAILED} s3:// locations are not enabled on this service (IMAGEACTIONS_S3_SOURCE is not set)",
            code=ErrorCode.URL_NOT_ALLOWED,
        )
    return build_s3_client(
        endpoint_url=config.get("endpoint_url"),
        access_key=config.get("access_key"),
        secret_key=config.get("secret_key"),
        region_name=config.get("region_name") or "us-east-1",
        addressing_style=config.get("addressing_style") or "auto",
        connect_timeout=settings.HTTP_CONNECT_TIMEOUT,
        read_timeout=settings.HTTP_READ_TIMEOUT,
    )


def _s3_error_text(error, location: Location) -> str:
    code = str(error.response.get("Error", {}).get("Code", ""))
    name = f"s3://{location.bucket}/{location.key}"
    if code in ("NoSuchKey", "404", "NotFound"):
        return f"The object '{location.key}' does not exist in bucket '{location.bucket}' ({name})"
    if code == "NoSuchBucket":
        return f"The bucket '{location.bucket}' does not exist ({name})"
    if code in ("AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return f"Access to '{name}' was denied ({code}); the object must be readable with the service's S3 credentials"
    message = error.response.get("Error", {}).get("Message") or str(error)
    return f"S3 answered {code or 'an error'} for '{name}': {message}"


# -- swift:// ------------------------------------------------------------------------------


def open_swift(location: Location, *, parallel: bool = False) -> OpenedSource:
    try:
        client = client_for_host(location.host)
    except SwiftError as error:
        raise StepError(f"{FAILED} {error} ({location.url})", code=error_code_of(error)) from None
    try:
        response, size = _open_swift_object(client, location)
    except StepError:
        client.close()
        raise
    etag = response.headers.get("ETag")
    ranges = response.headers.get("Accept-Ranges", "").lower() == "bytes"
    if parallel and reads_in_parallel(size, bool(etag) and ranges):

        def open_range(start: int, end: int) -> RangeBody:
            part, _length = _open_swift_object(client, location, {"Range": f"bytes={start}-{end}", "If-Match": etag})
            expected, got = _content_range(start, end, size), part.headers.get("Content-Range", "")
            if part.status_code != 206 or not _same_range(got, expected):
                part.close()
                raise unexpected_range(location.url, got or f"the whole object ({part.status_code})", expected)
            return _http_body(part)

        reader = parallel_reader(location.url, size, _http_body(response), open_range)

        def close_parallel():
            reader.close()
            client.close()

        return OpenedSource(reader, size, close_parallel, response.headers.get("Content-Type"))
    raw = response.raw

    def close():
        response.close()
        client.close()

    timeout = client.timeout
    reader = GuardedReader(
        read=lambda n: raw.read(n, decode_content=False),
        what=location.url,
        size=size,
        stall_seconds=timeout[1] if isinstance(timeout, (tuple, list)) else timeout,
        raw=raw,
    )
    return OpenedSource(reader, size, close, response.headers.get("Content-Type"))


def _open_swift_object(client, location: Location, headers: dict | None = None):
    """The object's answer and announced size; its failures in the user's words."""
    try:
        return client.open_object(location.container, location.object, account=location.account, headers=headers)
    except SwiftObjectChanged:
        raise changed_during_download(location.url, "its ETag is no longer the one it had") from None
    except SwiftError as error:
        raise StepError(f"{FAILED} {error} ({location.url})", code=error_code_of(error)) from None
