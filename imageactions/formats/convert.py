"""Disk-format conversion with qemu-img, run on inspected images only, under resource limits.

The source format is always given explicitly (never probed) and backing files are never opened.
"""

import json
import os
import re
import resource
import selectors
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from imageactions.formats import ImageFormatError, Inspection, inspect_image
from imageactions.sparse import HOLE_SIZE

# User-visible format name -> qemu-img driver name. An ISO is plain bytes to qemu-img.
QEMU_SOURCE_FORMATS = {
    "raw": "raw",
    "iso": "raw",
    "qcow2": "qcow2",
    "vmdk": "vmdk",
    "vhd": "vpc",
    "vpc": "vpc",
    "vhdx": "vhdx",
    "vdi": "vdi",
}
QEMU_TARGET_FORMATS = {name: driver for name, driver in QEMU_SOURCE_FORMATS.items() if name != "iso"}
# Creation options per target driver. compat=1.1 is the qcow2 v3 every current reader knows;
# force_size keeps the exact virtual size instead of rounding it to a VHD CHS geometry.
DEFAULT_OUTPUT_OPTIONS = {
    "qcow2": {"compat": "1.1"},
    "vpc": {"subformat": "dynamic", "force_size": "on"},
}
# -o is a comma-separated list: a comma or '=' in a value would smuggle in another option
# (backing_file=..., data_file=...), so keys and values are plain words.
_SAFE_OPTION = re.compile(r"^[A-Za-z0-9_.+-]+$")

# Limits for 'qemu-img info' on hostile data, as OpenStack Nova and Glance use (1 GiB, 30 s).
INFO_TIMEOUT = 60.0
INFO_MAX_MEMORY = 1 << 30
INFO_MAX_CPU_SECONDS = 30

# glibc reserves 64 MiB of address space per malloc arena, up to 8 per CPU; qemu-img's thread
# pool would spend RLIMIT_AS on reservations and fail to start threads, so two arenas.
_QEMU_IMG_ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "MALLOC_ARENA_MAX": "2"}
_STDERR_TAIL_BYTES = 4096
_STDOUT_MAX_BYTES = 16 << 20  # 'info' JSON is a few KiB; a hostile image must not make it memory
_PROGRESS = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")
# Seconds of qemu-img printing nothing after which its caller hears from it anyway (on_quiet).
QUIET_POLL = 1.0


class ConversionError(ImageFormatError):
    """qemu-img could not convert (or describe) an image; the message is safe to show users."""


class ConversionTimedOut(ConversionError):
    """qemu-img ran past its time limit and was stopped."""


def find_qemu_img() -> str:
    """The path of the qemu-img executable."""
    path = shutil.which("qemu-img")
    if path is None:
        raise ConversionError("qemu-img is not installed; install qemu-utils")
    return path


def qemu_format_name(fmt: str, *, target: bool = False) -> str:
    """The qemu-img driver for a user-visible format name ('vhd' -> 'vpc')."""
    names = QEMU_TARGET_FORMATS if target else QEMU_SOURCE_FORMATS
    try:
        return names[fmt.lower()]
    except KeyError:
        role = "converted to" if target else "converted from"
        accepted = ", ".join(name for name in names if name != "vpc")
        raise ConversionError(f"Images cannot be {role} {fmt}; choose one of {accepted}") from None


def convert_image(
    src_path,
    dst_path,
    *,
    src_format: str,
    dst_format: str,
    timeout: float,
    max_memory: int,
    max_cpu_seconds: int,
    progress: Callable[[float], None] | None = None,
    output_options: Mapping[str, str] | None = None,
    sparse: bool = True,
) -> None:
    """Convert `src_path` (in `src_format`) into a new `dst_path` in `dst_format`.

    `progress(percent)` receives qemu-img's own progress, 0.0 to 100.0. With `sparse`, zeros in a
    raw output are holes; without, every byte of it is written. On any failure, including an
    exception raised by `progress`, qemu-img is killed and `dst_path` is removed.
    """
    src_path, dst_path = Path(src_path).absolute(), Path(dst_path).absolute()
    src_driver = qemu_format_name(src_format)
    dst_driver = qemu_format_name(dst_format, target=True)
    options = _output_options(dst_driver, output_options)
    source = _source_spec(src_path, src_driver)
    # -S 0 writes every byte; formats with their own allocation tables (qcow2) stay compact.
    sparse_size = HOLE_SIZE if sparse or dst_driver != "raw" else 0
    args = [find_qemu_img(), "convert", *(["-p"] if progress else []), "-S", str(sparse_size)]
    args += ["-f", src_driver, "-O", dst_driver]
    if options:
        args += ["-o", options]
    args += [source, str(dst_path)]

    paths = {source: "source", str(src_path): "source", str(dst_path): "target"}
    parser = _ProgressParser(progress) if progress else None
    try:
        _run_qemu_img(
            args,
            timeout=timeout,
            max_memory=max_memory,
            max_cpu_seconds=max_cpu_seconds,
            paths=paths,
            action=f"convert the image from {src_format} to {dst_format}",
            on_stdout=parser.feed if parser else None,
            on_quiet=parser.repeat if parser else None,
        )
    except BaseException:
        dst_path.unlink(missing_ok=True)
        raise


def qemu_img_info(
    path,
    fmt: str,
    *,
    timeout: float = INFO_TIMEOUT,
    max_memory: int = INFO_MAX_MEMORY,
    max_cpu_seconds: int = INFO_MAX_CPU_SECONDS,
) -> dict:
    """`qemu-img info --output=json` of an image opened as `fmt`, without its backing file."""
    path = Path(path).absolute()
    driver = qemu_format_name(fmt)
    source = _source_spec(path, driver)
    stdout = _run_qemu_img(
        [find_qemu_img(), "info", "--output=json", "-f", driver, source],
        timeout=timeout,
        max_memory=max_memory,
        max_cpu_seconds=max_cpu_seconds,
        paths={source: "source", str(path): "source"},
        action=f"read the {fmt} image",
    )
    return json.loads(stdout)


def convert_and_reinspect(
    src_path,
    dst_path,
    *,
    src_format: str,
    dst_format: str,
    timeout: float,
    max_memory: int,
    max_cpu_seconds: int,
    progress: Callable[[float], None] | None = None,
    max_virtual_size: int | None = None,
    sparse: bool = True,
) -> Inspection:
    """Convert, then inspect the output as hostile data again; it must be in `dst_format`."""
    convert_image(
        src_path,
        dst_path,
        src_format=src_format,
        dst_format=dst_format,
        timeout=timeout,
        max_memory=max_memory,
        max_cpu_seconds=max_cpu_seconds,
        progress=progress,
        sparse=sparse,
    )
    target_driver = qemu_format_name(dst_format, target=True)
    # An ISO is raw bytes with a file system in them, so a raw target may read as one.
    expected = {"raw", "iso"} if target_driver == "raw" else {target_driver}
    try:
        inspection = inspect_image(dst_path, max_virtual_size=max_virtual_size)
    except ImageFormatError as exc:
        Path(dst_path).unlink(missing_ok=True)
        raise ConversionError(f"The image converted to {dst_format} failed inspection: {exc}") from exc
    if inspection.format not in expected:
        # A raw target whose first bytes look like another format (a disk holding an image
        # file at offset 0) would be taken for that format by every later reader.
        Path(dst_path).unlink(missing_ok=True)
        raise ConversionError(
            f"The image converted to {dst_format} reads as a {inspection.format} image "
            f"(its content starts like one) and was refused"
        )
    return inspection


def _source_spec(path: Path, driver: str) -> str:
    # A json: filename lets us say backing=null: a qcow2 or vmdk naming a backing file
    # (/etc/shadow, another tenant's image) would otherwise be read into the output.
    # The file protocol is explicit too, so a name like 'nbd:...' is never a network address.
    spec = {"driver": driver, "backing": None, "file": {"driver": "file", "filename": str(path)}}
    return "json:" + json.dumps(spec, separators=(",", ":"))


def _output_options(driver: str, overrides: Mapping[str, str] | None) -> str:
    options = {**DEFAULT_OUTPUT_OPTIONS.get(driver, {}), **(overrides or {})}
    for key, value in options.items():
        if not (_SAFE_OPTION.match(key) and _SAFE_OPTION.match(str(value))):
            raise ConversionError(f"Invalid output option {key}={value!r} for {driver}")
    return ",".join(f"{key}={value}" for key, value in options.items())


class _ProgressParser:
    """Turns qemu-img's `-p` output into progress(percent) calls.

    While qemu-img prints nothing (a large stretch of one percent), the last percent is reported
    again, so a caller's progress still gets to check for a cancel or a stopping worker.
    """

    def __init__(self, progress: Callable[[float], None]):
        self.progress = progress
        self.last = 0.0

    def feed(self, chunk: bytes) -> None:
        # -p redraws '    (12.34/100%)' with carriage returns.
        for match in _PROGRESS.finditer(chunk):
            percent = float(match.group(1))
            if percent != self.last:
                self.last = percent
                self.progress(percent)

    def repeat(self) -> None:
        self.progress(self.last)


def _limit_resources(max_memory: int, max_cpu_seconds: int) -> Callable[[], None]:
    def apply() -> None:
        # Runs in the child between fork and exec: only setrlimit calls, no locks or imports,
        # which is what keeps preexec_fn safe alongside threads (heartbeats) in the worker.
        resource.setrlimit(resource.RLIMIT_AS, (max_memory, max_memory))
        resource.setrlimit(resource.RLIMIT_CPU, (max_cpu_seconds, max_cpu_seconds + 1))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core dumps of hostile data

    return apply


def _run_qemu_img(
    args: list[str],
    *,
    timeout: float,
    max_memory: int,
    max_cpu_seconds: int,
    paths: Mapping[str, str],
    action: str,
    on_stdout: Callable[[bytes], None] | None = None,
    on_quiet: Callable[[], None] | None = None,
) -> bytes:
    """Run qemu-img in its own process group under the limits; its stdout, or ConversionError.

    `on_stdout` gets what it prints instead of the result; `on_quiet` is called after each
    QUIET_POLL seconds in which it printed nothing (either may raise to stop it)."""
    deadline = time.monotonic() + timeout
    process = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_QEMU_IMG_ENV,
        start_new_session=True,
        preexec_fn=_limit_resources(max_memory, max_cpu_seconds),
    )
    try:
        stdout, stderr, timed_out = _collect_output(process, deadline, on_stdout, on_quiet)
        if timed_out:
            raise ConversionTimedOut(f"Could not {action}: qemu-img took longer than the {timeout:g} s limit")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        process.stdout.close()
        process.stderr.close()
    if process.returncode != 0:
        reason = _failure_reason(process.returncode, stderr, paths, max_memory, max_cpu_seconds)
        raise ConversionError(f"Could not {action}: {reason}")
    return stdout


def _collect_output(
    process: subprocess.Popen,
    deadline: float,
    on_stdout: Callable[[bytes], None] | None,
    on_quiet: Callable[[], None] | None = None,
) -> tuple[bytes, bytes, bool]:
    """Read stdout and the tail of stderr until qemu-img exits or the deadline passes."""
    stdout, stderr = bytearray(), bytearray()
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ, stdout)
        selector.register(process.stderr, selectors.EVENT_READ, stderr)
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return bytes(stdout), bytes(stderr), True
            ready = selector.select(min(remaining, QUIET_POLL))
            if not ready and on_quiet:
                on_quiet()
            for key, _ in ready:
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fileobj)
                    key.fileobj.close()
                    continue
                if key.data is stderr:
                    stderr.extend(chunk)
                    del stderr[:-_STDERR_TAIL_BYTES]
                elif on_stdout:
                    on_stdout(chunk)  # progress lines only; nothing to keep
                elif len(stdout) + len(chunk) > _STDOUT_MAX_BYTES:
                    raise ConversionError("qemu-img printed an unreasonably long description of the image")
                else:
                    stdout.extend(chunk)
    try:
        process.wait(max(deadline - time.monotonic(), 0))
    except subprocess.TimeoutExpired:
        return bytes(stdout), bytes(stderr), True
    return bytes(stdout), bytes(stderr), False


def _failure_reason(
    returncode: int, stderr: bytes, paths: Mapping[str, str], max_memory: int, max_cpu_seconds: int
) -> str:
    if returncode == -signal.SIGXCPU:
        return f"qemu-img used more than its {max_cpu_seconds} s of CPU time"
    if returncode == -signal.SIGKILL:  # the hard CPU limit, or the kernel out of memory
        return f"qemu-img was killed after exceeding its CPU ({max_cpu_seconds} s) or memory limit"
    text = stderr.decode("utf-8", "replace")
    # Longest first: the json: spec contains the plain source path.
    for host_path in sorted(paths, key=len, reverse=True):
        text = text.replace(host_path, paths[host_path])
    for host_path in paths:
        directory = str(Path(host_path).parent)
        if not host_path.startswith("json:") and directory != "/":
            text = text.replace(directory, "<scratch>")
    lines = [line.removeprefix("qemu-img: ").strip() for line in text.splitlines() if line.strip()]
    # qemu nests its errors ("Could not open 'source': Could not open 'source': ..."); say it once.
    parts = "; ".join(lines[-3:]).split(": ")
    detail = ": ".join(part for i, part in enumerate(parts) if i == 0 or part != parts[i - 1])[-500:]
    if returncode < 0:
        detail = f"qemu-img stopped by {signal.Signals(-returncode).name}" + (f" ({detail})" if detail else "")
        if returncode == -signal.SIGABRT:
            detail += f"; it may have run out of its {max_memory >> 20} MiB memory limit"
    return detail or f"qemu-img exited with status {returncode}"
