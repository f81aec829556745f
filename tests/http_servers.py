"""Loopback HTTP servers that tests point actions at: a handler class served on 127.0.0.1 in a
thread, started and stopped by a fixture with `with Server().serving() as server:`."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


def free_port() -> int:
    """A port on 127.0.0.1 where nothing listens (for a server about to start, or for none)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens."""
    return free_port()


class LoopbackServer:
    """Serves `handler` on a free port of 127.0.0.1; the handler reaches this object as `self.owner`.

    `stopping` is set when the server stops, so an answer that is slow on purpose can give up.
    """

    def __init__(self, handler: type[LoopbackHandler]):
        self.stopping = threading.Event()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.httpd.owner = self
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    @contextmanager
    def serving(self) -> Iterator[LoopbackServer]:
        self.thread.start()
        try:
            yield self
        finally:
            self.stopping.set()
            self.httpd.shutdown()
            self.httpd.server_close()


class LoopbackHandler(BaseHTTPRequestHandler):
    """A keep-alive (HTTP/1.1) handler that does not log each request to the test output."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    @property
    def owner(self):
        return self.server.owner


class CountingRelay:
    """A TCP relay on a free port of 127.0.0.1 to `host`:`port` that counts the bytes each way:
    `sent` from its clients to the server, `received` back. Point a client at `url` to see how
    much really crossed the wire (e.g. whether a copy's bytes passed through a worker)."""

    def __init__(self, host: str, port: int):
        self.target = (host, port)
        self.sent = self.received = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    @contextmanager
    def relaying(self) -> Iterator[CountingRelay]:
        threading.Thread(target=self._accept, daemon=True).start()
        try:
            yield self
        finally:
            self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _address = self._listener.accept()
            except OSError:  # closed: the relay stopped
                return
            server = socket.create_connection(self.target)
            threading.Thread(target=self._pump, args=(client, server, "sent"), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, "received"), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, counter: str) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
                with self._lock:
                    setattr(self, counter, getattr(self, counter) + len(data))
        except OSError:
            pass
        finally:  # either side closing ends both directions
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            source.close()
