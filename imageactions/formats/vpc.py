"""VHD (qemu's "vpc") inspection, after the Microsoft Virtual Hard Disk Image Format
Specification: fixed and dynamic disks pass; differencing disks, which need a parent, do not."""

import struct
from typing import NamedTuple, NoReturn

from .errors import MalformedImageError, UnsafeImageError, describe_size, quoted
from .inspection import Inspection
from .reader import ImageReader

FOOTER_COOKIE = b"conectix"  # Hard Disk Footer "Cookie", bytes 0-7
DYNAMIC_HEADER_COOKIE = b"cxsparse"  # Dynamic Disk Header "Cookie", bytes 0-7
FOOTER_SIZE = 512

# Hard Disk Footer, big-endian: Cookie, Features, File Format Version, Data Offset, Time Stamp,
# Creator Application, Creator Version, Creator Host OS, Original Size, Current Size,
# Disk Geometry (cylinders, heads, sectors per track), Disk Type, Checksum, Unique Id, Saved State.
FOOTER = struct.Struct(">8sIIQI4sI4sQQHBBII16sB")
# Dynamic Disk Header, big-endian: Cookie, Data Offset, Table Offset, Header Version,
# Max Table Entries, Block Size, Checksum, Parent Unique ID, Parent Time Stamp, Reserved,
# Parent Unicode Name (UTF-16BE).
DYNAMIC_HEADER = struct.Struct(">8sQQIIII16sI4s512s")

DISK_TYPE_FIXED, DISK_TYPE_DYNAMIC, DISK_TYPE_DIFFERENCING = 2, 3, 4

# Creator applications whose disks qemu sizes by Current Size rather than by CHS geometry
# (block/vpc.c): Hyper-V, qemu with force_size, disk2vhd, XenServer, Citrix tap.
CURRENT_SIZE_CREATORS = (b"win ", b"qem2", b"d2v ", b"CTXS", b"tap\0")
MAX_GEOMETRY_SECTORS = 65535 * 16 * 255
MAX_SECTORS = 0xFF000000  # 2040 GiB, the format's limit


class Footer(NamedTuple):
    cookie: bytes
    features: int
    version: int
    data_offset: int
    timestamp: int
    creator_application: bytes
    creator_version: int
    creator_os: bytes
    original_size: int
    current_size: int
    cylinders: int
    heads: int
    sectors_per_track: int
    disk_type: int
    checksum: int
    unique_id: bytes
    saved_state: int


class DynamicHeader(NamedTuple):
    cookie: bytes
    data_offset: int
    table_offset: int
    version: int
    max_table_entries: int
    block_size: int
    checksum: int
    parent_unique_id: bytes
    parent_timestamp: int
    reserved: bytes
    parent_name: bytes


def has_footer_copy_at_start(head: bytes) -> bool:
    return head[:8] == FOOTER_COOKIE


def has_footer_at_end(tail: bytes) -> bool:
    # The footer is the last 512 bytes; disks made by Virtual PC before 2004 have a 511-byte one.
    return tail[-FOOTER_SIZE:][:8] == FOOTER_COOKIE or tail[-(FOOTER_SIZE - 1) :][:8] == FOOTER_COOKIE


def inspect_vpc(reader: ImageReader) -> Inspection:
    footer, footer_offset = read_footer(reader)
    virtual_size = virtual_size_as_qemu_reads_it(footer)
    if virtual_size > MAX_SECTORS * 512:
        raise MalformedImageError(
            f"The VHD footer claims {describe_size(virtual_size)}; the format holds at most 2040 GiB."
        )
    if footer.disk_type == DISK_TYPE_FIXED:
        check_fixed_disk(reader, footer_offset, virtual_size)
        return Inspection("vpc", virtual_size, {"subformat": "fixed"})
    if footer.disk_type in (DISK_TYPE_DYNAMIC, DISK_TYPE_DIFFERENCING):
        header = read_dynamic_header(reader, footer)
        if footer.disk_type == DISK_TYPE_DIFFERENCING:
            refuse_differencing_disk(header)
        check_dynamic_header(reader, header, virtual_size)
        return Inspection("vpc", virtual_size, {"subformat": "dynamic"})
    raise MalformedImageError(f"The VHD footer has disk type {footer.disk_type}; valid types are 2, 3 and 4.")


def read_footer(reader: ImageReader) -> tuple[Footer, int]:
    # qemu reads the footer copy at the start first and uses it when present.
    if has_footer_copy_at_start(reader.head):
        offset = 0
    elif reader.tail[-FOOTER_SIZE:][:8] == FOOTER_COOKIE:
        offset = reader.size - FOOTER_SIZE
    else:
        offset = reader.size - (FOOTER_SIZE - 1)
    data = reader.read_exact_at(offset, FOOTER.size, "VHD footer")
    return Footer(*FOOTER.unpack(data)), offset


def virtual_size_as_qemu_reads_it(footer: Footer) -> int:
    # Virtual PC sizes a disk by its CHS geometry, Hyper-V and others by Current Size;
    # qemu tells them apart by the creator application (block/vpc.c, vpc_open).
    geometry_sectors = footer.cylinders * footer.heads * footer.sectors_per_track
    if footer.creator_application in CURRENT_SIZE_CREATORS or geometry_sectors == MAX_GEOMETRY_SECTORS:
        return footer.current_size // 512 * 512
    return geometry_sectors * 512


def check_fixed_disk(reader: ImageReader, footer_offset: int, virtual_size: int) -> None:
    if footer_offset == 0:
        raise MalformedImageError(
            "The VHD has a fixed-disk footer at its start; fixed disks keep their only footer at the end."
        )
    if virtual_size > footer_offset:
        raise MalformedImageError(
            f"The fixed VHD claims {describe_size(virtual_size)} but holds {describe_size(footer_offset)} "
            "of data. The upload may be incomplete; upload the whole image."
        )


def read_dynamic_header(reader: ImageReader, footer: Footer) -> DynamicHeader:
    data = reader.read_exact_at(footer.data_offset, DYNAMIC_HEADER.size, "VHD dynamic disk header")
    header = DynamicHeader(*DYNAMIC_HEADER.unpack(data))
    if header.cookie != DYNAMIC_HEADER_COOKIE:
        raise MalformedImageError(
            f"The VHD dynamic disk header at offset {footer.data_offset} does not start with 'cxsparse'."
        )
    return header


def refuse_differencing_disk(header: DynamicHeader) -> NoReturn:
    name = header.parent_name.decode("utf-16-be", errors="replace").split("\0", 1)[0]
    shown = quoted(name) if name else "whose name is not recorded"
    raise UnsafeImageError(
        f"The VHD is a differencing disk of a parent disk ({shown}); images that depend on other files "
        "are refused. Merge it into a fixed or dynamic VHD first."
    )


def check_dynamic_header(reader: ImageReader, header: DynamicHeader, virtual_size: int) -> None:
    block_size = header.block_size
    if block_size < 512 or block_size & (block_size - 1):
        raise MalformedImageError(f"The VHD block size {block_size} is not a power of two of at least 512.")
    if header.max_table_entries * block_size > MAX_SECTORS * 512:
        raise MalformedImageError(
            f"The VHD block allocation table has {header.max_table_entries} entries, more than the format allows."
        )
    if header.max_table_entries * block_size < virtual_size:
        raise MalformedImageError(
            f"The VHD block allocation table ({header.max_table_entries} blocks of {describe_size(block_size)}) "
            f"is too small for a disk of {describe_size(virtual_size)}."
        )
    table_end = header.table_offset + header.max_table_entries * 4
    if table_end > reader.size:
        raise MalformedImageError(
            f"The VHD block allocation table ends at offset {table_end}, beyond the end of the file "
            f"({describe_size(reader.size)}). The upload may be incomplete; upload the whole image."
        )
