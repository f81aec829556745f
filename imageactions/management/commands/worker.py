"""Start a django-q2 worker cluster for one pool (default: the default pool)."""

import os
import signal
import sys

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Run the workers of one pool (a django-q2 cluster); also ensures the reaper and purge schedules."

    def add_arguments(self, parser):
        parser.add_argument(
            "--pool", default=settings.DEFAULT_POOL, help=f"One of: {', '.join(settings.WORKER_POOLS)}."
        )
        parser.add_argument("--workers", type=int, help="Worker processes (default IMAGEACTIONS_WORKERS).")

    def handle(self, pool, workers, **options):
        from imageactions.runner import cluster_of, ensure_schedules, sweep_scratch

        if pool not in settings.WORKER_POOLS:
            raise CommandError(f"Unknown pool {pool!r}; configured pools: {', '.join(settings.WORKER_POOLS)}.")
        ensure_schedules()
        sweep_scratch(throttled=False)  # caches of actions that ended on other hosts while this one was down
        env = dict(os.environ)
        # django-q2 picks its cluster from Q_CLUSTER_NAME when its configuration is first read,
        # so the cluster runs in a fresh process with the variable set.
        if pool != settings.DEFAULT_POOL:
            env["Q_CLUSTER_NAME"] = cluster_of(pool)
        if workers:
            env["IMAGEACTIONS_WORKERS"] = str(workers)
        # The cluster asks its worker processes to stop with SIGUSR1 (see runner.sentinel); an
        # ignored signal stays ignored across exec, so one that reaches any process of the
        # cluster before it takes the signal up never kills it.
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        from imageactions.runner.priority import lower_priority

        for problem in lower_priority(settings.WORKER_NICENESS, settings.WORKER_IO_PRIORITY):
            self.stderr.write(f"WARNING: {problem}; the workers run at the priority they were started with.")
        manage = os.path.join(settings.BASE_DIR, "manage.py")
        os.execve(sys.executable, [sys.executable, manage, "qcluster"], env)
