"""Serve Keystone's WSGI application on 127.0.0.1:PORT with threads (run by Keystone's own venv).

Keystone's configuration (oslo.config) parses sys.argv, so the port is taken and argv emptied
before Keystone is imported; its config file comes from OS_KEYSTONE_CONFIG_FILES.
"""

import sys
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

port = int(sys.argv[1])
sys.argv = sys.argv[:1]

from keystone.server.wsgi import initialize_public_application  # noqa: E402


class ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # Keystone logs to its own file
        pass


make_server("127.0.0.1", port, initialize_public_application(), ThreadingServer, QuietHandler).serve_forever()
