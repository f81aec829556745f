"""VMDK inspection (VMware Virtual Disk Format 1.1): only single-file sparse images
(monolithicSparse, streamOptimized) pass; a descriptor that names any other file never does."""

import re
import struct
from typing import NamedTuple, NoReturn

from .errors import MalformedImageError, UnsafeImageError, describe_size, quoted
from .inspection import LARGEST_VIRTUAL_SIZE, Inspection
from .reader import ImageReader

SPARSE_MAGIC = b"KDMV"  # SparseExtentHeader.magicNumber 0x564d444b, stored little-endian
COWD_MAGIC = b"COWD"  # ESX Server sparse extent (vmfsSparse), the format's version 3
SECTOR = 512

# SparseExtentHeader, little-endian: magicNumber, version, flags, capacity, grainSize,
# descriptorOffset, descriptorSize, numGTEsPerGT, rgdOffset, gdOffset, overHead,
# uncleanShutdown, the four line-ending check characters, compressAlgorithm.
SPARSE_HEADER = struct.Struct("<4sIIQQQQIQQQB4sH")
GD_AT_END = 0xFFFFFFFFFFFFFFFF  # gdOffset of a streamOptimized header whose real values are in the footer
FLAG_COMPRESSED = 1 << 16
COMPRESSION_DEFLATE = 1
MARKER_END_OF_STREAM, MARKER_FOOTER = 0, 3
# Stream markers: val (uint64), size (uint32), type (uint32).
MARKER = struct.Struct("<QII")

# qemu's limits (block/vmdk.c): grains above 1 GiB, grain tables above 512 entries and
# grain directories above 32 Mi entries are refused as corrupt.
MAX_GRAIN_SECTORS = 0x200000
MAX_GTES_PER_GT = 512
MAX_GD_ENTRIES = 32 * 1024 * 1024

MAX_DESCRIPTOR_BYTES = 64 * 1024
# qemu looks for parentFileNameHint in the 20 sectors after the sparse header, whatever
# descriptorOffset says, and follows it as a backing file.
QEMU_DESCRIPTOR_OFFSET, QEMU_DESCRIPTOR_SIZE = 0x200, 20 * SECTOR

SINGLE_FILE_CREATE_TYPES = ("monolithicSparse", "streamOptimized")
NO_PARENT_CID = "ffffffff"

EXTENT_LINE = re.compile(
    r"(?P<access>RW|RDONLY|NOACCESS)\s+(?P<sectors>\d+)\s+(?P<type>[A-Za-z]+)"
    r'(?:\s+"(?P<filename>[^"]*)"(?:\s+(?P<offset>\d+))?)?'
)
KEY_VALUE_LINE = re.compile(r"(?P<key>[A-Za-z0-9_.-]+)\s*=\s*(?P<value>.*)")
EXTENT_ACCESS_WORDS = ("RW", "RDONLY", "NOACCESS")


class SparseHeader(NamedTuple):
    magic: bytes
    version: int
    flags: int
    capacity: int
    grain_size: int
    descriptor_offset: int
    descriptor_size: int
    num_gtes_per_gt: int
    rgd_offset: int
    gd_offset: int
    overhead: int
    unclean_shutdown: int
    check_bytes: bytes
    compress_algorithm: int


class Extent(NamedTuple):
    access: str
    sectors: int
    type: str
    filename: str | None


class Descriptor(NamedTuple):
    create_type: str | None
    parent_cid: str | None
    parent_file_name: str | None
    extents: list[Extent]


def has_sparse_magic(head: bytes) -> bool:
    return head[:4] in (SPARSE_MAGIC, COWD_MAGIC)


def looks_like_descriptor_to_qemu(head: bytes) -> bool:
    """qemu's vmdk_probe: the first line that is neither a comment nor blank is version=1|2|3."""
    for line in head[:4096].split(b"\n"):
        if line.startswith(b"#") or not line.strip(b" \r"):
            continue
        return re.fullmatch(rb"version=[123]\r?", line) is not None
    return False


def looks_like_descriptor(text: str) -> bool:
    """Broader than qemu's probe, for data already known to be text."""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.lower().startswith("# disk descriptorfile") or re.match(r"createType\s*=", stripped):
            return True
        if EXTENT_LINE.match(stripped):
            return True
    return False


def inspect_vmdk(reader: ImageReader) -> Inspection:
    magic = reader.head[:4]
    if magic == COWD_MAGIC:
        raise UnsafeImageError(
            "The vmdk image is an ESX COWD (vmfsSparse) extent, which is not accepted; "
            "convert it to a monolithicSparse or streamOptimized vmdk first."
        )
    if magic == SPARSE_MAGIC:
        return inspect_sparse_vmdk(reader)
    refuse_descriptor_file(reader)


def inspect_sparse_vmdk(reader: ImageReader) -> Inspection:
    header = read_sparse_header(reader, 0, "vmdk sparse extent header")
    if header.capacity == 0:
        # qemu opens the embedded descriptor of a zero-capacity sparse file as a descriptor
        # file, following whatever extents it lists.
        raise UnsafeImageError(
            "The vmdk image has a capacity of 0, which makes its embedded descriptor name the data "
            "files; such images are refused."
        )
    if header.gd_offset == GD_AT_END:
        header = read_stream_footer(reader)
    check_sparse_header(reader, header)
    check_parent_hint(reader)
    create_type = None
    if header.descriptor_offset:
        descriptor = read_embedded_descriptor(reader, header)
        check_embedded_descriptor(descriptor)
        create_type = descriptor.create_type
    if create_type is None:
        compressed = header.flags & FLAG_COMPRESSED or header.compress_algorithm == COMPRESSION_DEFLATE
        create_type = "streamOptimized" if compressed else "monolithicSparse"
    return Inspection("vmdk", header.capacity * SECTOR, {"subformat": create_type})


def read_sparse_header(reader: ImageReader, offset: int, what: str) -> SparseHeader:
    data = reader.read_exact_at(offset, SECTOR, what)
    return SparseHeader(*SPARSE_HEADER.unpack_from(data))


def read_stream_footer(reader: ImageReader) -> SparseHeader:
    # A streamOptimized file ends with a footer marker, a copy of the header holding the
    # real grain directory offset, and an end-of-stream marker; qemu lets the copy win.
    footer_offset = -(-reader.size // SECTOR) * SECTOR - 3 * SECTOR
    if footer_offset < SECTOR:
        raise MalformedImageError(
            "The streamOptimized vmdk is too short to hold its footer. The upload may be incomplete; "
            "upload the whole image."
        )
    footer = reader.read_exact_at(footer_offset, 3 * SECTOR, "vmdk stream footer")
    _, footer_size, footer_type = MARKER.unpack_from(footer, 0)
    eos_val, eos_size, eos_type = MARKER.unpack_from(footer, 2 * SECTOR)
    header = SparseHeader(*SPARSE_HEADER.unpack_from(footer, SECTOR))
    if (
        header.magic != SPARSE_MAGIC
        or footer_size != 0
        or footer_type != MARKER_FOOTER
        or eos_val != 0
        or eos_size != 0
        or eos_type != MARKER_END_OF_STREAM
    ):
        raise MalformedImageError(
            "The streamOptimized vmdk has no valid footer at its end. The upload may be incomplete; "
            "upload the whole image."
        )
    if header.capacity == 0:
        raise MalformedImageError("The streamOptimized vmdk footer gives a capacity of 0.")
    return header


def check_sparse_header(reader: ImageReader, header: SparseHeader) -> None:
    if header.version not in (1, 2, 3):
        raise MalformedImageError(f"The vmdk header has version {header.version}; only 1 to 3 exist.")
    if header.capacity * SECTOR > LARGEST_VIRTUAL_SIZE:
        raise MalformedImageError(f"The vmdk header claims {header.capacity} sectors, beyond 2^63 bytes.")
    if not 1 <= header.grain_size <= MAX_GRAIN_SECTORS:
        raise MalformedImageError(f"The vmdk grain size of {header.grain_size} sectors is invalid.")
    if not 1 <= header.num_gtes_per_gt <= MAX_GTES_PER_GT:
        raise MalformedImageError(
            f"The vmdk header has {header.num_gtes_per_gt} entries per grain table; valid images have 1 to 512."
        )
    sectors_per_gd_entry = header.num_gtes_per_gt * header.grain_size
    if -(-header.capacity // sectors_per_gd_entry) > MAX_GD_ENTRIES:
        raise MalformedImageError("The vmdk grain directory would be larger than any valid image has.")
    if header.overhead * SECTOR > reader.size:
        raise MalformedImageError(
            f"The vmdk file is truncated: its metadata takes {describe_size(header.overhead * SECTOR)}, "
            f"but the file has {describe_size(reader.size)}. The upload may be incomplete; upload the whole image."
        )


def check_parent_hint(reader: ImageReader) -> None:
    area = reader.read_at(QEMU_DESCRIPTOR_OFFSET, QEMU_DESCRIPTOR_SIZE).split(b"\0", 1)[0]
    position = area.find(b"parentFileNameHint")
    if position < 0:
        return
    match = re.match(rb'parentFileNameHint\s*=\s*"([^"]*)"', area[position:])
    name = quoted(match.group(1)) if match else "whose name cannot be read"
    refuse_parent(name)


def refuse_parent(name: str) -> NoReturn:
    raise UnsafeImageError(
        f"The vmdk image is a delta disk of a parent image ({name}); images that depend on other files "
        "are refused. Upload a standalone monolithicSparse or streamOptimized vmdk."
    )


def read_embedded_descriptor(reader: ImageReader, header: SparseHeader) -> Descriptor:
    length = header.descriptor_size * SECTOR
    if length > MAX_DESCRIPTOR_BYTES:
        raise MalformedImageError(
            f"The vmdk embedded descriptor is {describe_size(length)}; descriptors larger than "
            f"{MAX_DESCRIPTOR_BYTES // 1024} KiB are not accepted."
        )
    offset = header.descriptor_offset * SECTOR
    data = reader.read_exact_at(offset, length, "vmdk embedded descriptor")
    return parse_descriptor(data.split(b"\0", 1)[0].decode("utf-8", errors="replace"))


def check_embedded_descriptor(descriptor: Descriptor) -> None:
    if descriptor.parent_file_name is not None:
        refuse_parent(quoted(descriptor.parent_file_name))
    if descriptor.parent_cid is not None and descriptor.parent_cid.lower() != NO_PARENT_CID:
        refuse_parent(f"parentCID {quoted(descriptor.parent_cid)}")
    if descriptor.create_type not in SINGLE_FILE_CREATE_TYPES:
        raise UnsafeImageError(
            f"The vmdk image has createType {quoted(descriptor.create_type or '')}; only single-file "
            "monolithicSparse and streamOptimized vmdk images are accepted."
        )
    own_extents = [extent for extent in descriptor.extents if is_own_sparse_extent(extent)]
    if len(descriptor.extents) != 1 or len(own_extents) != 1:
        raise UnsafeImageError(
            f"The vmdk image's descriptor lists {describe_extents(descriptor.extents)}; a single-file "
            "vmdk lists exactly one SPARSE extent, itself. Images that refer to other files are refused."
        )


def is_own_sparse_extent(extent: Extent) -> bool:
    # The extent's file name is the image's own name when it was made; we cannot know that
    # name, but a path that leaves the image's own directory is never it.
    name = extent.filename or ""
    return (
        extent.type == "SPARSE"
        and extent.access in ("RW", "RDONLY")
        and extent.sectors > 0
        and name not in ("", ".", "..")
        and "/" not in name
        and "\\" not in name
        and ":" not in name
    )


def describe_extents(extents: list[Extent]) -> str:
    if not extents:
        return "no extents"
    shown = ", ".join(f"{extent.type} {quoted(extent.filename or '')}" for extent in extents[:5])
    more = f" and {len(extents) - 5} more" if len(extents) > 5 else ""
    return f"{len(extents)} extent{'s' if len(extents) != 1 else ''} ({shown}{more})"


def parse_descriptor(text: str) -> Descriptor:
    """The descriptor's keys and extent lines; any line that is neither fails, so that no
    line can mean an extent to qemu and something else to us."""
    values: dict[str, str] = {}
    extents = []
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        first_word = line.split(None, 1)[0].upper()
        if first_word in EXTENT_ACCESS_WORDS:
            extents.append(parse_extent_line(line, number))
            continue
        match = KEY_VALUE_LINE.fullmatch(line)
        if not match:
            raise MalformedImageError(f"The vmdk descriptor line {number} is not valid: {quoted(line, 80)}.")
        values.setdefault(match["key"], match["value"].strip().strip('"'))
    parent_file_name = values.get("parentFileNameHint")
    if parent_file_name is None and "parentFileNameHint" in text:
        parent_file_name = ""
    return Descriptor(values.get("createType"), values.get("parentCID"), parent_file_name, extents)


def parse_extent_line(line: str, number: int) -> Extent:
    match = EXTENT_LINE.fullmatch(line)
    if not match:
        raise MalformedImageError(f"The vmdk descriptor extent line {number} is not valid: {quoted(line, 80)}.")
    return Extent(match["access"], int(match["sectors"]), match["type"], match["filename"])


def refuse_descriptor_file(reader: ImageReader) -> NoReturn:
    # A descriptor file holds no data: its extents are other files, which qemu would open.
    text = reader.head[:MAX_DESCRIPTOR_BYTES].split(b"\0", 1)[0].decode("utf-8", errors="replace")
    names = [
        match["filename"]
        for match in map(EXTENT_LINE.search, text.splitlines())
        if match and match["filename"] is not None
    ]
    if names:
        shown = ", ".join(quoted(name) for name in names[:5]) + (" and more" if len(names) > 5 else "")
        refers = f"refers to other files ({shown})"
    else:
        refers = "holds no disk data of its own"
    raise UnsafeImageError(
        f"The vmdk image is a descriptor file that {refers}; images that depend on other files are refused. "
        "Upload a single-file vmdk (monolithicSparse or streamOptimized) instead."
    )
