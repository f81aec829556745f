"""Waking the worker when a step is queued (runner.wakeup): an idle worker waits long between
looks at the queue, yet a step queued meanwhile starts at once; without its wake-up socket it
falls back to looking every IMAGEACTIONS_BROKER_POLL seconds, without errors."""

import shutil
import time
from pathlib import Path

import pytest
from django.conf import settings

from imageactions.runner import cluster_of
from tests.conftest import wait_for_action
from tests.runner.conftest import create_test_action

orm_broker_only = pytest.mark.skipif(bool(settings.BROKER_URL), reason="the Redis broker blocks; it needs no wake-up")


def wakeup_dir() -> Path:
    return settings.DATA_DIR / "wakeup" / cluster_of(settings.DEFAULT_POOL)


def wait_until_listening(timeout: float = 30) -> Path:
    """The socket of the started pool's pusher, once it is there (it then waits on it)."""
    deadline = time.monotonic() + timeout
    while not (sockets := list(wakeup_dir().glob("*.sock"))):
        assert time.monotonic() < deadline, f"no pusher listens in {wakeup_dir()} after {timeout} s"
        time.sleep(0.1)
    return sockets[0]


@pytest.fixture
def fresh_wakeup_dir():
    """No sockets of pools started by earlier tests (they are gone: their notify would only remove them)."""
    shutil.rmtree(wakeup_dir(), ignore_errors=True)
    yield wakeup_dir()
    if wakeup_dir().is_file():
        wakeup_dir().unlink()


def voluntary_switches(pids) -> int:
    """How often the threads of these processes went to sleep (a wait, a poll's sleep) so far."""
    total = 0
    for pid in pids:
        for status in Path(f"/proc/{pid}/task").glob("*/status"):
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("voluntary_ctxt_switches:"):
                        total += int(line.split()[1])
            except OSError:
                pass  # the thread ended meanwhile
    return total


@orm_broker_only
def test_steps_queued_while_the_worker_idles_start_without_waiting_for_its_poll(alice, start_workers, fresh_wakeup_dir):
    # A 30 s poll: each of the three steps would wait for it without a wake-up.
    workers = start_workers(env={"IMAGEACTIONS_BROKER_POLL": "30"})
    wait_until_listening()
    time.sleep(1)  # its first look found nothing: it now sleeps its 30 s
    action = wait_for_action(create_test_action(alice), timeout=15, workers=workers)
    assert action.status == "success", action.message
    assert action.result["steps_ran"] == ["prepare", "work", "wrap"]


@orm_broker_only
@pytest.mark.parametrize("fault", ["socket removed", "directory unusable"])
def test_without_its_wakeup_socket_the_worker_polls_without_errors(alice, start_workers, fresh_wakeup_dir, fault):
    if fault == "directory unusable":
        fresh_wakeup_dir.parent.mkdir(parents=True, exist_ok=True)
        fresh_wakeup_dir.write_text("not a directory")
    workers = start_workers(env={"IMAGEACTIONS_BROKER_POLL": "0.5"})
    if fault == "socket removed":
        wait_until_listening().unlink()
    else:
        time.sleep(3)  # the pusher has tried to listen, and fallen back to polling
    action_id = create_test_action(alice)  # the API process finds no one to wake
    action = wait_for_action(action_id, timeout=30, workers=workers)
    assert action.status == "success", action.message
    log = workers.log_tail(400)
    assert "Traceback" not in log and "ERROR" not in log, log
    if fault == "directory unusable":
        assert "no wake-up socket at" in log, log


def test_an_idle_worker_rarely_wakes_up(start_workers):
    # The reaper at its default interval: the tests' 4 s would have it run during the count.
    workers = start_workers(env={"IMAGEACTIONS_REAPER_INTERVAL": "60"})
    # The command, the sentinel, two worker processes, the monitor and the pusher.
    deadline = time.monotonic() + 30
    while len(pids := workers.pids()) < 6:
        assert time.monotonic() < deadline, f"the cluster has only {len(pids)} processes after 30 s"
        time.sleep(0.2)
    time.sleep(4)  # past the start-up and its first schedule runs
    # The guard's 0.5 s cycle, the pusher's look at the queue each BROKER_POLL (1 s) and the
    # schedule ticker's: about 4 a second; the old 50 ms poll alone made 20 in every second.
    # On a loaded machine a slow start-up or a schedule run can fall into one count, so the
    # quietest of up to four 3-second counts is the idle figure.
    rates = []
    for _ in range(4):
        before, began = voluntary_switches(pids), time.monotonic()
        time.sleep(3)
        rates.append((voluntary_switches(pids) - before) / (time.monotonic() - began))
        if rates[-1] <= 8:
            break
    rounded = [round(rate, 1) for rate in rates]
    assert min(rates) <= 8, f"the idle cluster's {len(pids)} processes woke {rounded} times a second"
