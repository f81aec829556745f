"""What the runner adds to django-q2's Sentinel, the process of a `manage.py worker` cluster that
forks and guards its worker processes. django-q2 has no hooks for these, so four of its methods
are wrapped (in every process, by apps.ready; only a cluster's sentinel ever calls them), and
the cluster's own start:

- Cluster.start and the sentinel's start and reincarnate prepare each fork (imageactions.forking),
  so that the cluster's processes share the memory of what the command loaded;
- start: before any process is forked, SIGUSR1 (the stop request below) gets a handler that
  only records the request while the cluster stops, so every process inherits it and a stray
  SIGUSR1 kills none;
- guard: a ticker thread runs due schedules (the reaper, purge, webhook retries) when they are due, not only on
  the guard loop's own scheduler tick, which comes every 30 s;
- reincarnate: the runs of a worker process seen dead are handed back at once;
- stop (SIGTERM to the cluster's main process): each worker process is asked to stop; a running
  step may finish within STOP_GRACE seconds, else it hands itself back to the queue at its next
  progress check, and a worker still busy long after that is killed and its run recovered;
- the key of the status a cluster publishes (Stat.get_key) names the cluster's own pool.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading

from django.conf import settings
from django.db import connections
from django.db.models import Min
from django.utils import timezone

from .. import webhooks
from ..forking import prepare_to_fork
from ..pipeline.stopping import request_stop
from .maintenance import worker_died

log = logging.getLogger(__name__)

STOP_SIGNAL = signal.SIGUSR1
# A worker process that has not exited this long after its step's grace period ended ignores the
# stop request (a step stuck without progress checks): it is killed, and its run recovered.
KILL_AFTER_GRACE = 15.0
# Shortest and longest sleep of the schedule ticker between looks at the schedules.
TICK_MIN, TICK_MAX = 0.5, 30.0

# Held while the sentinel forks and while the ticker thread uses the database: a child forked
# mid-query would inherit the thread's connection and close it under the sentinel on exit.
_fork_lock = threading.Lock()
# The cluster's stop event, inherited by the processes the sentinel forks.
_cluster_stopping = None


def extend_sentinel() -> None:
    from django_q.cluster import Cluster, Sentinel
    from django_q.conf import Conf
    from django_q.status import Stat

    if getattr(Sentinel, "extended_by_imageactions", False):
        return
    start, guard, reincarnate, stop = Sentinel.start, Sentinel.guard, Sentinel.reincarnate, Sentinel.stop
    start_cluster = Cluster.start

    def fork_sentinel_sharing_memory(cluster):
        prepare_to_fork()
        return start_cluster(cluster)

    def start_taking_stop_requests(sentinel):
        global _cluster_stopping
        _cluster_stopping = sentinel.stop_event  # set by the cluster's main process on SIGTERM
        signal.signal(STOP_SIGNAL, _on_stop_request)
        prepare_to_fork()
        start(sentinel)

    def guard_with_schedule_ticker(sentinel):
        sentinel.schedule_ticker = ScheduleTicker(sentinel.broker)
        sentinel.schedule_ticker.start()
        try:
            guard(sentinel)  # its loop ends in stop(), which stops the ticker first
        finally:
            sentinel.schedule_ticker.stop()

    def reincarnate_and_hand_back(sentinel, process):
        is_worker = process in sentinel.pool
        with _fork_lock:
            prepare_to_fork()
            reincarnate(sentinel, process)
        if is_worker:  # not the monitor or the pusher: they run no step
            _recover_runs_of(process.pid)

    def stop_with_grace(sentinel):
        ticker = getattr(sentinel, "schedule_ticker", None)
        if ticker is not None:
            ticker.stop()
        workers = [process.pid for process in sentinel.pool]
        killer = OverdueWorkerKiller(workers, after=settings.STOP_GRACE + KILL_AFTER_GRACE)
        for pid in workers:
            _send(pid, STOP_SIGNAL)
        log.info("stopping: %d worker processes asked to hand back or finish their steps", len(workers))
        killer.start()
        try:
            stop(sentinel)  # django-q2 waits for every worker to end its current task
        finally:
            killer.cancel()
            for pid in killer.killed:
                _recover_runs_of(pid, how=f"was killed: its step went on {killer.after:g} s into the stop")

    # django-q2 files every cluster's status under the site's name (Conf.PREFIX, the default
    # pool's cluster), so the clusters of other pools could not be told apart (health.live_clusters).
    # Under the cluster's own name instead; the default pool's key stays what it was.
    Stat.get_key = staticmethod(lambda cluster_id: f"django_q:{Conf.CLUSTER_NAME}:cluster:{cluster_id}")
    Cluster.start = fork_sentinel_sharing_memory
    Sentinel.start = start_taking_stop_requests
    Sentinel.guard = guard_with_schedule_ticker
    Sentinel.reincarnate = reincarnate_and_hand_back
    Sentinel.stop = stop_with_grace
    Sentinel.extended_by_imageactions = True


def _on_stop_request(signum, frame) -> None:
    # A signal handler: it only records the request, and only when the cluster really stops
    # (the event lives in shared memory, and this process never waits on it), so a stray
    # SIGUSR1 neither kills a process nor turns it away from work.
    if _cluster_stopping is not None and _cluster_stopping.is_set():
        request_stop(settings.STOP_GRACE)


def _send(pid: int, signum: int) -> bool:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return False
    return True


def _recover_runs_of(pid: int, **how) -> None:
    """The worker process `pid` died: its runs are recovered now, not when the reaper notices."""
    try:
        worker_died(f"{socket.gethostname()}:{pid}", **how)
    except Exception:  # the reaper is the safety net; the sentinel must go on guarding
        log.exception("recovering the runs of dead worker %s failed", pid)
    finally:
        connections.close_all()  # the sentinel forks new workers: no connection to share


class OverdueWorkerKiller(threading.Thread):
    """Kills the worker processes still alive `after` seconds into the cluster's stop."""

    def __init__(self, pids: list[int], *, after: float):
        super().__init__(daemon=True, name="imageactions-overdue-workers")
        self.pids, self.after = pids, after
        self.cancelled = threading.Event()
        self.killed: list[int] = []

    def run(self):
        if self.cancelled.wait(self.after):
            return
        for pid in self.pids:
            if _send(pid, signal.SIGKILL):
                log.warning("stopping: worker %s ignored the stop request for %g s; killed", pid, self.after)
                self.killed.append(pid)

    def cancel(self):
        self.cancelled.set()
        self.join(timeout=5)


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
        intervals = (settings.REAPER_INTERVAL, settings.PURGE_INTERVAL, webhooks.sweep_interval())
        self.longest_sleep = max(TICK_MIN, min(*intervals, TICK_MAX))

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
