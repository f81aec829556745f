"""Serve this host's metrics for Prometheus where no API runs (a host of worker pools only)."""

import logging
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from imageactions.metrics import carries_scrape_token, exposition
from imageactions.validators import whole_number

log = logging.getLogger(__name__)


class Command(BaseCommand):
    help = (
        "Serve GET /metrics with the counters and histograms of this host's processes (the "
        "queue and worker gauges come from any API host's /metrics). With IMAGEACTIONS_METRICS_TOKEN "
        "set, a scrape must send it as `Authorization: Bearer ...`."
    )

    def add_arguments(self, parser):
        parser.add_argument("--bind", default="127.0.0.1:9464", help="HOST:PORT to listen on (default %(default)s).")

    def handle(self, bind, **options):
        host, _, port = bind.rpartition(":")
        if not host or whole_number(port, max_digits=5) is None:
            raise CommandError(f"--bind takes HOST:PORT; got {bind!r}")
        if not settings.METRICS_TOKEN and host.strip("[]") not in ("127.0.0.1", "::1", "localhost"):
            raise CommandError(
                "Set IMAGEACTIONS_METRICS_TOKEN before listening beyond loopback: anyone who reaches the port "
                "could read the metrics."
            )
        server = ThreadingHTTPServer((host.strip("[]"), int(port)), MetricsHandler)
        log.info("serving this host's metrics on http://%s/metrics", bind)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()


class MetricsHandler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path.split("?")[0] != "/metrics":
            self._answer(404, b"Not found; the metrics are at /metrics\n", "text/plain")
            return
        if settings.METRICS_TOKEN and not carries_scrape_token(self.headers.get("Authorization")):
            self._answer(401, b"A scrape must send Authorization: Bearer IMAGEACTIONS_METRICS_TOKEN\n", "text/plain")
            return
        self._answer(200, *exposition(self.headers.get("Accept")))

    def _answer(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass  # a scrape every few seconds is not news
