"""What the runner adds to django-q2's Sentinel, the process of a `manage.py worker` cluster that
forks and guards its worker processes. django-q2 has no hooks for these, so its methods are
wrapped (in every process, by apps.ready; only a cluster's sentinel ever calls them):

- guard: a ticker thread runs due schedules (the reaper, purge) when they are due, not only on
  the guard loop's own scheduler tick, which comes every 30 s;
- reincarnate: the runs of a worker process seen dead are handed back at once.
"""

from __future__ import annotations

import logging
import socket
import threading

from django.conf import settings
from django.db import connections
from django.db.models import Min
from django.utils import timezone

from .maintenance import worker_died

log = logging.getLogger(__name__)

# Shortest and longest sleep of the schedule ticker between looks at the schedules.
TICK_MIN, TICK_MAX = 0.5, 30.0

# Held while the sentinel forks and while the ticker thread uses the database: a child forked
# mid-query would inherit the thread's connection and close it under the sentinel on exit.
_fork_lock = threading.Lock()


def extend_sentinel() -> None:
    from django_q.cluster import Sentinel

    if getattr(Sentinel, "extended_by_imageactions", False):
        return
    guard, reincarnate = Sentinel.guard, Sentinel.reincarnate

    def guard_with_schedule_ticker(sentinel):
        ticker = ScheduleTicker(sentinel.broker)
        ticker.start()
        try:
            guard(sentinel)
        finally:
            ticker.stop()

    def reincarnate_and_hand_back(sentinel, process):
        is_worker = process in sentinel.pool
        with _fork_lock:
            reincarnate(sentinel, process)
        if is_worker:  # not the monitor or the pusher: they run no step
            _recover_runs_of(process.pid)

    Sentinel.guard = guard_with_schedule_ticker
    Sentinel.reincarnate = reincarnate_and_hand_back
    Sentinel.extended_by_imageactions = True


def _recover_runs_of(pid: int) -> None:
    """The worker process `pid` died: its runs are recovered now, not when the reaper notices."""
    try:
        worker_died(f"{socket.gethostname()}:{pid}")
    except Exception:  # the reaper is the safety net; the sentinel must go on guarding
        log.exception("recovering the runs of dead worker %s failed", pid)
    finally:
        connections.close_all()  # the sentinel forks new workers: no connection to share


class ScheduleTicker(threading.Thread):
    """Runs django-q2's scheduler whenever one of this cluster's schedules is due.

    django-q2's guard loop calls its scheduler only every 30 s, so a reaper or purge interval
    under 30 s would not be kept. The scheduler locks the due rows and moves their next run on
    in one transaction, so the guard loop and the tickers of several clusters may all call it:
    each due run is queued once.
    """

    def __init__(self, broker):
        super().__init__(daemon=True, name="imageactions-schedule-ticker")
        self.broker = broker
        self.stopped = threading.Event()
        # Never sleep past the shortest interval: a run moves its schedule's next run to one
        # interval from its end, earlier than the minute django-q2 set when it queued it.
        self.longest_sleep = max(TICK_MIN, min(settings.REAPER_INTERVAL, settings.PURGE_INTERVAL, TICK_MAX))

    def run(self):
        sleep = 0.0
        while not self.stopped.wait(sleep):
            with _fork_lock:
                try:
                    sleep = self.tick()
                except Exception:  # the database may be away; django-q2's own tick still runs
                    log.warning("schedule ticker failed", exc_info=True)
                    sleep = self.longest_sleep
                finally:
                    connections.close_all()

    def tick(self) -> float:
        """Run the scheduler if a schedule is due; the seconds until the next one is."""
        from django_q.scheduler import scheduler

        seconds = self.seconds_to_next_run()
        if seconds is not None and seconds <= 0:
            scheduler(broker=self.broker)
            seconds = self.seconds_to_next_run()
        return self.longest_sleep if seconds is None else min(max(seconds, TICK_MIN), self.longest_sleep)

    def seconds_to_next_run(self) -> float | None:
        from django_q.conf import Conf
        from django_q.models import Schedule

        # Only the schedules given to this cluster by name (the reaper's and purge's): those
        # of no cluster are left to django-q2's own tick.
        ours = Schedule.objects.filter(cluster=Conf.CLUSTER_NAME).exclude(repeats=0)
        next_run = ours.aggregate(next_run=Min("next_run"))["next_run"]
        return None if next_run is None else (next_run - timezone.now()).total_seconds()

    def stop(self):
        self.stopped.set()
        self.join(timeout=10)
