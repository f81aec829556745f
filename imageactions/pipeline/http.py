"""HTTP sessions whose connections go to one address that the URL policy checked, and the
user's words for their failures. Import sources (GET) and export destinations (PUT) use these,
so DNS is asked once, by the policy check, and rebinding cannot switch to a refused address.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

import requests
import urllib3
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from .errors import StepError


class PinnedConnectionMixin:
    """Connects to `pinned_address` instead of resolving the host again.

    Without this a second DNS answer (rebinding) could switch to an address the policy refused.
    The Host header, TLS SNI and certificate check still use the URL's host name.
    """

    pinned_address: str
    opened_sockets: list | None = None  # where each new connection's socket is noted, if given

    def _new_conn(self) -> socket.socket:
        try:
            sock = urllib3.util.connection.create_connection(
                (self.pinned_address, self.port),
                self.timeout,
                source_address=self.source_address,
                socket_options=self.socket_options,
            )
            if self.opened_sockets is not None:
                self.opened_sockets.append(sock)
            return sock
        except TimeoutError as error:
            raise ConnectTimeoutError(self, f"Connection to {self.host} timed out") from error
        except OSError as error:
            raise NewConnectionError(self, f"Failed to establish a new connection: {error}") from error


class PinnedAdapter(HTTPAdapter):
    """A requests adapter whose connections all go to one checked IP address."""

    def __init__(self, address: str, opened: list | None = None):
        self.address, self.opened = address, opened
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        pinned = {"pinned_address": self.address, "opened_sockets": self.opened}
        http_conn = type("PinnedHTTPConnection", (PinnedConnectionMixin, HTTPConnection), pinned)
        https_conn = type("PinnedHTTPSConnection", (PinnedConnectionMixin, HTTPSConnection), pinned)
        self.poolmanager.pool_classes_by_scheme = {
            "http": type("PinnedHTTPConnectionPool", (HTTPConnectionPool,), {"ConnectionCls": http_conn}),
            "https": type("PinnedHTTPSConnectionPool", (HTTPSConnectionPool,), {"ConnectionCls": https_conn}),
        }


def pinned_session(address: str, opened: list | None = None) -> requests.Session:
    """A requests session that connects only to `address` and ignores proxy settings; the
    sockets it opens are appended to `opened`, if given (to shut them from another thread)."""
    session = requests.Session()
    session.trust_env = False  # a proxy from the environment would bypass the address check
    adapter = PinnedAdapter(str(address), opened)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def caused_by(error: BaseException, kind: type) -> bool:
    """Whether `kind` is anywhere in the chain of causes, reasons and arguments of `error`."""
    seen = set()
    stack = [error]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, kind):
            return True
        stack.extend([current.__cause__, current.__context__, getattr(current, "reason", None)])
        stack.extend(arg for arg in getattr(current, "args", ()) if isinstance(arg, BaseException))
    return False


def innermost(error: BaseException) -> str:
    """The text of the deepest reason behind a requests/urllib3 error (the one that says what happened)."""
    while True:
        inner = getattr(error, "reason", None) or error.__cause__
        if not isinstance(inner, BaseException):
            return str(error)
        error = inner


class UploadBody(Protocol):
    """A request body that counts what was read from it (actions_export's ExportedBytes)."""

    bytes_read: int
    size: int


@contextmanager
def translated_request_errors(
    failed: str,
    hostport: str,
    url: str,
    *,
    upload: UploadBody | None = None,
    code: str = "source_unreachable",
) -> Iterator[None]:
    """Turns a requests error raised inside into a StepError that starts with `failed`, names
    `hostport` and says what went wrong, with `code` as its error code; `upload` is the body of a
    PUT, so a connection that broke mid-body says how far it got.
    """
    try:
        yield
    except requests.exceptions.SSLError as error:
        raise StepError(f"{failed} The TLS connection to '{hostport}' failed: {innermost(error)}", code=code) from None
    except requests.ConnectTimeout:
        raise StepError(
            f"{failed} Connecting to '{hostport}' timed out after {settings.HTTP_CONNECT_TIMEOUT:g} s", code=code
        ) from None
    except requests.ReadTimeout:
        raise StepError(
            f"{failed} '{hostport}' did not answer within {settings.HTTP_READ_TIMEOUT:g} s for url '{url}'", code=code
        ) from None
    except requests.RequestException as error:
        if caused_by(error, ConnectionRefusedError):
            raise StepError(f"{failed} Connection refused by '{hostport}'", code=code) from None
        if upload is None:
            raise StepError(f"{failed} The request to '{hostport}' failed: {innermost(error)}", code=code) from None
        raise StepError(
            f"{failed} The connection to '{hostport}' broke after {upload.bytes_read} of "
            f"{upload.size} bytes: {innermost(error)}",
            code=code,
        ) from None
