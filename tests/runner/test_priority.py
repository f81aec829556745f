"""Worker processes run below the API: every process of a pool is nicer than the process that
started it and has the lowest best-effort I/O priority, unless the settings say otherwise."""

import os
import time

import pytest

from imageactions.runner.priority import IO_CLASSES, io_priority


def settled_pids(pool, count: int) -> set[int]:
    """The pool's processes once its cluster has forked them (the command, guard, workers...)."""
    deadline = time.monotonic() + 20
    while len(pids := pool.pids()) < count and time.monotonic() < deadline:
        time.sleep(0.2)
    return pids


def test_every_process_of_a_pool_runs_at_a_lower_cpu_and_io_priority(start_workers):
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    pool = start_workers(workers=2)
    pids = settled_pids(pool, 4)
    assert len(pids) >= 4
    assert {os.getpriority(os.PRIO_PROCESS, pid) for pid in pids} == {min(19, ours + 10)}
    if io_priority(0) is None:
        pytest.skip("this machine's kernel interface for I/O priorities is not known here")
    assert {io_priority(pid) for pid in pids} == {(IO_CLASSES["best-effort"], 7)}


def test_the_priorities_are_settings(start_workers):
    ours, our_io = os.getpriority(os.PRIO_PROCESS, 0), io_priority(0)
    pool = start_workers(env={"IMAGEACTIONS_WORKER_NICENESS": "0", "IMAGEACTIONS_WORKER_IO_PRIORITY": ""})
    pids = settled_pids(pool, 4)
    assert {os.getpriority(os.PRIO_PROCESS, pid) for pid in pids} == {ours}
    assert {io_priority(pid) for pid in pids} == {our_io}
    idle = start_workers(env={"IMAGEACTIONS_WORKER_IO_PRIORITY": "idle"})
    if our_io is not None:
        assert {io_priority(pid) for pid in settled_pids(idle, 4)} == {(IO_CLASSES["idle"], 0)}
