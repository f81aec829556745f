"""Worker processes below the API: a CPU niceness and an I/O priority, set once in the process
that starts a pool and inherited by every process of it, so imports never starve serving."""

from __future__ import annotations

import ctypes
import os
import platform

# ioprio_set(2): who is a process, the class sits above 13 bits of level (0 highest, 7 lowest).
_IOPRIO_WHO_PROCESS = 1
_IOPRIO_CLASS_SHIFT = 13
IO_CLASSES = {"best-effort": 2, "idle": 3}
_LOWEST_LEVEL = 7
_SYSCALLS = {"x86_64": (251, 252), "aarch64": (30, 31)}  # (ioprio_set, ioprio_get)


def lower_priority(niceness: int, io_class: str) -> list[str]:
    """Make this process (and what it starts) `niceness` nicer and give it the I/O class
    `io_class` ("" leaves it); the words of what could not be done, for a warning."""
    problems = []
    if niceness:
        try:
            os.nice(niceness)
        except OSError as error:
            problems.append(f"could not lower the CPU priority by {niceness}: {error}")
    if io_class:
        level = _LOWEST_LEVEL if io_class == "best-effort" else 0
        if not set_io_priority(0, IO_CLASSES[io_class], level):
            problems.append(f"could not set the I/O priority class {io_class} (not supported here)")
    return problems


def set_io_priority(pid: int, io_class: int, level: int) -> bool:
    numbers = _SYSCALLS.get(platform.machine())
    if numbers is None:
        return False
    value = (io_class << _IOPRIO_CLASS_SHIFT) | level
    return _libc().syscall(numbers[0], _IOPRIO_WHO_PROCESS, pid, value) == 0


def io_priority(pid: int) -> tuple[int, int] | None:
    """(class, level) of process `pid`, or None where it cannot be read."""
    numbers = _SYSCALLS.get(platform.machine())
    if numbers is None:
        return None
    value = _libc().syscall(numbers[1], _IOPRIO_WHO_PROCESS, pid)
    if value < 0:
        return None
    return value >> _IOPRIO_CLASS_SHIFT, value & ((1 << _IOPRIO_CLASS_SHIFT) - 1)


def _libc():
    return ctypes.CDLL(None, use_errno=True)
