"""The ORM broker of the embedded profile, woken when a step is queued instead of polling fast.

django-q2's ORM broker has its pusher query the database every `poll` seconds for new tasks:
each hand-over between steps waits up to one poll, and an idle worker still queries many times a
second. Here the pusher of each cluster listens on a Unix datagram socket under
DATA_DIR/wakeup/<queue>/, one per pusher process, and whoever queues a task (an API process,
a worker handing over, the reaper) sends a byte to every socket of that queue once the task's row
is committed. The pusher waits on its socket for at most BROKER_POLL seconds, so a missed or lost
wake-up (a pusher on another host, a directory it cannot write) costs latency, never a task.
"""

from __future__ import annotations

import hashlib
import logging
import os
import select
import socket
from pathlib import Path

from django.conf import settings
from django.db import InterfaceError, OperationalError, connections, transaction
from django.utils import timezone
from django_q.brokers.orm import ORM
from django_q.conf import Conf
from django_q.models import OrmQ

log = logging.getLogger(__name__)

_WAKE = b"!"
# Sockets are named after their host too: a data directory shared by hosts (a network file
# system) holds sockets no other host can reach, and a pid says nothing across hosts. Short,
# because a socket's path may be at most 107 bytes.
HOST = hashlib.blake2s(socket.gethostname().encode(), digest_size=4).hexdigest()


class WakeupChannel:
    """The wake-up sockets of one queue: each pusher listens on its own, notify() writes to all."""

    def __init__(self, queue: str):
        self.directory = Path(settings.DATA_DIR) / "wakeup" / queue
        self.listener: socket.socket | None = None
        self.listener_pid: int | None = None

    def notify(self) -> None:
        """Wake every pusher listening on this queue; a gone pusher's socket is removed."""
        try:
            paths = list(self.directory.glob(f"{HOST}-*.sock"))
        except OSError:
            return
        if not paths:
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.setblocking(False)
            for path in paths:
                try:
                    sender.sendto(_WAKE, str(path))
                except BlockingIOError:
                    pass  # its buffer is full of wake-ups it has not read yet: it is awake anyway
                except (ConnectionRefusedError, FileNotFoundError):
                    _remove(path)  # left by a pusher that died
                except OSError as error:
                    log.debug("could not wake the pusher at %s: %s", path, error)

    def wait(self, seconds: float) -> None:
        """Sleep until a wake-up arrives or `seconds` pass; without a socket, just sleep."""
        listener = self._listener()
        if listener is None:
            select.select([], [], [], seconds)
            return
        readable, _, _ = select.select([listener], [], [], seconds)
        if readable:
            self.drain()

    def drain(self) -> None:
        """Forget the wake-ups received so far (the next look at the queue sees their tasks)."""
        listener = self._listener()
        if listener is None:
            return
        try:
            while listener.recv(64):
                pass
        except BlockingIOError:
            pass

    def _listener(self) -> socket.socket | None:
        # Bound in the process that waits (the pusher, forked by the sentinel), once per process.
        if self.listener_pid == os.getpid():
            return self.listener
        self.listener_pid, self.listener = os.getpid(), None
        path = self.directory / f"{HOST}-{os.getpid()}.sock"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            _remove(path)  # a socket of an earlier process that had this pid
            listener.bind(str(path))
        except OSError as error:
            listener.close()
            log.warning(
                "no wake-up socket at %s (%s): the worker looks for new steps every %g s instead",
                path,
                error,
                settings.BROKER_POLL,
            )
            return None
        listener.setblocking(False)
        self.listener = listener
        return listener


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as error:
        log.debug("could not remove the wake-up socket %s: %s", path, error)


class WakeableORM(ORM):
    """django-q2's ORM broker whose pusher waits on its queue's WakeupChannel between looks."""

    def __init__(self, list_key: str = None):
        super().__init__(list_key=list_key)
        self.channel = WakeupChannel(self.list_key)

    def get_connection(self, list_key: str = None):
        # django-q2 closes the process's old connections before each use of the queue, and with
        # CONN_MAX_AGE 0 (SQLite's) every connection is old: an API request queueing a step
        # reconnected twice mid-request, the pusher once per look. Only the pusher holds its
        # connection for long; dequeue looks after it.
        return OrmQ.objects.using(Conf.ORM)

    def enqueue(self, task):
        task_id = super().enqueue(task)
        # After the commit: a pusher woken earlier would not see the row, and sleep again.
        transaction.on_commit(self.channel.notify, using=Conf.ORM)
        return task_id

    def dequeue(self):
        # Wake-ups that arrive from here on are for tasks the query below may not see yet.
        self.channel.drain()
        connection = connections[Conf.ORM]
        # A PostgreSQL connection gets Django's age limit and health check, as django-q2 does;
        # SQLite's (no age limit: a file does not go stale) is only dropped after an error.
        if connection.errors_occurred or connection.settings_dict["CONN_MAX_AGE"]:
            connection.close_if_unusable_or_obsolete()
        try:
            tasks = self._take_due_tasks()
        except (OperationalError, InterfaceError) as error:
            # The database restarted or went away: look again after a poll, on a new connection,
            # instead of letting django-q2 restart the pusher after ten seconds.
            log.warning("the queue could not be read (%s); trying again", error)
            connection.close()
            tasks = []
        if not tasks:
            self.channel.wait(settings.BROKER_POLL)
        return tasks

    def _take_due_tasks(self) -> list:
        """Lock up to BULK due tasks of the queue for this cluster: [(id, payload)]."""
        queue = self.get_connection()
        taken = []
        for task in queue.filter(key=self.list_key, lock__lt=timezone.now())[: Conf.BULK]:
            # Clusters of one queue race for a task: only the update that still sees its old lock wins.
            if queue.filter(id=task.id, lock=task.lock).update(lock=self.timeout(task)):
                taken.append((task.pk, task.payload))
        return taken
