"""Fuzzing the inspector: mutated and truncated headers of every format are either inspected
or refused with an ImageFormatError — never another exception, never slowly, never reading much."""

import struct
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imageactions.formats import ImageFormatError, Inspection
from imageactions.formats.inspect import inspect_open_image
from imageactions.formats.reader import MAX_BYTES_READ, ImageReader

from .conftest import KiB, MiB, data_blocks, read_at

FUZZ_SETTINGS = settings(
    max_examples=200,
    deadline=500,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MAX_SEED_DATA = 4 * MiB

# Values that break parsers: zero, one, all ones, sign bits, a power of two past a limit.
BOUNDARY_VALUES = (
    b"\0" * 8,
    b"\1",
    b"\xff" * 8,
    b"\x7f" + b"\xff" * 7,
    b"\x80" + b"\0" * 7,
    b"\0\0\0\x01",
    b"\0\0\x10\0",
    b"\xff\xff\xff\xff",
    b"\x00\x00\x00\x40",
)


@dataclass(frozen=True)
class Seed:
    """A valid image as the fuzzer rewrites it: its data extents (holes stay holes) and the
    byte ranges the inspector reads, where mutations are aimed."""

    size: int
    extents: tuple[tuple[int, bytes], ...]
    hot_ranges: tuple[tuple[int, int], ...]


def data_extents(path: Path) -> list[tuple[int, bytes]]:
    extents = list(data_blocks(path))
    assert sum(len(data) for _, data in extents) <= MAX_SEED_DATA, f"{path} has too much data to fuzz"
    return extents


def vhdx_metadata_offset(path: Path) -> int:
    count = struct.unpack("<I", read_at(path, 192 * KiB + 8, 4))[0]
    for index in range(count):
        guid, offset, _, _ = struct.unpack("<16sQII", read_at(path, 192 * KiB + 16 + 32 * index, 32))
        if guid.hex().startswith("06a27c8b"):  # 8B7CA206-...: the metadata region
            return offset
    raise AssertionError("no metadata region")


def make_seed(path: Path, *hot_ranges: tuple[int, int]) -> Seed:
    size = path.stat().st_size
    # Negative offsets count from the end of the file.
    resolved = tuple(
        (start % size if start < 0 else start, end % size or size if end <= 0 else end) for start, end in hot_ranges
    )
    return Seed(size, tuple(data_extents(path)), resolved)


@pytest.fixture(scope="session")
def seeds(real_images, hostile_images) -> dict[str, Seed]:
    path = {name: image.path for name, image in real_images.items()}
    vhdx_metadata = vhdx_metadata_offset(path["disk.vhdx"])
    return {
        "qcow2 v2": make_seed(path["v2.qcow2"], (0, 4 * KiB)),
        "qcow2 v3": make_seed(path["v3.qcow2"], (0, 4 * KiB)),
        "qcow2 with backing file": make_seed(hostile_images["backing-passwd.qcow2"], (0, 4 * KiB)),
        "vmdk monolithicSparse": make_seed(path["monolithic-sparse.vmdk"], (0, 0x2A00)),
        "vmdk streamOptimized": make_seed(hostile_images["gd-at-end.vmdk"], (0, 0x2A00), (-1536, 0)),
        "vpc dynamic": make_seed(path["dynamic.vhd"], (0, 1536), (-512, 0)),
        "vpc fixed": make_seed(path["fixed.vhd"], (-512, 0)),
        # File identifier, header, region table, metadata table, metadata items.
        "vhdx": make_seed(
            path["disk.vhdx"],
            (0, 16),
            (64 * KiB, 64 * KiB + 80),
            (192 * KiB, 192 * KiB + 112),
            (vhdx_metadata, vhdx_metadata + 224),
            (vhdx_metadata + 64 * KiB, vhdx_metadata + 64 * KiB + 64),
        ),
        "vdi": make_seed(path["dynamic.vdi"], (0, 0x200)),
        "iso": make_seed(path["hybrid.iso"], (0, 512), (0x8000, 0x8100)),
        "raw gpt": make_seed(path["gpt.raw"], (0, 1024)),
    }


@pytest.fixture(scope="session")
def fuzz_dir(image_dir) -> Path:
    path = image_dir / "fuzz"
    path.mkdir()
    return path


@st.composite
def mutations(draw, seed: Seed):
    edits = []
    for _ in range(draw(st.integers(1, 8))):
        start, end = draw(st.sampled_from(seed.hot_ranges))
        offset = draw(st.integers(start, end - 1))
        edits.append((offset, draw(st.one_of(st.binary(min_size=1, max_size=8), st.sampled_from(BOUNDARY_VALUES)))))
    length = draw(st.one_of(st.just(seed.size), st.integers(0, seed.size)))
    return edits, length


def write_mutated(seed: Seed, edits, length: int, path: Path) -> None:
    with open(path, "wb") as file:
        for offset, data in (*seed.extents, *edits):
            file.seek(offset)
            file.write(data)
        file.truncate(length)


def assert_inspected_or_refused(path: Path) -> None:
    """The property under test: an Inspection or an ImageFormatError with a printable message,
    after reading at most MAX_BYTES_READ bytes (the reader raises a RuntimeError beyond)."""
    with ImageReader.open(path) as reader:
        try:
            outcome = inspect_open_image(reader)
        except ImageFormatError as error:
            outcome = error
        if isinstance(outcome, ImageFormatError):
            assert str(outcome) and str(outcome).isprintable()
        else:
            assert isinstance(outcome, Inspection)
        assert reader.bytes_read <= MAX_BYTES_READ


SEED_NAMES = (
    "qcow2 v2",
    "qcow2 v3",
    "qcow2 with backing file",
    "vmdk monolithicSparse",
    "vmdk streamOptimized",
    "vpc dynamic",
    "vpc fixed",
    "vhdx",
    "vdi",
    "iso",
    "raw gpt",
)


@pytest.mark.parametrize("seed_name", SEED_NAMES)
@FUZZ_SETTINGS
@given(data=st.data())
def test_mutated_headers_are_inspected_or_refused(seeds, fuzz_dir, seed_name, data):
    seed = seeds[seed_name]
    edits, length = data.draw(mutations(seed))
    path = fuzz_dir / f"mutated-{seed_name.replace(' ', '-')}"
    write_mutated(seed, edits, length, path)
    assert_inspected_or_refused(path)


MAGIC_PREFIXES = (
    b"QFI\xfb\0\0\0\2",
    b"QFI\xfb\0\0\0\3",
    b"KDMV\1\0\0\0",
    b"COWD",
    b"conectix",
    b"vhdxfile",
    b"<<< Oracle VM VirtualBox Disk Image >>>\n".ljust(64, b"\0") + struct.pack("<II", 0xBEDA107F, 0x00010001),
    b"version=1\n",
    b'# Disk DescriptorFile\nversion=1\ncreateType="monolithicSparse"\nRW 10 SPARSE "',
    b"\x00" * 0x8001 + b"CD001\x01",
    b"\0" * 446 + b"\x80\0\0\0\xee",
    b"",
)


@FUZZ_SETTINGS
@given(
    prefix=st.sampled_from(MAGIC_PREFIXES),
    rest=st.binary(max_size=4096),
    padding=st.sampled_from([0, 512, 40 * KiB, 300 * KiB]),
)
def test_a_magic_followed_by_junk_is_inspected_or_refused(fuzz_dir, prefix, rest, padding):
    path = fuzz_dir / "magic-and-junk"
    with open(path, "wb") as file:
        file.write(prefix + rest)
        file.truncate(max(len(prefix + rest), padding))
    assert_inspected_or_refused(path)
