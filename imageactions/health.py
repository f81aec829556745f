"""Is the service alive, and ready to do its work? What load balancers (/healthz, /readyz),
operators (the admin's workers table) and Prometheus (the live-state gauges of /metrics) ask.

Worker pools are django-q2 clusters; each cluster's sentinel publishes its status (host, pid,
worker processes) every guard cycle with a 3-second expiry, in Redis with the Redis broker,
else in the `broker-stats` cache (a directory under DATA_DIR, shared by the processes of a
host). A pool whose status is there is alive.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from django.conf import settings
from django.db import connection
from django.db.models import Count, Min
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily

from .choices import StepState
from .models import ImageAction
from .pipeline.registry import get_action_type
from .stores import all_stores, staging_store

log = logging.getLogger(__name__)

QEMU_CHECK_SECONDS = 60  # qemu-img does not come and go: ask it at most this often


@dataclass(frozen=True)
class ClusterStatus:
    pool: str
    host: str
    pid: int
    status: str
    workers: list[int]
    seen_at: datetime


def live_clusters(pool: str) -> list[ClusterStatus]:
    """The clusters of `pool` that published their status within its 3-second expiry."""
    from django_q.brokers import get_broker
    from django_q.conf import Conf
    from django_q.signing import SignedPackage

    from .runner import cluster_of

    stat_key = f"django_q:{cluster_of(pool)}:cluster"
    broker = get_broker()
    if settings.BROKER_URL:
        packs = broker.get_stats(f"{stat_key}:*") or []
    else:  # the ORM broker keeps them in the cache, under one list of the keys of every cluster
        keys = broker.cache.get(Conf.Q_STAT) or []
        packs = [broker.cache.get(key) for key in keys if key.startswith(f"{stat_key}:")]
    clusters = []
    for pack in filter(None, packs):
        try:
            stat = SignedPackage.loads(pack)
        except Exception:  # signed with another secret key, or an older django-q2: not ours
            continue
        clusters.append(ClusterStatus(pool, stat.host, stat.pid, stat.status, list(stat.workers), stat.timestamp))
    return sorted(clusters, key=lambda cluster: (cluster.host, cluster.pid))


def queue_depth(pool: str) -> int:
    """Steps queued for `pool` and not yet taken by a worker."""
    from django_q.brokers import get_broker

    from .runner import cluster_of

    return get_broker(list_key=cluster_of(pool)).queue_size() or 0


def readiness(*, detail: bool) -> tuple[bool, dict]:
    """Every check, and whether all passed. Without `detail` (anonymous callers) only pass or
    fail per kind of check: no store, pool, host or error text."""
    results = {
        "database": _passes(_check_database),
        "broker": _passes(_check_broker),
        "qemu_img": {"ok": _qemu_img_works()},
    }
    stores = {store.name: _passes(store.exists, "readyz-probe") for store in all_stores()}
    if (staging := staging_store()) is not None:  # every step with staged bytes needs it
        stores[staging.name] = _passes(staging.exists, "readyz-probe")
    pools = {}
    for pool in settings.WORKER_POOLS:
        try:
            clusters = live_clusters(pool)
        except Exception:
            clusters = []
        pools[pool] = {
            "ok": bool(clusters),
            "clusters": len(clusters),
            "workers": sum(len(c.workers) for c in clusters),
        }
    results["stores"] = {"ok": all(check["ok"] for check in stores.values())}
    results["workers"] = {"ok": all(check["ok"] for check in pools.values())}
    if detail:
        results["stores"]["stores"] = stores
        results["workers"]["pools"] = pools
    else:
        for check in results.values():
            check.pop("error", None)
    return all(check["ok"] for check in results.values()), results


def _passes(check, *args) -> dict:
    started = time.monotonic()
    try:
        check(*args)
    except Exception as error:  # any failure makes the check fail; operators read why
        return {"ok": False, "error": str(error)[:300]}
    return {"ok": True, "seconds": round(time.monotonic() - started, 4)}


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _check_broker() -> None:
    from django_q.brokers import get_broker

    if not get_broker().ping():
        raise RuntimeError("the broker did not answer")


def _qemu_img_works() -> bool:
    return _qemu_img_check(int(time.monotonic() // QEMU_CHECK_SECONDS))


@lru_cache(maxsize=1)
def _qemu_img_check(_period: int) -> bool:
    if shutil.which("qemu-img") is None:
        return False
    try:
        return subprocess.run(["qemu-img", "--version"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class LiveStateCollector:
    """Gauges computed at scrape time from the database and the broker, the same for every
    host that is scraped (aggregate them with max, not sum). A source that cannot be read
    leaves its gauges out and sets imageactions_live_state_up{source} to 0, so an alert can
    tell "no live worker" from "nothing known"."""

    def collect(self):
        up = GaugeMetricFamily(
            "imageactions_live_state_up",
            "1 when the live-state gauges of `source` (database, broker) could be read at this scrape.",
            labels=["source"],
        )
        for source, gauges in (("database", self._from_database), ("broker", self._from_broker)):
            try:
                families = list(gauges())
            except Exception:  # down: /readyz says why; the counters of the scrape still answer
                log.warning("the %s gauges of /metrics could not be read", source, exc_info=True)
                up.add_metric([source], 0)
                continue
            up.add_metric([source], 1)
            yield from families
        yield up

    def _from_database(self):
        from .runner import stale_runs

        pending = GaugeMetricFamily(
            "imageactions_actions_pending",
            "Actions not yet ended, by type and status.",
            labels=["action_type", "status"],
        )
        rows = ImageAction.objects.pending().values("action_type", "status").annotate(count=Count("id")).order_by()
        for row in rows:
            pending.add_metric([row["action_type"], row["status"]], row["count"])
        yield pending

        now = timezone.now()
        oldest_queued = dict.fromkeys(settings.WORKER_POOLS, 0.0)
        queued = ImageAction.objects.pending().filter(step_state=StepState.QUEUED)
        for row in queued.values("action_type", "step_index").annotate(oldest=Min("queued_at")).order_by():
            action_type = get_action_type(row["action_type"])
            if action_type is None or row["step_index"] >= len(action_type.steps) or row["oldest"] is None:
                continue
            pool = action_type.steps[row["step_index"]].pool_for(action_type.name)
            oldest_queued[pool] = max(oldest_queued.get(pool, 0.0), (now - row["oldest"]).total_seconds())
        age = GaugeMetricFamily(
            "imageactions_queue_oldest_age_seconds",
            "Age of the oldest step queued for the pool (0 when none waits).",
            labels=["pool"],
        )
        for pool, seconds in oldest_queued.items():
            age.add_metric([pool], seconds)
        yield age
        yield GaugeMetricFamily(
            "imageactions_stale_runs",
            "Steps marked running whose worker sent no heartbeat for as long as the reaper waits "
            "(it recovers them at its next run; a lasting value means it does not run).",
            value=stale_runs().count(),
        )

    def _from_broker(self):
        depth = GaugeMetricFamily(
            "imageactions_queue_depth", "Steps on the broker not yet taken by a worker.", labels=["pool"]
        )
        clusters = GaugeMetricFamily(
            "imageactions_live_clusters", "Worker clusters of the pool that reported in the last 3 s.", labels=["pool"]
        )
        workers = GaugeMetricFamily(
            "imageactions_live_workers", "Worker processes of the pool's live clusters.", labels=["pool"]
        )
        for pool in settings.WORKER_POOLS:
            depth.add_metric([pool], queue_depth(pool))
            live = live_clusters(pool)
            clusters.add_metric([pool], len(live))
            workers.add_metric([pool], sum(len(cluster.workers) for cluster in live))
        yield from (depth, clusters, workers)
