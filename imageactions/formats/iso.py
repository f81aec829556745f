"""ISO 9660 (ECMA-119) and UDF optical-disc images, recognised by their volume descriptors
from sector 16 on; a hybrid ISO (with an MBR or GPT for USB boot) is still an ISO."""

from .errors import MalformedImageError, describe_size
from .inspection import Inspection
from .partitions import find_partition_table
from .reader import ImageReader

VOLUME_DESCRIPTOR_SIZE = 2048
FIRST_VOLUME_DESCRIPTOR = 16 * VOLUME_DESCRIPTOR_SIZE  # 0x8000: the system area comes first
# Standard Identifier, bytes 1-5 of a volume descriptor; looked for in the first three, as
# Glance does: ISO 9660, and the UDF volume recognition sequence.
DESCRIPTOR_OFFSETS = (0x8001, 0x8801, 0x9001)
ISO9660_IDENTIFIER = b"CD001"
UDF_IDENTIFIERS = (b"BEA01", b"NSR02", b"NSR03", b"TEA01")
PRIMARY_VOLUME_DESCRIPTOR = 1
# Primary volume descriptor fields, little-endian halves of both-endian numbers.
VOLUME_SPACE_SIZE_OFFSET = 80
LOGICAL_BLOCK_SIZE_OFFSET = 128


def has_volume_descriptor(head: bytes) -> bool:
    identifiers = (ISO9660_IDENTIFIER, *UDF_IDENTIFIERS)
    return any(head[offset : offset + 5] in identifiers for offset in DESCRIPTOR_OFFSETS)


def inspect_iso(reader: ImageReader) -> Inspection:
    descriptor = reader.head[FIRST_VOLUME_DESCRIPTOR : FIRST_VOLUME_DESCRIPTOR + VOLUME_DESCRIPTOR_SIZE]
    if descriptor[1:6] == ISO9660_IDENTIFIER and descriptor[0] == PRIMARY_VOLUME_DESCRIPTOR:
        check_volume_size(reader, descriptor)
    partition_table = find_partition_table(reader.head)
    return Inspection("iso", reader.size, {"hybrid": partition_table is not None, "partition_table": partition_table})


def check_volume_size(reader: ImageReader, descriptor: bytes) -> None:
    if len(descriptor) < VOLUME_DESCRIPTOR_SIZE:
        raise MalformedImageError(
            "The ISO image is truncated inside its primary volume descriptor. The upload may be incomplete; "
            "upload the whole image."
        )
    blocks = int.from_bytes(descriptor[VOLUME_SPACE_SIZE_OFFSET : VOLUME_SPACE_SIZE_OFFSET + 4], "little")
    block_size = int.from_bytes(descriptor[LOGICAL_BLOCK_SIZE_OFFSET : LOGICAL_BLOCK_SIZE_OFFSET + 2], "little")
    if blocks * block_size > reader.size:
        raise MalformedImageError(
            f"The ISO image declares a volume of {describe_size(blocks * block_size)} but the file has "
            f"{describe_size(reader.size)}. The upload may be incomplete; upload the whole image."
        )
