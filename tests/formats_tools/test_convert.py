"""qemu-img conversion: lossless round trips between formats, limits, and errors that keep host paths private."""

import hashlib
import os
import random
import subprocess
import time
from pathlib import Path

import pytest

from imageactions.formats.convert import (
    ConversionError,
    convert_and_reinspect,
    convert_image,
    find_qemu_img,
    qemu_format_name,
    qemu_img_info,
)

MiB, GiB = 1 << 20, 1 << 30
LIMITS = dict(timeout=60, max_memory=GiB, max_cpu_seconds=30)
IMAGE_SIZE = 64 * MiB

pytestmark = pytest.mark.skipif(
    subprocess.run(["sh", "-c", "command -v qemu-img"], capture_output=True).returncode != 0,
    reason="qemu-img is not installed (apt-get install qemu-utils)",
)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as image:
        while chunk := image.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


def write_disk_pattern(path: Path, size: int = IMAGE_SIZE) -> Path:
    """A raw disk: a boot sector, random extents, text, and holes, at unaligned offsets too."""
    rng = random.Random(4)
    with open(path, "wb") as disk:
        disk.truncate(size)
        disk.write(b"\xebc\x90" + rng.randbytes(507) + b"\x55\xaa")
        for offset in range(MiB, size - MiB, 7 * MiB + 4096 * 3 + 512):
            disk.seek(offset)
            disk.write(rng.randbytes(rng.randrange(512, 300_000)))
            disk.write(f"extent at {offset}\n".encode() * 200)
        disk.seek(size - 512)
        disk.write(b"last sector".ljust(512, b"."))
    return path


def child_qemu_img_processes() -> list[int]:
    """qemu-img processes still around as children of this test process (including zombies)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)
            name = fields[0].split("(", 1)[1]
            ppid = int(fields[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if name == "qemu-img" and ppid == os.getpid():
            found.append(int(stat.parent.name))
    return found


@pytest.fixture
def raw_disk(tmp_path) -> Path:
    return write_disk_pattern(tmp_path / "disk.raw")


def test_round_trip_through_every_format_is_lossless(raw_disk, tmp_path):
    chain = ["qcow2", "vmdk", "vhd", "vhdx", "vdi", "raw"]
    source, source_format = raw_disk, "raw"
    for target_format in chain:
        target = tmp_path / f"step-{target_format}.img"
        convert_image(source, target, src_format=source_format, dst_format=target_format, **LIMITS)
        info = qemu_img_info(target, target_format)
        assert info["format"] == qemu_format_name(target_format)
        assert info["virtual-size"] == IMAGE_SIZE, target_format
        source, source_format = target, target_format
    assert sha256(source) == sha256(raw_disk)


def test_conversion_of_an_image_created_by_qemu_img(tmp_path):
    created = tmp_path / "created.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(created), "20G"], check=True)
    target = tmp_path / "created.vhdx"
    convert_image(created, target, src_format="qcow2", dst_format="vhdx", **LIMITS)
    assert qemu_img_info(target, "vhdx")["virtual-size"] == 20 * GiB
    assert target.stat().st_size < 16 * MiB  # empty clusters stay unallocated


def test_qcow2_output_is_version_3(raw_disk, tmp_path):
    target = tmp_path / "disk.qcow2"
    convert_image(raw_disk, target, src_format="raw", dst_format="qcow2", **LIMITS)
    assert qemu_img_info(target, "qcow2")["format-specific"]["data"]["compat"] == "1.1"


def test_iso_source_is_read_as_raw_bytes(raw_disk, tmp_path):
    target = tmp_path / "disk.qcow2"
    convert_image(raw_disk, target, src_format="iso", dst_format="qcow2", **LIMITS)
    back = tmp_path / "back.raw"
    convert_image(target, back, src_format="qcow2", dst_format="raw", **LIMITS)
    assert sha256(back) == sha256(raw_disk)


def test_backing_file_named_by_a_qcow2_is_never_read(tmp_path):
    secret = tmp_path / "secret.raw"
    secret.write_bytes(b"another tenant's data " * 100_000)
    overlay = tmp_path / "overlay.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(secret), "-F", "raw", str(overlay)], check=True
    )
    target = tmp_path / "out.raw"
    convert_image(overlay, target, src_format="qcow2", dst_format="raw", **LIMITS)
    assert b"another tenant" not in target.read_bytes()
    assert "backing-filename" in qemu_img_info(overlay, "qcow2")  # reported, not opened


def test_progress_is_reported_in_percent_up_to_100(raw_disk, tmp_path):
    percents = []
    convert_image(
        raw_disk, tmp_path / "disk.vmdk", src_format="raw", dst_format="vmdk", progress=percents.append, **LIMITS
    )
    assert percents and percents == sorted(percents)
    assert percents[-1] == 100.0


def test_exception_from_progress_kills_qemu_img_and_removes_the_output(raw_disk, tmp_path):
    class Cancelled(Exception):
        pass

    def cancel(percent):
        raise Cancelled

    target = tmp_path / "disk.qcow2"
    with pytest.raises(Cancelled):
        convert_image(raw_disk, target, src_format="raw", dst_format="qcow2", progress=cancel, **LIMITS)
    assert not target.exists()
    assert child_qemu_img_processes() == []


def test_a_silent_qemu_img_still_lets_its_caller_stop_it_every_second():
    # A conversion can go a long while between two percent lines (a large image, a slow disk):
    # its step must still see a cancel or a stopping worker. `sleep` stands in for qemu-img.
    from imageactions.formats.convert import QUIET_POLL, _run_qemu_img

    class Stopped(Exception):
        pass

    def stop():
        raise Stopped

    began = time.monotonic()
    with pytest.raises(Stopped):
        _run_qemu_img(
            ["/bin/sleep", "30"], paths={}, action="wait", on_stdout=lambda chunk: None, on_quiet=stop, **LIMITS
        )
    assert time.monotonic() - began < QUIET_POLL + 2


def test_timeout_kills_qemu_img_and_removes_the_partial_output(raw_disk, tmp_path):
    target = tmp_path / "disk.vdi"
    started = time.monotonic()
    with pytest.raises(ConversionError, match=r"qemu-img took longer than the 0.001 s limit"):
        convert_image(
            raw_disk, target, src_format="raw", dst_format="vdi", timeout=0.001, max_memory=GiB, max_cpu_seconds=30
        )
    assert time.monotonic() - started < 5
    assert not target.exists()
    assert child_qemu_img_processes() == []


def test_memory_limit_applies_to_qemu_img(raw_disk, tmp_path):
    target = tmp_path / "disk.qcow2"
    with pytest.raises(ConversionError, match="memory limit") as error:
        convert_image(
            raw_disk, target, src_format="raw", dst_format="qcow2", timeout=60, max_memory=16 * MiB, max_cpu_seconds=30
        )
    assert str(tmp_path) not in str(error.value)
    assert not target.exists()


def test_missing_source_fails_without_naming_host_paths(tmp_path):
    scratch = tmp_path / "scratch" / "action-1234"
    scratch.mkdir(parents=True)
    with pytest.raises(ConversionError) as error:
        convert_image(scratch / "staged.img", scratch / "converted.img", src_format="qcow2", dst_format="raw", **LIMITS)
    message = str(error.value)
    assert message.startswith("Could not convert the image from qcow2 to raw: ")
    assert "'source'" in message and "No such file or directory" in message
    assert str(tmp_path) not in message and "staged.img" not in message and "json:" not in message


def test_source_in_the_wrong_format_fails_with_qemu_img_reason(raw_disk, tmp_path):
    with pytest.raises(ConversionError, match="Could not convert the image from qcow2 to raw: .*qcow") as error:
        convert_image(raw_disk, tmp_path / "out.raw", src_format="qcow2", dst_format="raw", **LIMITS)
    assert str(tmp_path) not in str(error.value)


def test_info_of_a_missing_file_fails_without_naming_host_paths(tmp_path):
    with pytest.raises(ConversionError, match="Could not read the vmdk image: .*'source'") as error:
        qemu_img_info(tmp_path / "missing.vmdk", "vmdk")
    assert str(tmp_path) not in str(error.value)


def test_iso_is_not_a_conversion_target(raw_disk, tmp_path):
    with pytest.raises(ConversionError, match="Images cannot be converted to iso; choose one of raw, qcow2"):
        convert_image(raw_disk, tmp_path / "out.iso", src_format="raw", dst_format="iso", **LIMITS)


def test_unknown_source_format_is_refused(raw_disk, tmp_path):
    with pytest.raises(ConversionError, match="Images cannot be converted from qed"):
        convert_image(raw_disk, tmp_path / "out.raw", src_format="qed", dst_format="raw", **LIMITS)


def test_vhd_is_qemu_vpc():
    assert qemu_format_name("vhd", target=True) == "vpc"
    assert qemu_format_name("VHD") == "vpc"


def test_output_option_values_cannot_smuggle_other_options(raw_disk, tmp_path):
    target = tmp_path / "out.qcow2"
    with pytest.raises(ConversionError, match="Invalid output option"):
        convert_image(
            raw_disk,
            target,
            src_format="raw",
            dst_format="qcow2",
            output_options={"compat": "1.1,backing_file=/etc/passwd"},
            **LIMITS,
        )
    assert not target.exists()


def test_output_options_override_the_defaults(raw_disk, tmp_path):
    target = tmp_path / "out.qcow2"
    convert_image(raw_disk, target, src_format="raw", dst_format="qcow2", output_options={"compat": "0.10"}, **LIMITS)
    assert qemu_img_info(target, "qcow2")["format-specific"]["data"]["compat"] == "0.10"


def test_missing_qemu_img_is_named_with_the_package_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConversionError, match="^qemu-img is not installed; install qemu-utils$"):
        find_qemu_img()


# -- conversion followed by inspection (needs the format inspector) --------------------


@pytest.mark.parametrize(
    ("target_format", "inspected_as"),
    [
        ("qcow2", "qcow2"),
        ("vmdk", "vmdk"),
        ("vhd", "vpc"),
        ("vhdx", "vhdx"),
        ("vdi", "vdi"),
        ("raw", "raw"),
    ],
)
def test_convert_and_reinspect_finds_the_target_format(raw_disk, tmp_path, target_format, inspected_as):
    inspection = convert_and_reinspect(
        raw_disk, tmp_path / f"out.{target_format}", src_format="raw", dst_format=target_format, **LIMITS
    )
    assert inspection.format == inspected_as
    assert inspection.virtual_size == IMAGE_SIZE


def test_raw_output_that_looks_like_another_format_is_refused(tmp_path):
    # A disk whose first bytes are a qcow2 header: as raw it is fine, but every later reader
    # that sniffs the format would open it as qcow2.
    inner = tmp_path / "inner.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(inner), "1G"], check=True)
    disk = tmp_path / "disk.vdi"
    convert_image(inner, disk, src_format="raw", dst_format="vdi", **LIMITS)
    target = tmp_path / "out.raw"
    with pytest.raises(ConversionError, match="The image converted to raw reads as a qcow2 image"):
        convert_and_reinspect(disk, target, src_format="vdi", dst_format="raw", **LIMITS)
    assert not target.exists()
