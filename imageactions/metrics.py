"""Prometheus metrics of what the service did: counters and histograms, written by every process.

Every process of a host (gunicorn's workers, each worker pool's processes) records into its
own files under METRICS_DIR, prometheus_client's multiprocess mode; a scrape of /metrics (or of
`manage.py serve_metrics` on a host without the API) adds up every file of its host, those of
exited processes included, so counters never go back while the service runs. The start-up
step points prometheus_client at that directory before any metric is touched. The gauges of
what the service holds now are imageactions.health's LiveStateCollector, added by /metrics.

Names and labels are documented in docs/deploy.md ("Monitoring"); a test checks them.
"""

from __future__ import annotations

import glob
import hmac
import os

from django.conf import settings
from prometheus_client import CollectorRegistry, Counter, Histogram, values
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
# A metrics file begins with the count of its bytes in use: a shorter file is being created.
MMAP_HEADER_BYTES = 8
if os.environ.get(MULTIPROCESS_DIR_VARIABLE) and not getattr(values.ValueClass, "_multiprocess", False):
    # prometheus_client chooses its value class when first imported, which may have been before
    # the start-up step set the directory.
    values.ValueClass = values.MultiProcessValue()

# Steps run from milliseconds (a skipped check) to hours (a conversion of a large image).
STEP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 3 * 3600, float("inf"))
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, float("inf"))

ACTIONS_CREATED = Counter("imageactions_actions_created", "Actions created.", ["action_type"])
ACTIONS_ENDED = Counter(
    "imageactions_actions_ended",
    "Actions that ended, by how (error_code is empty unless the status is failure).",
    ["action_type", "status", "error_code"],
)
STEP_DURATION = Histogram(
    "imageactions_step_duration_seconds",
    "How long one run of a step took, by how the run ended.",
    ["action_type", "step", "outcome"],
    buckets=STEP_BUCKETS,
)
BYTES_MOVED = Counter(
    "imageactions_bytes",
    "Image bytes moved: received (fetched or uploaded), stored (written to image stores), "
    "served (downloads), exported (written to export destinations).",
    ["direction"],
)
HTTP_DURATION = Histogram(
    "imageactions_http_request_duration_seconds",
    "API requests, from the first byte read to the last byte of the answer's headers.",
    ["method", "route", "status"],
    buckets=HTTP_BUCKETS,
)
WEBHOOK_DELIVERIES = Counter(
    "imageactions_webhook_deliveries",
    "Attempts at delivering webhook notifications, by outcome: delivered (a 2xx answer), failed (to be "
    "retried), given_up (the last attempt failed).",
    ["outcome"],
)
RECEIVED, STORED, SERVED, EXPORTED = "received", "stored", "served", "exported"


def action_created(action_type: str) -> None:
    ACTIONS_CREATED.labels(action_type).inc()


def action_ended(action_type: str, status: str, error_code: str = "") -> None:
    ACTIONS_ENDED.labels(action_type, status, error_code).inc()


def webhook_attempted(outcome: str) -> None:
    WEBHOOK_DELIVERIES.labels(outcome).inc()


def step_ran(action_type: str, step: str, outcome: str, seconds: float) -> None:
    STEP_DURATION.labels(action_type, step, outcome).observe(max(0.0, seconds))


def bytes_moved(direction: str, count: int) -> None:
    if count > 0:
        BYTES_MOVED.labels(direction).inc(count)


# Anything else a client sends as a method is one label: each new label would be a new series.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def request_served(method: str, route: str, status: int, seconds: float) -> None:
    HTTP_DURATION.labels(method if method in HTTP_METHODS else "other", route, str(status)).observe(seconds)


def carries_scrape_token(authorization: str | None) -> bool:
    """`Authorization: Bearer IMAGEACTIONS_METRICS_TOKEN` (never true while no token is set)."""
    token = settings.METRICS_TOKEN
    scheme, _, presented = (authorization or "").partition(" ")
    if not token or scheme.lower() != "bearer":
        return False
    # Bytes: compare_digest refuses str with non-ASCII characters, which a client may send.
    return hmac.compare_digest(presented.strip().encode("utf-8", "surrogateescape"), token.encode())


def exposition(accept: str | None, *, live_state=None) -> tuple[bytes, str]:
    """This host's metrics (and the gauges of `live_state`, a collector, when given) and their
    content type, in the format the scraper's Accept header prefers (Prometheus text or OpenMetrics)."""
    registry = CollectorRegistry()
    directory = os.environ.get(MULTIPROCESS_DIR_VARIABLE)
    if directory:
        _SettledFilesCollector(registry, path=directory)
    else:  # a process outside the service's entry points: its own metrics only
        from prometheus_client import REGISTRY

        registry = REGISTRY
    collectors = [registry, *([live_state] if live_state else [])]
    encode, content_type = choose_encoder(accept)
    return encode(_Joined(collectors)), content_type


class _SettledFilesCollector(MultiProcessCollector):
    """The processes' metrics files, but for one another process is creating this instant:
    prometheus_client creates a file empty and sizes it after, and a scrape that read it in
    between failed whole (a 500)."""

    def collect(self):
        return self.merge([path for path in glob.glob(os.path.join(self._path, "*.db")) if _sized(path)])


def _sized(path: str) -> bool:
    try:
        return os.path.getsize(path) >= MMAP_HEADER_BYTES
    except FileNotFoundError:  # the process that owned it was marked dead meanwhile
        return False


class _Joined:
    """Several collectors scraped as one."""

    def __init__(self, collectors):
        self.collectors = collectors

    def collect(self):
        for collector in self.collectors:
            yield from collector.collect()
