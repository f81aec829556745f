"""HTTP sessions whose connections go to one address that the URL policy checked.

Import sources (GET) and export destinations (PUT) use these, so DNS is asked once, by the
policy check, and a second answer (rebinding) cannot switch to a refused address.
"""

from __future__ import annotations

import socket

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError


class PinnedConnectionMixin:
    """Connects to `pinned_address` instead of resolving the host again.

    Without this a second DNS answer (rebinding) could switch to an address the policy refused.
    The Host header, TLS SNI and certificate check still use the URL's host name.
    """

    pinned_address: str

    def _new_conn(self) -> socket.socket:
        try:
            return urllib3.util.connection.create_connection(
                (self.pinned_address, self.port), self.timeout,
                source_address=self.source_address, socket_options=self.socket_options,
            )
        except socket.timeout as error:
            raise ConnectTimeoutError(self, f"Connection to {self.host} timed out") from error
        except OSError as error:
            raise NewConnectionError(self, f"Failed to establish a new connection: {error}") from error


class PinnedAdapter(HTTPAdapter):
    """A requests adapter whose connections all go to one checked IP address."""

    def __init__(self, address: str):
        self.address = address
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        pinned = {"pinned_address": self.address}
        http_conn = type("PinnedHTTPConnection", (PinnedConnectionMixin, HTTPConnection), pinned)
        https_conn = type("PinnedHTTPSConnection", (PinnedConnectionMixin, HTTPSConnection), pinned)
        self.poolmanager.pool_classes_by_scheme = {
            "http": type("PinnedHTTPConnectionPool", (HTTPConnectionPool,), {"ConnectionCls": http_conn}),
            "https": type("PinnedHTTPSConnectionPool", (HTTPSConnectionPool,), {"ConnectionCls": https_conn}),
        }


def pinned_session(address: str) -> requests.Session:
    """A requests session that connects only to `address` and ignores proxy settings."""
    session = requests.Session()
    session.trust_env = False  # a proxy from the environment would bypass the address check
    adapter = PinnedAdapter(str(address))
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
