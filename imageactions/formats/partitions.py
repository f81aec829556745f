"""MBR and GPT partition tables at the start of a raw disk (or a hybrid ISO), recognised from
the boot signature, the partition entries, and the UEFI "EFI PART" header at LBA 1."""

import struct

from .errors import MalformedImageError

BOOT_SIGNATURE_OFFSET = 510
BOOT_SIGNATURE = b"\x55\xaa"
PARTITION_TABLE_OFFSET = 446  # four 16-byte entries: status, CHS first, type, CHS last, LBA first, sectors
PROTECTIVE_MBR_TYPE = 0xEE

GPT_SIGNATURE = b"EFI PART"
# GPT header, little-endian: Signature, Revision, HeaderSize, HeaderCRC32, Reserved, MyLBA,
# AlternateLBA, FirstUsableLBA, LastUsableLBA, DiskGUID, PartitionEntryLBA,
# NumberOfPartitionEntries, SizeOfPartitionEntry, PartitionEntryArrayCRC32.
GPT_HEADER = struct.Struct("<8sIIIIQQQQ16sQIII")
GPT_MIN_HEADER_SIZE = 92
MAX_GPT_ENTRIES_BYTES = 1 << 20
LOGICAL_BLOCK_SIZES = (512, 4096)


def mbr_partition_types(head: bytes) -> list[int] | None:
    """The types of the used MBR entries, or None when the first sector is no MBR."""
    if head[BOOT_SIGNATURE_OFFSET : BOOT_SIGNATURE_OFFSET + 2] != BOOT_SIGNATURE:
        return None
    entries = [
        head[PARTITION_TABLE_OFFSET + 16 * index : PARTITION_TABLE_OFFSET + 16 * (index + 1)] for index in range(4)
    ]
    # A boot sector of a filesystem (FAT, NTFS) carries the same signature; its code in place
    # of the table has status bytes other than 0x00 (inactive) and 0x80 (bootable).
    if any(entry[0] not in (0x00, 0x80) for entry in entries):
        return None
    types = [entry[4] for entry in entries if entry[4]]
    return types or None


def find_partition_table(head: bytes) -> str | None:
    """'gpt', 'mbr' or None; MalformedImageError for a GPT header with impossible values."""
    types = mbr_partition_types(head)
    if types is None:
        return None
    if PROTECTIVE_MBR_TYPE in types:
        for block_size in LOGICAL_BLOCK_SIZES:
            if head[block_size : block_size + 8] == GPT_SIGNATURE:
                check_gpt_header(head[block_size : block_size + GPT_HEADER.size], block_size)
                return "gpt"
    return "mbr"


def check_gpt_header(data: bytes, block_size: int) -> None:
    if len(data) < GPT_HEADER.size:
        raise MalformedImageError("The disk's GPT header at LBA 1 is truncated.")
    fields = GPT_HEADER.unpack(data)
    header_size, my_lba, entry_count, entry_size = fields[2], fields[5], fields[11], fields[12]
    if not GPT_MIN_HEADER_SIZE <= header_size <= block_size or my_lba != 1:
        raise MalformedImageError(
            f"The disk's GPT header at LBA 1 is damaged (header size {header_size}, own LBA {my_lba}); "
            "repair the partition table and upload the image again."
        )
    if entry_size < 128 or entry_size & (entry_size - 1) or entry_count * entry_size > MAX_GPT_ENTRIES_BYTES:
        raise MalformedImageError(
            f"The disk's GPT header declares {entry_count} partition entries of {entry_size} bytes; "
            "repair the partition table and upload the image again."
        )
