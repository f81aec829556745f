"""VHDX inspection (MS-VHDX): the region table and metadata table give the virtual size and
tell whether the disk is a differencing disk, which needs a parent and is refused."""

import struct
import uuid
from typing import NamedTuple, NoReturn

from .errors import MalformedImageError, UnsafeImageError, describe_size, quoted
from .inspection import Inspection
from .reader import ImageReader

FILE_SIGNATURE = b"vhdxfile"  # File Type Identifier, bytes 0-7 of the file
KiB, MiB, TiB = 1 << 10, 1 << 20, 1 << 40

HEADER_OFFSETS = (64 * KiB, 128 * KiB)  # the two headers, each with signature "head"
HEADER_SIGNATURE = b"head"
# qemu reads only the first region table (block/vhdx.c); so do we.
REGION_TABLE_OFFSET = 192 * KiB
REGION_TABLE_SIGNATURE = b"regi"
REGION_TABLE_HEADER = struct.Struct("<4sIII")  # Signature, Checksum, EntryCount, Reserved
REGION_TABLE_ENTRY = struct.Struct("<16sQII")  # Guid, FileOffset, Length, Required
METADATA_TABLE_SIGNATURE = b"metadata"
METADATA_TABLE_HEADER = struct.Struct("<8sHH20s")  # Signature, Reserved, EntryCount, Reserved2
METADATA_TABLE_ENTRY = struct.Struct("<16sIII4s")  # ItemId, Offset, Length, flags, Reserved2
METADATA_TABLE_SIZE = 64 * KiB
MAX_TABLE_ENTRIES = 2047  # both tables, by the specification

REGION_REQUIRED = 1
METADATA_IS_REQUIRED = 1 << 2

BAT_REGION = uuid.UUID("2DC27766-F623-4200-9D64-115E9BFD4A08")
METADATA_REGION = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E")

FILE_PARAMETERS = uuid.UUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
VIRTUAL_DISK_SIZE = uuid.UUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
PAGE_83_DATA = uuid.UUID("BECA12AB-B2E6-4523-93EF-C309E000C746")
LOGICAL_SECTOR_SIZE = uuid.UUID("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
PHYSICAL_SECTOR_SIZE = uuid.UUID("CDA348C7-445D-4471-9CC9-E9885251C556")
PARENT_LOCATOR = uuid.UUID("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")
# Item lengths fixed by the specification; the parent locator's varies.
ITEM_LENGTHS = {
    FILE_PARAMETERS: 8,
    VIRTUAL_DISK_SIZE: 8,
    PAGE_83_DATA: 16,
    LOGICAL_SECTOR_SIZE: 4,
    PHYSICAL_SECTOR_SIZE: 4,
}
ITEM_NAMES = {
    FILE_PARAMETERS: "File Parameters",
    VIRTUAL_DISK_SIZE: "Virtual Disk Size",
    PAGE_83_DATA: "Page 83 Data",
    LOGICAL_SECTOR_SIZE: "Logical Sector Size",
    PHYSICAL_SECTOR_SIZE: "Physical Sector Size",
}
MAX_PARENT_LOCATOR_BYTES = 64 * KiB

FILE_PARAMETERS_HAS_PARENT = 1 << 1
MAX_VIRTUAL_DISK_SIZE = 64 * TiB
PARENT_PATH_KEYS = ("relative_path", "absolute_win32_path", "volume_path")


class Region(NamedTuple):
    offset: int
    length: int


class MetadataItem(NamedTuple):
    offset: int  # from the start of the metadata region
    length: int


def has_vhdx_signature(head: bytes) -> bool:
    return head[:8] == FILE_SIGNATURE


def inspect_vhdx(reader: ImageReader) -> Inspection:
    check_headers(reader)
    metadata_region = read_metadata_region(reader)
    items = read_metadata_table(reader, metadata_region)
    block_size, has_parent = read_file_parameters(reader, metadata_region, items)
    if has_parent or PARENT_LOCATOR in items:
        refuse_differencing_disk(reader, metadata_region, items.get(PARENT_LOCATOR))
    virtual_size = read_item_integer(reader, metadata_region, items, VIRTUAL_DISK_SIZE)
    logical_sector_size = read_item_integer(reader, metadata_region, items, LOGICAL_SECTOR_SIZE)
    physical_sector_size = read_item_integer(reader, metadata_region, items, PHYSICAL_SECTOR_SIZE)
    if logical_sector_size not in (512, 4096) or physical_sector_size not in (512, 4096):
        raise MalformedImageError(
            f"The VHDX sector sizes ({logical_sector_size}, {physical_sector_size}) are not 512 or 4096."
        )
    if virtual_size > MAX_VIRTUAL_DISK_SIZE or virtual_size % logical_sector_size:
        raise MalformedImageError(
            f"The VHDX virtual disk size of {describe_size(virtual_size)} is not a multiple of the "
            "sector size up to 64 TiB."
        )
    return Inspection("vhdx", virtual_size, {"block_size": block_size, "logical_sector_size": logical_sector_size})


def check_headers(reader: ImageReader) -> None:
    signatures = [reader.read_exact_at(offset, 4, "VHDX header") for offset in HEADER_OFFSETS]
    if HEADER_SIGNATURE not in signatures:
        raise MalformedImageError("The VHDX file has no valid header at 64 KiB or 128 KiB.")


def read_metadata_region(reader: ImageReader) -> Region:
    signature, _, entry_count, _ = REGION_TABLE_HEADER.unpack(
        reader.read_exact_at(REGION_TABLE_OFFSET, REGION_TABLE_HEADER.size, "VHDX region table")
    )
    if signature != REGION_TABLE_SIGNATURE or entry_count > MAX_TABLE_ENTRIES:
        raise MalformedImageError("The VHDX region table at 192 KiB is not valid.")
    table = reader.read_exact_at(
        REGION_TABLE_OFFSET + REGION_TABLE_HEADER.size, entry_count * REGION_TABLE_ENTRY.size, "VHDX region table"
    )
    regions: dict[uuid.UUID, Region] = {}
    for guid_bytes, offset, length, flags in REGION_TABLE_ENTRY.iter_unpack(table):
        guid = uuid.UUID(bytes_le=guid_bytes)
        if guid not in (BAT_REGION, METADATA_REGION):
            if flags & REGION_REQUIRED:
                # The specification says a reader must refuse a required region it does not know.
                raise UnsafeImageError(
                    f"The VHDX image requires a region this service does not know ({guid}); it is refused."
                )
            continue
        if guid in regions:
            raise MalformedImageError(f"The VHDX region table lists region {guid} twice.")
        if offset < MiB or offset % MiB or length % MiB or length == 0:
            raise MalformedImageError(
                f"The VHDX region {guid} at offset {offset}, length {length}, is not aligned to 1 MiB."
            )
        if offset + length > reader.size:
            raise MalformedImageError(
                f"The VHDX region {guid} ends at offset {offset + length}, beyond the end of the file "
                f"({describe_size(reader.size)}). The upload may be incomplete; upload the whole image."
            )
        regions[guid] = Region(offset, length)
    if BAT_REGION not in regions or METADATA_REGION not in regions:
        raise MalformedImageError("The VHDX region table lacks the block allocation table or the metadata region.")
    return regions[METADATA_REGION]


def read_metadata_table(reader: ImageReader, region: Region) -> dict[uuid.UUID, MetadataItem]:
    signature, _, entry_count, _ = METADATA_TABLE_HEADER.unpack(
        reader.read_exact_at(region.offset, METADATA_TABLE_HEADER.size, "VHDX metadata table")
    )
    if signature != METADATA_TABLE_SIGNATURE or entry_count > MAX_TABLE_ENTRIES:
        raise MalformedImageError(f"The VHDX metadata table at offset {region.offset} is not valid.")
    table = reader.read_exact_at(
        region.offset + METADATA_TABLE_HEADER.size, entry_count * METADATA_TABLE_ENTRY.size, "VHDX metadata table"
    )
    items: dict[uuid.UUID, MetadataItem] = {}
    for guid_bytes, offset, length, flags, _ in METADATA_TABLE_ENTRY.iter_unpack(table):
        guid = uuid.UUID(bytes_le=guid_bytes)
        if guid not in ITEM_LENGTHS and guid != PARENT_LOCATOR:
            if flags & METADATA_IS_REQUIRED:
                raise UnsafeImageError(
                    f"The VHDX image requires metadata this service does not know ({guid}); it is refused."
                )
            continue
        if guid in items:
            raise MalformedImageError(f"The VHDX metadata table lists item {guid} twice.")
        expected_length = ITEM_LENGTHS.get(guid)
        if (
            (expected_length is not None and length != expected_length)
            or offset < METADATA_TABLE_SIZE
            or offset + length > region.length
        ):
            raise MalformedImageError(f"The VHDX metadata item {guid} has an invalid offset or length.")
        items[guid] = MetadataItem(offset, length)
    missing = [name for guid, name in ITEM_NAMES.items() if guid not in items]
    if missing:
        raise MalformedImageError(f"The VHDX metadata lacks required items: {', '.join(missing)}.")
    return items


def read_item(reader: ImageReader, region: Region, item: MetadataItem, name: str) -> bytes:
    return reader.read_exact_at(region.offset + item.offset, item.length, f"VHDX {name} metadata")


def read_item_integer(reader: ImageReader, region: Region, items: dict, guid: uuid.UUID) -> int:
    return int.from_bytes(read_item(reader, region, items[guid], ITEM_NAMES[guid]), "little")


def read_file_parameters(reader: ImageReader, region: Region, items: dict) -> tuple[int, bool]:
    data = read_item(reader, region, items[FILE_PARAMETERS], "File Parameters")
    block_size, flags = struct.unpack("<II", data)
    if not MiB <= block_size <= 256 * MiB or block_size & (block_size - 1):
        raise MalformedImageError(f"The VHDX block size {block_size} is not a power of two between 1 MiB and 256 MiB.")
    return block_size, bool(flags & FILE_PARAMETERS_HAS_PARENT)


def refuse_differencing_disk(reader: ImageReader, region: Region, locator: MetadataItem | None) -> NoReturn:
    path = read_parent_path(reader, region, locator) if locator else None
    shown = quoted(path) if path else "whose location is not recorded"
    raise UnsafeImageError(
        f"The VHDX image is a differencing disk of a parent disk ({shown}); images that depend on other "
        "files are refused. Merge it into a standalone VHDX first."
    )


def read_parent_path(reader: ImageReader, region: Region, locator: MetadataItem) -> str | None:
    # Parent Locator: LocatorType GUID, Reserved, KeyValueCount, then entries of KeyOffset,
    # ValueOffset, KeyLength, ValueLength pointing at UTF-16LE strings inside the item.
    data = reader.read_at(region.offset + locator.offset, min(locator.length, MAX_PARENT_LOCATOR_BYTES))
    if len(data) < 20:
        return None
    (count,) = struct.unpack_from("<H", data, 18)
    values = {}
    for index in range(min(count, (len(data) - 20) // 12)):
        key_offset, value_offset, key_length, value_length = struct.unpack_from("<IIHH", data, 20 + 12 * index)
        key = data[key_offset : key_offset + key_length].decode("utf-16-le", errors="replace")
        values[key] = data[value_offset : value_offset + value_length].decode("utf-16-le", errors="replace")
    return next((values[key] for key in PARENT_PATH_KEYS if values.get(key)), None)
