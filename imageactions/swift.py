"""A small client for the OpenStack Swift object API (v1.0 auth), used for swift:// image sources.

Credentials per Swift host come from settings.SWIFT_CREDENTIALS: see client_for_host().
"""

import time
from collections.abc import Iterator
from typing import BinaryIO
from urllib.parse import quote, urlsplit

import requests
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

DEFAULT_TIMEOUT = (5.0, 60.0)  # seconds: (connect, read)
UPLOAD_CHUNK_SIZE = 1024 * 1024
# A token this close to its expiry is renewed before a request: an upload's body is a stream
# that cannot be sent a second time after a 401.
TOKEN_RENEWAL_MARGIN = 60.0


class SwiftError(Exception):
    """A Swift request failed; the text is written for the user."""


class SwiftNotFound(SwiftError):
    """The object or container does not exist."""


class SwiftRefused(SwiftError):
    """Swift refused the credentials or the access (401, 403)."""


class SwiftNotConfigured(SwiftError):
    """This service has no credentials for the Swift host."""


class SwiftObjectChanged(SwiftError):
    """A conditional request's precondition (If-Match) failed: the object is not the one asked for (412)."""


class SwiftUnavailable(SwiftError):
    """Swift could not be reached, did not answer in time, or answered with a server error (5xx)."""


class SwiftClient:
    def __init__(self, auth_url: str, user: str, key: str, *, timeout: float | tuple[float, float] = DEFAULT_TIMEOUT):
        self.auth_url = auth_url
        self.user = user
        self._key = key
        self.timeout = timeout
        self.host = urlsplit(auth_url).netloc
        self.token: str | None = None
        self.storage_url: str | None = None
        self._token_expires_at: float | None = None
        self._session = requests.Session()

    def authenticate(self) -> None:
        """Get a token and the account's storage URL (GET auth_url with X-Auth-User / X-Auth-Key)."""
        response = self._send("GET", self.auth_url, {"X-Auth-User": self.user, "X-Auth-Key": self._key}, "authenticate")
        response.close()
        if response.status_code in (401, 403):
            raise SwiftRefused(
                f"Swift at {self.host} rejected the credentials of user '{self.user}' (HTTP {response.status_code})"
            )
        token, storage_url = response.headers.get("X-Auth-Token"), response.headers.get("X-Storage-Url")
        if response.status_code >= 500:
            raise SwiftUnavailable(f"Swift authentication at {self.auth_url} failed: HTTP {response.status_code}")
        if response.status_code >= 300 or not token or not storage_url:
            raise SwiftError(f"Swift authentication at {self.auth_url} failed: HTTP {response.status_code}")
        self.token, self.storage_url = token, storage_url.rstrip("/")
        expires = response.headers.get("X-Auth-Token-Expires")
        self._token_expires_at = time.monotonic() + float(expires) if expires else None

    def open_object(
        self, container: str, obj: str, *, account: str | None = None, headers: dict | None = None
    ) -> tuple[requests.Response, int | None]:
        """A streaming response with the object's bytes, and its size when Swift tells it;
        `headers` may ask for a range (206) on a condition (If-Match).

        The caller reads it (iter_content, raw) and closes it.
        """
        response = self._request("GET", container, obj, account=account, headers=headers, stream=True)
        if response.status_code not in (200, 206):
            error = self._error(response, "read", container, obj)
            response.close()
            raise error
        length = response.headers.get("Content-Length")
        return response, int(length) if length is not None else None

    def put_object(
        self, container: str, obj: str, stream: BinaryIO, *, account: str | None = None, content_type: str | None = None
    ) -> str:
        """Upload everything read from `stream` (chunked transfer encoding); returns the object's ETag."""
        headers = {"Content-Type": content_type} if content_type else {}
        start = stream.tell() if _seekable(stream) else None

        def body() -> Iterator[bytes]:
            if start is not None:
                stream.seek(start)  # a retry after a 401 sends the data again
            while chunk := stream.read(UPLOAD_CHUNK_SIZE):
                yield chunk

        response = self._request(
            "PUT", container, obj, account=account, headers=headers, body=body, replayable=start is not None
        )
        response.close()
        if response.status_code != 201:
            raise self._error(response, "store", container, obj)
        return response.headers.get("ETag", "")

    def delete_object(self, container: str, obj: str, *, account: str | None = None) -> None:
        """Delete the object; deleting a missing object is not an error."""
        response = self._request("DELETE", container, obj, account=account)
        response.close()
        if response.status_code not in (200, 204, 404):
            raise self._error(response, "delete", container, obj)

    def create_container(self, container: str, *, account: str | None = None) -> None:
        """Create the container; creating one that exists is not an error."""
        response = self._request("PUT", container, None, account=account)
        response.close()
        if response.status_code not in (201, 202):
            raise self._error(response, "create", container, None)

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> "SwiftClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- helpers

    def _request(self, method, container, obj, *, account, headers=None, body=None, replayable=True, stream=False):
        if self.token is None or self._token_expiring():
            self.authenticate()
        what = f"{method.lower()} '{_name(container, obj)}'"
        for attempt in (1, 2):
            url = self._url(container, obj, account)
            all_headers = {**(headers or {}), "X-Auth-Token": self.token}
            response = self._send(method, url, all_headers, what, data=body() if body else None, stream=stream)
            # An expired or revoked token: authenticate again, once.
            if response.status_code != 401 or attempt == 2 or not replayable:
                return response
            response.close()
            self.authenticate()
        raise AssertionError("unreachable")

    def _send(self, method: str, url: str, headers: dict, what: str, **kwargs) -> requests.Response:
        try:
            return self._session.request(method, url, headers=headers, timeout=self.timeout, **kwargs)
        except requests.Timeout as error:
            raise SwiftUnavailable(f"Swift at {self.host} did not answer in time ({what}): {error}") from error
        except requests.ConnectionError as error:
            raise SwiftUnavailable(f"Swift at {self.host} could not be reached ({what}): {error}") from error
        except requests.RequestException as error:
            raise SwiftUnavailable(f"The request to Swift at {self.host} failed ({what}): {error}") from error

    def _url(self, container: str, obj: str | None, account: str | None) -> str:
        base = self.storage_url
        if account is not None:
            base = f"{base.rsplit('/', 1)[0]}/{quote(account, safe='')}"
        url = f"{base}/{quote(container, safe='')}"
        return f"{url}/{quote(obj, safe='/')}" if obj is not None else url

    def _token_expiring(self) -> bool:
        return self._token_expires_at is not None and time.monotonic() > self._token_expires_at - TOKEN_RENEWAL_MARGIN

    def _error(self, response: requests.Response, action: str, container: str, obj: str | None) -> SwiftError:
        name = _name(container, obj)
        status = response.status_code
        if status == 404:
            if obj is not None and action == "read":
                return SwiftNotFound(f"Object '{name}' was not found in Swift at {self.host}")
            return SwiftNotFound(f"Container '{container}' was not found in Swift at {self.host}")
        if status == 412:
            return SwiftObjectChanged(f"The object '{name}' in Swift at {self.host} changed (HTTP 412)")
        if status in (401, 403):
            return SwiftRefused(f"Swift at {self.host} refused user '{self.user}' access to '{name}' (HTTP {status})")
        detail = _short_text(response)
        kind = SwiftUnavailable if status >= 500 else SwiftError
        return kind(f"Swift at {self.host} could not {action} '{name}': HTTP {status}{': ' + detail if detail else ''}")


def client_for_host(hostport: str) -> SwiftClient:
    """A client for the Swift at `hostport`, with its credentials from settings.SWIFT_CREDENTIALS:
    {"host:port": {"auth_url": ..., "user": ..., "key": ..., "timeout": optional seconds}}."""
    credentials = getattr(settings, "SWIFT_CREDENTIALS", {}) or {}
    entry = credentials.get(hostport)
    if entry is None:
        raise SwiftNotConfigured(f"No Swift credentials configured for host '{hostport}'")
    for field in ("auth_url", "user", "key"):
        if not entry.get(field):
            raise ImproperlyConfigured(f"SWIFT_CREDENTIALS[{hostport!r}] is missing {field!r}")
    return SwiftClient(entry["auth_url"], entry["user"], entry["key"], timeout=entry.get("timeout", DEFAULT_TIMEOUT))


def _name(container: str, obj: str | None) -> str:
    return f"{container}/{obj}" if obj is not None else container


def _seekable(stream) -> bool:
    try:
        return stream.seekable()
    except (AttributeError, OSError):
        return False


def _short_text(response: requests.Response) -> str:
    try:
        # At most the first KiB: the body of an error can be a whole HTML page.
        text = next(response.iter_content(1024), b"").decode(response.encoding or "utf-8", errors="replace")
    except Exception:  # a body that cannot be read adds nothing to the message
        return ""
    return " ".join(text.split())[:200]
