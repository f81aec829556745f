"""The format inspector on real images made by qemu-img and xorriso, and on hostile ones."""

import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

import imageactions.formats
from imageactions.formats import (
    DISK_FORMATS,
    FormatMismatchError,
    ImageFormatError,
    Inspection,
    MalformedImageError,
    NotADiskImageError,
    UnsafeImageError,
    inspect_image,
)
from imageactions.formats.inspect import inspect_open_image
from imageactions.formats.reader import MAX_BYTES_READ, ImageReader

from .conftest import IMAGE_SIZE, GiB, MiB, TiB, copy_image, patch, read_at, run

REAL_IMAGES = (
    "v2.qcow2",
    "v3.qcow2",
    "v3-4k-clusters.qcow2",
    "v3-zstd.qcow2",
    "v3-extended-l2.qcow2",
    "monolithic-sparse.vmdk",
    "stream-optimized.vmdk",
    "fixed.vhd",
    "dynamic.vhd",
    "forced-size.vhd",
    "disk.vhdx",
    "dynamic.vdi",
    "fixed.vdi",
    "disk.raw",
    "mbr.raw",
    "gpt.raw",
    "plain.iso",
    "hybrid.iso",
)


def refusal(path, **options) -> ImageFormatError:
    with pytest.raises(ImageFormatError) as caught:
        inspect_image(path, **options)
    return caught.value


def assert_refused(path, error_class, *fragments, **options) -> str:
    error = refusal(path, **options)
    assert type(error) is error_class, f"{type(error).__name__}: {error}"
    message = str(error)
    for fragment in fragments:
        assert fragment in message
    return message


# -- the public surface -----------------------------------------------------------------


def test_public_surface_is_exactly_the_documented_names():
    assert sorted(imageactions.formats.__all__) == sorted(
        [
            "DISK_FORMATS",
            "FormatMismatchError",
            "ImageFormatError",
            "Inspection",
            "MalformedImageError",
            "NotADiskImageError",
            "UnsafeImageError",
            "inspect_image",
            "normalise_declared_format",
            "sniff_format",
        ]
    )
    assert DISK_FORMATS == ("raw", "qcow2", "vmdk", "vpc", "vhdx", "vdi", "iso")
    for error_class in (NotADiskImageError, UnsafeImageError, MalformedImageError):
        assert issubclass(error_class, ImageFormatError)


def test_the_package_imports_without_django():
    code = "import sys, imageactions.formats; assert not any(m.startswith('django') for m in sys.modules)"
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, env={"PYTHONPATH": str(root)})


def test_inspection_is_immutable():
    inspection = Inspection("raw", 1, {})
    with pytest.raises(AttributeError):
        inspection.format = "qcow2"


# -- real images --------------------------------------------------------------------------


@pytest.mark.parametrize("name", REAL_IMAGES)
def test_real_image_is_detected_with_the_virtual_size_qemu_reports(real_images, name):
    image = real_images[name]
    assert inspect_image(image.path) == Inspection(image.format, image.virtual_size, image.details)


@pytest.mark.parametrize("name", REAL_IMAGES)
def test_the_first_64_kib_of_a_real_image_tell_its_format_but_a_vhd_with_only_an_end_footer(real_images, name):
    image = real_images[name]
    head = image.path.read_bytes()[: 64 * 1024]
    # A fixed VHD keeps its only footer at the end: from the head alone it is raw.
    expected = "raw" if name.endswith("fixed.vhd") else image.format
    assert imageactions.formats.sniff_format(head) == expected


def test_sniffing_refuses_what_detection_refuses():
    with pytest.raises(NotADiskImageError):
        imageactions.formats.sniff_format(b"")
    with pytest.raises(NotADiskImageError):
        imageactions.formats.sniff_format(b"#!/bin/sh\necho not a disk\n" * 100)


@pytest.mark.parametrize(
    "name", [name for name in REAL_IMAGES if not name.endswith((".iso", "fixed.vhd", "dynamic.vhd"))]
)
def test_real_image_has_the_virtual_size_qemu_img_was_given(real_images, name):
    assert inspect_image(real_images[name].path).virtual_size == IMAGE_SIZE


def test_vhd_made_by_qemu_is_sized_by_its_chs_geometry_as_qemu_reads_it(real_images):
    # qemu-img rounds a VHD up to whole cylinders unless force_size is set.
    inspection = inspect_image(real_images["dynamic.vhd"].path)
    assert IMAGE_SIZE <= inspection.virtual_size < IMAGE_SIZE + MiB


def test_iso_virtual_size_is_the_file_size(real_images):
    image = real_images["plain.iso"]
    assert inspect_image(image.path).virtual_size == image.path.stat().st_size


@pytest.mark.parametrize("name", REAL_IMAGES)
def test_real_image_passes_when_declared_as_its_own_format(real_images, name):
    image = real_images[name]
    assert inspect_image(image.path, declared_format=image.format).format == image.format


@pytest.mark.parametrize("declared", ["vhd", "VHD", "vpc", " Vpc "])
def test_vhd_is_a_synonym_of_vpc_for_the_declared_format(real_images, declared):
    assert inspect_image(real_images["dynamic.vhd"].path, declared_format=declared).format == "vpc"


def test_binary_data_without_any_signature_is_raw(image_dir):
    path = image_dir / "noise.raw"
    path.write_bytes(bytes((index * 131 + 7) % 251 for index in range(256 * 1024)))
    assert inspect_image(path) == Inspection("raw", 256 * 1024, {"partition_table": None})


def test_a_single_zero_byte_is_raw(image_dir):
    path = image_dir / "zero.raw"
    path.write_bytes(b"\0")
    assert inspect_image(path).format == "raw"


# -- declared format ----------------------------------------------------------------------


def test_qcow2_declared_as_raw_is_refused_naming_qcow2(real_images):
    assert_refused(
        real_images["v3.qcow2"].path,
        FormatMismatchError,
        "The image was declared as raw but its data is a qcow2 image",
        declared_format="raw",
    )


def test_raw_disk_with_a_qcow2_header_declared_as_raw_is_refused(hostile_images):
    assert_refused(
        hostile_images["raw-with-qcow2-header.raw"],
        FormatMismatchError,
        "The image was declared as raw but its data is a qcow2 image",
        declared_format="raw",
    )


@pytest.mark.parametrize(
    ("name", "found"),
    [
        ("monolithic-sparse.vmdk", "a vmdk image"),
        ("fixed.vhd", "a vpc image"),
        ("dynamic.vhd", "a vpc image"),
        ("disk.vhdx", "a vhdx image"),
        ("dynamic.vdi", "a vdi image"),
        ("plain.iso", "an iso image"),
    ],
)
def test_other_formats_declared_as_raw_are_refused_naming_the_format_found(real_images, name, found):
    assert_refused(
        real_images[name].path,
        FormatMismatchError,
        f"The image was declared as raw but its data is {found}",
        declared_format="raw",
    )


def test_data_qemu_would_probe_as_a_vmdk_descriptor_is_refused_when_declared_raw(hostile_images):
    assert_refused(
        hostile_images["qemu-probes-as-vmdk.raw"],
        FormatMismatchError,
        "declared as raw but its data is a vmdk image",
        declared_format="raw",
    )


def test_declared_format_that_differs_names_both_formats(real_images):
    assert_refused(
        real_images["v3.qcow2"].path,
        FormatMismatchError,
        "The image was declared as vmdk but its data is a qcow2 image",
        declared_format="vmdk",
    )


def test_raw_data_declared_as_qcow2_says_it_has_no_header(real_images):
    assert_refused(
        real_images["disk.raw"].path,
        FormatMismatchError,
        "declared as qcow2 but its data is raw data with no disk-format header",
        declared_format="qcow2",
    )


def test_unknown_declared_format_is_refused_naming_it(real_images):
    error = refusal(real_images["disk.raw"].path, declared_format="ploop")
    assert type(error) is ImageFormatError
    assert "'ploop'" in str(error) and "qcow2" in str(error)


# -- size cap -------------------------------------------------------------------------------


def test_virtual_size_above_the_cap_is_refused_naming_size_and_cap(hostile_images):
    assert_refused(
        hostile_images["one-tebibyte.qcow2"],
        UnsafeImageError,
        "1 TiB (1099511627776 bytes)",
        "100 GiB",
        max_virtual_size=100 * GiB,
    )


def test_virtual_size_equal_to_the_cap_passes(hostile_images):
    assert inspect_image(hostile_images["one-tebibyte.qcow2"], max_virtual_size=TiB).virtual_size == TiB


def test_raw_file_size_counts_against_the_cap(real_images):
    assert_refused(real_images["disk.raw"].path, UnsafeImageError, "64 MiB", "32 MiB", max_virtual_size=32 * MiB)


def test_stream_optimized_vmdk_takes_its_capacity_from_the_footer(hostile_images):
    assert inspect_image(hostile_images["gd-at-end.vmdk"]) == Inspection(
        "vmdk", IMAGE_SIZE, {"subformat": "streamOptimized"}
    )


def test_stream_optimized_vmdk_footer_capacity_counts_against_the_cap(hostile_images):
    # qemu takes the capacity from the footer's header copy, not from the first header.
    assert_refused(hostile_images["footer-capacity-512t.vmdk"], UnsafeImageError, "512 TiB", max_virtual_size=TiB)


# -- hostile qcow2 ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "error_class", "fragments"),
    [
        ("backing-passwd.qcow2", UnsafeImageError, ["backing file ('/etc/passwd')"]),
        ("data-file.qcow2", UnsafeImageError, ["external data file", "data-file.raw"]),
        ("data-file-bit-only.qcow2", UnsafeImageError, ["external data file"]),
        ("data-file-extension-only.qcow2", UnsafeImageError, ["external data file", "data-file.raw"]),
        ("unknown-feature-bit-5.qcow2", UnsafeImageError, ["incompatible features", "bits 5"]),
        ("unknown-feature-bit-63.qcow2", UnsafeImageError, ["incompatible features", "bits 63"]),
        ("corrupt.qcow2", MalformedImageError, ["marked corrupt"]),
        ("luks-encrypted.qcow2", UnsafeImageError, ["encrypted (LUKS)"]),
        ("aes-encrypted.qcow2", UnsafeImageError, ["encrypted (AES)"]),
        ("crypto-extension-only.qcow2", UnsafeImageError, ["is encrypted"]),
        ("cluster-bits-8.qcow2", MalformedImageError, ["cluster_bits 8"]),
        ("cluster-bits-22.qcow2", MalformedImageError, ["cluster_bits 22"]),
        ("header-length-100.qcow2", MalformedImageError, ["header_length is 100"]),
        ("header-length-1m.qcow2", MalformedImageError, ["header_length is 1048576"]),
        ("size-2-63.qcow2", MalformedImageError, ["beyond 2^63"]),
        ("l1-beyond-file.qcow2", MalformedImageError, ["L1 table", "beyond the end of the file"]),
        ("refcount-unaligned.qcow2", MalformedImageError, ["reference count table offset 65537"]),
        ("version-7.qcow2", MalformedImageError, ["version 7"]),
        ("qcow-version-1.qcow2", UnsafeImageError, ["qcow format (version 1)"]),
    ],
)
def test_hostile_qcow2_is_refused_naming_the_problem(hostile_images, name, error_class, fragments):
    assert_refused(hostile_images[name], error_class, *fragments)


def test_qcow2_backing_file_is_refused_even_when_declared_qcow2(hostile_images):
    assert_refused(hostile_images["backing-passwd.qcow2"], UnsafeImageError, "/etc/passwd", declared_format="qcow2")


def test_control_characters_in_a_backing_file_name_are_escaped_in_the_message(hostile_images, image_dir):
    path = copy_image(hostile_images["backing-passwd.qcow2"], image_dir / "backing-escape.qcow2")
    offset, length = struct.unpack(">QI", read_at(path, 8, 12))
    patch(path, offset, b"/e\x1b[2Jc\npwd"[:length].ljust(length, b"x"))
    message = assert_refused(path, UnsafeImageError, "backing file", "\\x1b", "\\n")
    assert "\x1b" not in message and "\n" not in message


# -- hostile vmdk -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "error_class", "fragments"),
    [
        ("descriptor-shadow.vmdk", UnsafeImageError, ["descriptor file", "'/etc/shadow'"]),
        ("second-extent.vmdk", UnsafeImageError, ["2 extents", "'/etc/shadow'"]),
        ("extent-elsewhere.vmdk", UnsafeImageError, ["SPARSE '/etc/shadow'"]),
        ("flat-extent.vmdk", UnsafeImageError, ["FLAT 'disk-flat.vmdk'"]),
        ("parent-hint.vmdk", UnsafeImageError, ["parent image ('/etc/shadow')"]),
        ("two-gb-extents.vmdk", UnsafeImageError, ["createType 'twoGbMaxExtentSparse'"]),
        ("garbage-line.vmdk", MalformedImageError, ["'this is not a descriptor line'"]),
        ("capacity-0.vmdk", UnsafeImageError, ["capacity of 0"]),
        ("cowd.vmdk", UnsafeImageError, ["COWD"]),
        ("qemu-probes-as-vmdk.raw", UnsafeImageError, ["descriptor file"]),
    ],
)
def test_hostile_vmdk_is_refused_naming_the_problem(hostile_images, name, error_class, fragments):
    assert_refused(hostile_images[name], error_class, *fragments)


def test_vmdk_descriptor_file_is_refused_whatever_the_declared_format(hostile_images):
    assert_refused(hostile_images["descriptor-shadow.vmdk"], UnsafeImageError, "/etc/shadow", declared_format="vmdk")
    assert_refused(
        hostile_images["descriptor-shadow.vmdk"],
        FormatMismatchError,
        "declared as raw but its data is a vmdk image",
        declared_format="raw",
    )


# -- hostile vpc, vhdx, vdi ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fragments"),
    [
        ("differencing.vhd", ["differencing disk", "'C:\\disks\\parent.vhd'"]),
        ("differencing.vhdx", ["differencing disk"]),
        ("linked.vdi", ["differencing image"]),
        ("differencing.vdi", ["differencing image"]),
    ],
)
def test_disks_that_need_a_parent_are_refused(hostile_images, name, fragments):
    assert_refused(hostile_images[name], UnsafeImageError, *fragments)


# -- truncated uploads --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "what"),
    [
        ("truncated-50.qcow2", "qcow2 header"),
        ("truncated-90.qcow2", "qcow2 version 3 header"),
        ("truncated-64k.qcow2", "qcow2 reference count table"),
        ("truncated-300.vmdk", "vmdk sparse extent header"),
        ("truncated-16k.vmdk", "vmdk file is truncated"),
        ("truncated-footer.vmdk", "streamOptimized vmdk has no valid footer"),
        ("truncated-700.vhd", "VHD dynamic disk header"),
        ("truncated-100k.vhdx", "VHDX header"),
        ("truncated-2m.vhdx", "VHDX region"),
        ("truncated-200.vdi", "VDI header"),
        ("truncated-1m.vdi", "VDI image"),
        ("truncated-0x8100.iso", "ISO image"),
        ("truncated-64k.iso", "ISO image"),
    ],
)
def test_truncated_images_are_malformed_and_say_the_upload_may_be_incomplete(hostile_images, name, what):
    assert_refused(hostile_images[name], MalformedImageError, what, "incomplete")


# -- one file, two formats; formats not accepted ------------------------------------------------


def test_iso_with_a_qcow2_header_in_its_system_area_is_refused(hostile_images):
    assert_refused(
        hostile_images["iso-with-qcow2-header.iso"], UnsafeImageError, "several disk formats (iso and qcow2)"
    )


def test_qcow2_ending_with_a_vhd_footer_is_refused(hostile_images):
    assert_refused(hostile_images["qcow2-with-vhd-footer.qcow2"], UnsafeImageError, "(qcow2 and vpc)")


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("disk.qed", "QED disk image"),
        ("disk.luks", "LUKS-encrypted disk image"),
    ],
)
def test_disk_formats_that_are_not_accepted_are_refused_naming_them(hostile_images, name, fragment):
    assert_refused(hostile_images[name], UnsafeImageError, fragment, "not accepted")


# -- partition tables -------------------------------------------------------------------------


def test_gpt_with_a_damaged_header_is_malformed(real_images, image_dir):
    path = copy_image(real_images["gpt.raw"].path, image_dir / "damaged-gpt.raw")
    patch(path, 512 + 12, struct.pack("<I", 10))  # HeaderSize
    assert_refused(path, MalformedImageError, "GPT header", "header size 10")


def test_filesystem_boot_sector_is_not_taken_for_an_mbr(image_dir):
    # A FAT boot sector ends with 0x55aa too, but its code sits where MBR entries would be.
    path = image_dir / "fat.raw"
    sector = bytearray(b"\xeb\x3c\x90mkfs.fat" + bytes(range(256)) * 2)[:512]
    sector[510:512] = b"\x55\xaa"
    path.write_bytes(bytes(sector) + bytes(MiB))
    assert inspect_image(path).details == {"partition_table": None}


# -- data that is not a disk image ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("video.mp4", "The data looks like an MP4 video, not a disk image."),
        ("video.mov", "The data looks like a QuickTime video, not a disk image."),
        ("video.webm", "The data looks like a Matroska/WebM video, not a disk image."),
        ("document.pdf", "The data looks like a PDF document, not a disk image."),
        ("picture.png", "The data looks like a PNG image, not a disk image."),
        ("picture.jpg", "The data looks like a JPEG image, not a disk image."),
        ("picture.gif", "The data looks like a GIF image, not a disk image."),
        ("program.elf", "The data looks like an ELF executable, not a disk image."),
        ("archive.zip", "The data looks like a ZIP archive"),
        ("data.gz", "The data is gzip-compressed; "),
        ("data.xz", "The data is xz-compressed; "),
        ("data.bz2", "The data is bzip2-compressed; "),
        ("data.zst", "The data is zstd-compressed; "),
        ("notes.txt", "The data looks like text, not a disk image. (It starts with 'Meeting notes'.)"),
        ("error.html", "The data looks like an HTML page, not a disk image. (It starts with '<!DOCTYPE html>'.)"),
        ("empty.img", "The image is empty"),
    ],
)
def test_data_that_is_not_a_disk_image_is_refused_saying_what_it_looks_like(non_images, name, message):
    assert_refused(non_images[name], NotADiskImageError, message)
    assert str(refusal(non_images[name])).startswith(message)


@pytest.mark.parametrize("declared", [None, "raw", "qcow2"])
def test_what_the_data_looks_like_wins_over_the_declared_format(non_images, declared):
    assert_refused(non_images["video.mp4"], NotADiskImageError, "MP4 video", declared_format=declared)


def test_a_fifo_is_refused_without_waiting_for_a_writer(image_dir):
    path = image_dir / "fifo"
    os.mkfifo(path)
    error = refusal(path)
    assert type(error) is ImageFormatError and "not a regular file" in str(error)


# -- reading ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 1535, 1536, 64 * 1024 - 1, 64 * 1024, 64 * 1024 + 1, 66 * 1024, 70 * 1024])
def test_reader_tail_is_the_last_bytes_of_the_file_whatever_its_size(image_dir, size):
    path = image_dir / f"sized-{size}"
    data = bytes((index * 7) % 256 for index in range(size))
    path.write_bytes(data)
    with ImageReader.open(path) as reader:
        assert reader.head == data[: 64 * 1024]
        assert reader.tail == data[-1536:]


# -- cost -------------------------------------------------------------------------------------


def inspect_counting_reads(path) -> tuple[Inspection, int, float]:
    started = time.perf_counter()
    with ImageReader.open(path) as reader:
        inspection = inspect_open_image(reader)
        return inspection, reader.bytes_read, time.perf_counter() - started


@pytest.mark.parametrize("name", REAL_IMAGES)
def test_inspection_reads_a_bounded_number_of_bytes(real_images, name):
    _, bytes_read, _ = inspect_counting_reads(real_images[name].path)
    assert bytes_read <= 256 * 1024


def test_inspecting_multi_gib_images_costs_milliseconds(image_dir):
    huge_raw = image_dir / "huge.raw"
    with open(huge_raw, "wb") as file:
        file.truncate(16 * GiB)
    huge_qcow2 = image_dir / "huge.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", huge_qcow2, "16T")
    for path, size in ((huge_raw, 16 * GiB), (huge_qcow2, 16 * TiB)):
        timings = []
        for _ in range(5):
            inspection, bytes_read, seconds = inspect_counting_reads(path)
            timings.append(seconds)
        assert inspection.virtual_size == size
        assert bytes_read <= MAX_BYTES_READ
        assert min(timings) < 0.05, f"inspecting {path.name} took {min(timings) * 1000:.1f} ms"


def test_qemu_img_and_xorriso_are_installed():
    # The fixtures fail rather than skip without them; this names the packages in the report.
    assert shutil.which("qemu-img"), "install the Debian package qemu-utils"
    assert shutil.which("xorriso"), "install the Debian package xorriso"
