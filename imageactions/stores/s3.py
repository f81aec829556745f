"""The S3 image store: images as objects in one bucket of an S3-compatible service, through boto3."""

import base64
import hashlib
import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

import boto3
from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from django.core.exceptions import ImproperlyConfigured
from s3transfer.subscribers import BaseSubscriber

from .base import (
    COPIED_SERVER_SIDE,
    ImageStore,
    ObjectNotFound,
    ProgressCallback,
    ReaderAdapter,
    StoreError,
    StoreUnavailable,
    check_config,
    empty_reader,
    validate_key,
)

log = logging.getLogger(__name__)

MiB = 1024 * 1024
MIN_PART_SIZE = 5 * MiB  # S3: every part of a multipart upload but the last is at least this big
MAX_PARTS = 10_000  # S3: most parts one multipart upload may have
DEFAULT_PART_SIZE = 8 * MiB
# Parts in flight per transfer. A stream's parts are held in memory until sent, so this times
# the part size bounds a transfer's memory, whatever the image's size.
PARTS_IN_FLIGHT = 4
# How long an abort waits for the parts being sent before it aborts again (see MultipartUpload.abort).
ABORT_WAIT = 15
PROGRESS_INTERVAL = 0.5  # seconds between progress reports during one transfer
NOT_FOUND_CODES = {"404", "NoSuchKey", "NotFound"}
NO_SUCH_UPLOAD_CODES = {"404", "NoSuchUpload", "NotFound"}
ACCESS_DENIED_CODES = {"403", "AccessDenied", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch"}


def build_s3_client(
    *,
    endpoint_url: str | None = None,
    access_key: str | None = None,
    secret_key: str | None = None,
    region_name: str = "us-east-1",
    addressing_style: str = "auto",
    connect_timeout: float = 5,
    read_timeout: float = 60,
    max_attempts: int = 3,
):
    """A boto3 S3 client that also works against OpenStack Swift's s3api."""
    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": addressing_style},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"max_attempts": max_attempts, "mode": "standard"},
        # Checksums only where the API demands them: Swift's s3api (2.30) predates the
        # flexible-checksum headers that botocore >= 1.36 sends by default.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=region_name,
        config=config,
    )
    client.meta.events.register("before-call.s3.DeleteObjects", _add_content_md5)
    return client


def _add_content_md5(params, **kwargs):
    # botocore >= 1.36 sends DeleteObjects with a CRC32 checksum only; Swift's s3api (2.30)
    # answers "Missing required header for this request: Content-MD5" without this.
    body = params["body"]
    if isinstance(body, str):
        body = body.encode()
    params["headers"]["Content-MD5"] = base64.b64encode(hashlib.md5(body).digest()).decode()


def _drop_copy_source_if_match(params, **kwargs):
    # s3transfer makes each part of a multipart copy conditional on the source's ETag, and
    # Swift's s3api (2.30) fails that condition for every multipart-uploaded source. Objects in
    # an image store are never modified, so the condition guards nothing here.
    params.pop("CopySourceIfMatch", None)


class S3Store(ImageStore):
    kind = "s3"

    def __init__(
        self,
        name: str,
        *,
        bucket: str,
        endpoint_url: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        region_name: str = "us-east-1",
        addressing_style: str = "auto",
        region: str | None = None,
        prefix: str = "",
        multipart_threshold: int = DEFAULT_PART_SIZE,
        multipart_chunksize: int = DEFAULT_PART_SIZE,
        connect_timeout: float = 5,
        read_timeout: float = 60,
        max_attempts: int = 3,
    ):
        super().__init__(name, region or name)
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.access_key = access_key
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.multipart_threshold = multipart_threshold
        self.multipart_chunksize = multipart_chunksize
        self.read_timeout = read_timeout
        self.client = build_s3_client(
            endpoint_url=endpoint_url,
            access_key=access_key,
            secret_key=secret_key,
            region_name=region_name,
            addressing_style=addressing_style,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_attempts=max_attempts,
        )
        self.client.meta.events.register("before-parameter-build.s3.UploadPartCopy", _drop_copy_source_if_match)
        self._where = endpoint_url or f"AWS S3 ({region_name})"

    @classmethod
    def from_config(cls, name: str, config: dict) -> "S3Store":
        numbers = ["multipart_threshold", "multipart_chunksize", "connect_timeout", "read_timeout", "max_attempts"]
        texts = ["endpoint_url", "access_key", "secret_key", "region_name", "addressing_style", "region", "prefix"]
        check_config(name, config, required=["bucket"], optional=numbers + texts)
        for key in numbers:
            value = config.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value <= 0):
                raise ImproperlyConfigured(f"IMAGE_STORES[{name!r}][{key!r}] must be a positive number, got {value!r}")
        if config.get("multipart_chunksize", MIN_PART_SIZE) < MIN_PART_SIZE:
            raise ImproperlyConfigured(
                f"IMAGE_STORES[{name!r}]['multipart_chunksize'] must be at least {MIN_PART_SIZE} bytes (S3's minimum part size)"
            )
        if config.get("addressing_style", "auto") not in ("auto", "path", "virtual"):
            raise ImproperlyConfigured(
                f"IMAGE_STORES[{name!r}]['addressing_style'] must be 'auto', 'path' or 'virtual'"
            )
        options = {key: value for key, value in config.items() if key != "type" and value is not None}
        for key in ("multipart_threshold", "multipart_chunksize", "max_attempts"):
            if key in options:
                options[key] = int(options[key])
        return cls(name, **options)

    # -- writing

    def put_file(self, key: str, path: Path, *, size: int, progress: ProgressCallback | None = None) -> None:
        found = Path(path).stat().st_size
        if found != size:
            raise StoreError(
                f"The staged file {path} has {found} bytes, {size} were expected; "
                f"nothing was stored in image store '{self.name}'"
            )
        object_key = self._object_key(key)
        self._transfer(
            lambda manager, subscribers: manager.upload(str(path), self.bucket, object_key, subscribers=subscribers),
            action="store",
            key=key,
            size=size,
            progress=progress,
        )

    def put_stream(
        self, key: str, stream: BinaryIO, *, size: int | None, progress: ProgressCallback | None = None
    ) -> None:
        object_key = self._object_key(key)
        reader = _WholePartReader(stream, key=key, size=size, store_name=self.name)
        self._transfer(
            lambda manager, subscribers: manager.upload(reader, self.bucket, object_key, subscribers=subscribers),
            action="store",
            key=key,
            size=size,
            progress=progress,
        )

    def server_side_copy(self, src_store: ImageStore, src_key: str, dst_key: str) -> bool:
        if not self._can_copy_from(src_store):
            return False
        self._copy_in_service(src_store, src_key, dst_key, size=None, progress=None)
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
        # The service copies out of sight: `read_back` gets nothing, the caller reads the copy.
        if not self._can_copy_from(src_store):
            return None
        self._copy_in_service(src_store, src_key, dst_key, size=size, progress=progress)
        return COPIED_SERVER_SIDE

    def _can_copy_from(self, src_store: ImageStore) -> bool:
        # The destination's credentials read the source, so both must be one account on one service.
        return isinstance(src_store, S3Store) and (src_store.endpoint_url, src_store.access_key) == (
            self.endpoint_url,
            self.access_key,
        )

    def _copy_in_service(
        self, src_store: "S3Store", src_key: str, dst_key: str, *, size: int | None, progress: ProgressCallback | None
    ) -> None:
        """CopyObject, or UploadPartCopy part by part above the multipart threshold (a single
        CopyObject stops at 5 GiB): the service copies, no byte passes through here. A source
        that has not `size` bytes (when given) is not copied."""
        found = src_store.size(src_key)  # ObjectNotFound naming the source store, and the size for the part plan
        if size is not None and found != size:
            raise StoreError(
                f"The object '{src_key}' of image store '{src_store.name}' has {found} bytes, {size} were "
                f"expected; nothing was copied into image store '{self.name}'"
            )
        size = found
        copy_source = {"Bucket": src_store.bucket, "Key": src_store._object_key(src_key)}
        object_key = self._object_key(dst_key)
        self._transfer(
            lambda manager, subscribers: manager.copy(copy_source, self.bucket, object_key, subscribers=subscribers),
            action="copy",
            key=dst_key,
            size=size,
            progress=progress,
        )

    def _transfer(self, submit, *, action: str, key: str, size: int | None, progress: ProgressCallback | None):
        """Run one s3transfer upload or copy, reporting progress from this thread.

        s3transfer calls its subscribers from its worker threads; progress callbacks write to
        the database, so they are called here instead, where the caller's connection lives.
        """
        watch = _TransferWatch(size)
        with (
            self._translate_errors(action, key),
            create_transfer_manager(self.client, self._transfer_config(size)) as manager,
        ):
            future = submit(manager, [watch])
            while not watch.done.wait(PROGRESS_INTERVAL):
                if progress:
                    progress(watch.bytes_done, size)
            future.result()
        if progress:
            progress(watch.bytes_done, size)

    def part_size(self, size: int | None) -> int:
        """The part size for an object of (at most) `size` bytes: the configured chunk size, or
        whole MiB big enough that MAX_PARTS parts hold `size`."""
        if not size:
            return self.multipart_chunksize
        return max(self.multipart_chunksize, -(-size // (MAX_PARTS * MiB)) * MiB)

    def _transfer_config(self, size: int | None) -> TransferConfig:
        part_size = self.part_size(size)
        config = TransferConfig(
            multipart_threshold=self.multipart_threshold,
            multipart_chunksize=part_size,
            max_concurrency=PARTS_IN_FLIGHT,
            preferred_transfer_client="classic",
        )
        config.max_in_memory_upload_chunks = PARTS_IN_FLIGHT
        return config

    # -- writing chunk by chunk (a staging store)

    def start_upload(self, key: str, *, max_size: int) -> "MultipartUpload":
        """Begin a multipart upload of `key` (at most `max_size` bytes), fed by
        MultipartUpload.write(); nothing is sent but the request that creates it, so the caller
        can record its id first. Its memory is about (PARTS_IN_FLIGHT + 2) x part_size(max_size)."""
        object_key = self._object_key(key)
        with self._translate_errors("store", key):
            upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=object_key)["UploadId"]
        return MultipartUpload(self, key, upload_id, self.part_size(max_size))

    def abort_upload(self, key: str, upload_id: str) -> None:
        """Abort a multipart upload and free its parts; one already ended or aborted is no error."""
        with self._translate_errors("abort the upload of", key):
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=self._object_key(key), UploadId=upload_id)
            except ClientError as error:
                if _error_code(error) not in NO_SUCH_UPLOAD_CODES:
                    raise

    def list_uploads(self) -> list["PendingUpload"]:
        """The multipart uploads under way in the store's prefix, keys relative to it."""
        found, marker = [], {}
        with self._translate_errors("list the uploads of", self.prefix or "/"):
            while True:
                page = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=self.prefix, **marker)
                for upload in page.get("Uploads", []):
                    key = upload["Key"][len(self.prefix) :]
                    found.append(PendingUpload(key, upload["UploadId"], upload["Initiated"]))
                if not page.get("IsTruncated"):
                    return found
                marker = {"KeyMarker": page["NextKeyMarker"], "UploadIdMarker": page["NextUploadIdMarker"]}

    def list_keys(self) -> list[str]:
        """The keys of the objects in the store's prefix, relative to it."""
        found = []
        with self._translate_errors("list", self.prefix or "/"):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix):
                found.extend(item["Key"][len(self.prefix) :] for item in page.get("Contents", []))
        return found

    # -- reading

    def open_read(self, key: str, *, start: int = 0, end: int | None = None) -> BinaryIO:
        object_key = self._object_key(key)
        if end is not None and end <= start:
            return empty_reader()
        extra = {}
        if start or end is not None:
            extra["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        with self._translate_errors("read", key):
            try:
                body = self.client.get_object(Bucket=self.bucket, Key=object_key, **extra)["Body"]
            except ClientError as error:
                if _error_code(error) == "InvalidRange":  # the range starts at or past the end
                    return empty_reader()
                raise

        def read_some(amount: int) -> bytes:
            with self._translate_errors("read", key):
                return body.read(amount)

        return ReaderAdapter(read_some, body.close)

    def size(self, key: str) -> int:
        object_key = self._object_key(key)
        with self._translate_errors("read", key):
            try:
                return self.client.head_object(Bucket=self.bucket, Key=object_key)["ContentLength"]
            except ClientError as error:
                # A HEAD answer has no body, so a missing bucket looks like a missing object.
                if _error_code(error) in NOT_FOUND_CODES:
                    self._check_bucket()
                raise

    def delete(self, key: str) -> None:
        object_key = self._object_key(key)
        with self._translate_errors("delete", key):
            try:
                self.client.delete_object(Bucket=self.bucket, Key=object_key)
            except ClientError as error:
                if _error_code(error) not in NOT_FOUND_CODES:
                    raise

    def location(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"

    # -- helpers

    def _object_key(self, key: str) -> str:
        return self.prefix + validate_key(key)

    def _check_bucket(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as error:
            if _error_code(error) in NOT_FOUND_CODES | {"NoSuchBucket"}:
                raise self._missing_bucket() from None

    def _missing_bucket(self) -> StoreError:
        return StoreError(f"The bucket '{self.bucket}' of image store '{self.name}' does not exist at {self._where}")

    @contextmanager
    def _translate_errors(self, action: str, key: str):
        try:
            yield
        except ClientError as error:
            raise self._client_error(action, key, error) from error
        except (EndpointConnectionError, ConnectTimeoutError, ConnectionClosedError) as error:
            raise StoreUnavailable(
                f"The image store '{self.name}' could not be reached at {self._where}: {error}"
            ) from error
        except ReadTimeoutError as error:
            raise StoreUnavailable(
                f"The image store '{self.name}' at {self._where} did not answer within {self.read_timeout} s "
                f"while trying to {action} '{key}'"
            ) from error
        except NoCredentialsError as error:
            raise StoreError(f"The image store '{self.name}' has no credentials configured") from error
        except BotoCoreError as error:
            raise StoreError(f"The image store '{self.name}' could not {action} '{key}': {error}") from error

    def _client_error(self, action: str, key: str, error: ClientError) -> StoreError:
        code = _error_code(error)
        if code == "NoSuchBucket":
            return self._missing_bucket()
        if code in NOT_FOUND_CODES:
            return ObjectNotFound(f"Object '{key}' was not found in image store '{self.name}'")
        if code in ACCESS_DENIED_CODES:
            return StoreError(
                f"The image store '{self.name}' refused to {action} '{key}' ({code}): "
                f"check its access key, secret key and the permissions on bucket '{self.bucket}'"
            )
        message = error.response.get("Error", {}).get("Message") or str(error)
        return StoreError(f"The image store '{self.name}' could not {action} '{key}': {code}: {message}")


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


class _TransferWatch(BaseSubscriber):
    """Counts one transfer's bytes and signals its end; s3transfer calls it from worker threads."""

    def __init__(self, size: int | None):
        self.size = size
        self.bytes_done = 0
        self.done = threading.Event()
        self._lock = threading.Lock()

    def on_queued(self, future, **kwargs):
        if self.size is not None:
            future.meta.provide_transfer_size(self.size)  # spares s3transfer a HEAD request

    def on_progress(self, future, bytes_transferred, **kwargs):
        with self._lock:
            self.bytes_done += bytes_transferred  # negative when a part is retried

    def on_done(self, future, **kwargs):
        self.done.set()


class _WholePartReader:
    """`stream` as s3transfer needs it: not seekable, and read(n) short only at the end.

    s3transfer takes a short read for the end of the data and would then send a too small part
    (or read the rest into memory at once), so pieces are joined here. The length is checked
    against `size` while reading, so a wrong length aborts the upload before anything is stored.
    """

    def __init__(self, stream: BinaryIO, *, key: str, size: int | None, store_name: str):
        self._stream = stream
        self._key = key
        self._size = size
        self._store_name = store_name
        self._count = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def read(self, amount: int = -1) -> bytes:
        pieces = []
        wanted = amount if amount >= 0 else None
        while wanted is None or wanted > 0:
            piece = self._stream.read(MiB if wanted is None else wanted)
            if not piece:
                break
            pieces.append(piece)
            if wanted is not None:
                wanted -= len(piece)
        data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        self._count += len(data)
        at_end = amount < 0 or len(data) < amount
        if self._size is not None and (self._count > self._size or (at_end and self._count != self._size)):
            raise StoreError(self._wrong_length_message())
        return data

    def _wrong_length_message(self) -> str:
        found = f"more than {self._size}" if self._count > self._size else str(self._count)
        return (
            f"The data for '{self._key}' had {found} bytes where {self._size} were expected; "
            f"nothing was stored in image store '{self._store_name}'"
        )


@dataclass(frozen=True)
class PendingUpload:
    key: str
    upload_id: str
    initiated: datetime


class MultipartUpload:
    """One multipart upload fed from the caller's thread by write(), while the parts are sent
    by a few threads of its own, each part with its Content-MD5 so the service checks it.

    A part is sent once `part_size` bytes are buffered; at most PARTS_IN_FLIGHT parts are being
    sent, write() waits for the oldest before it sends another, so memory stays about
    (PARTS_IN_FLIGHT + 2) x part_size (the parts being sent, the one filling and its joined copy)
    whatever the object's size. No callback runs on the sending threads: progress and cancel
    checks stay with the caller.
    """

    def __init__(self, store: S3Store, key: str, upload_id: str, part_size: int):
        self.store, self.key, self.upload_id, self.part_size = store, key, upload_id, part_size
        self.size = 0
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._parts: list[Future] = []
        self._in_flight: deque[Future] = deque()
        self._sender = ThreadPoolExecutor(max_workers=PARTS_IN_FLIGHT, thread_name_prefix="s3-part")

    def write(self, data: bytes) -> None:
        self._buffer.append(data)
        self._buffered += len(data)
        self.size += len(data)
        if self._buffered >= self.part_size:
            self._send_buffered()

    def complete(self) -> None:
        """Send what is buffered, wait for every part, and make the object of them."""
        try:
            if self._buffered or not self._parts:  # S3 makes no object of no parts: one empty part
                self._send_buffered()
            parts = [future.result() for future in self._parts]
            with self.store._translate_errors("store", self.key):
                self.store.client.complete_multipart_upload(
                    Bucket=self.store.bucket,
                    Key=self.store._object_key(self.key),
                    UploadId=self.upload_id,
                    MultipartUpload={"Parts": parts},
                )
        finally:
            self._sender.shutdown(wait=True, cancel_futures=True)

    def abort(self) -> None:
        """Stop sending and abort the upload at once; a failure to abort is logged (clean_staging
        finds the upload later), so that it never hides why the upload was aborted.

        Parts already being sent may still land after the abort (S3 keeps such a part), so the
        abort is sent again once they ended, waiting for them at most ABORT_WAIT seconds."""
        self._sender.shutdown(wait=False, cancel_futures=True)
        self._buffer.clear()
        self._abort_logged()
        in_flight = [future for future in self._parts if not future.done()]
        if in_flight:
            futures.wait(in_flight, timeout=ABORT_WAIT)
            self._abort_logged()

    def _abort_logged(self) -> None:
        try:
            self.store.abort_upload(self.key, self.upload_id)
        except StoreError:
            log.warning("could not abort the upload %s of %s", self.upload_id, self.key, exc_info=True)

    def _send_buffered(self) -> None:
        while len(self._in_flight) >= PARTS_IN_FLIGHT:  # the oldest part must be sent first
            self._in_flight.popleft().result()  # raises the part's error here, on the caller's thread
        while self._in_flight and self._in_flight[0].done():
            self._in_flight.popleft().result()
        one = len(self._buffer) == 1 and isinstance(self._buffer[0], bytes)
        body = self._buffer[0] if one else b"".join(self._buffer)  # views (a file's holes) become bytes
        self._buffer, self._buffered = [], 0
        future = self._sender.submit(self._send_part, len(self._parts) + 1, body)
        self._parts.append(future)
        self._in_flight.append(future)

    def _send_part(self, number: int, body: bytes) -> dict:
        checksum = base64.b64encode(hashlib.md5(body).digest()).decode()
        with self.store._translate_errors("store", self.key):
            answer = self.store.client.upload_part(
                Bucket=self.store.bucket,
                Key=self.store._object_key(self.key),
                UploadId=self.upload_id,
                PartNumber=number,
                Body=body,
                ContentMD5=checksum,
            )
        return {"PartNumber": number, "ETag": answer["ETag"]}
