"""VDI inspection (VirtualBox VDI header, version 1.1): virtual size, and refusal of
differencing images, which need a parent."""

import struct
from typing import NamedTuple

from .errors import MalformedImageError, UnsafeImageError, describe_size
from .inspection import Inspection
from .reader import ImageReader

SIGNATURE_OFFSET = 0x40
SIGNATURE = struct.pack("<I", 0xBEDA107F)  # VDIHEADER u32Signature, after the 64-byte text banner
VERSION_1_1 = 0x00010001

# The pre-header (banner, signature, version) and the version 1.1 header, little-endian:
# cbHeader, u32Type, fFlags, szComment[256], offBlocks, offData, LegacyGeometry (cylinders,
# heads, sectors, cbSector), u32Dummy, cbDisk, cbBlock, cbBlockExtra, cBlocks,
# cBlocksAllocated, uuidCreate, uuidModify, uuidLinkage, uuidParentModify.
HEADER = struct.Struct("<64sIIIII256sIIIIIIIQIIII16s16s16s16s")

TYPE_DYNAMIC, TYPE_FIXED, TYPE_UNDO, TYPE_DIFFERENCING = 1, 2, 3, 4
SUBFORMATS = {TYPE_DYNAMIC: "dynamic", TYPE_FIXED: "fixed"}
SECTOR_SIZE = 512
BLOCK_SIZE = 1 << 20  # qemu reads only 1 MiB blocks
MAX_BLOCKS = 0xFFFFFFFF // 4  # qemu's VDI_BLOCKS_IN_IMAGE_MAX: the block map must fit 4 GiB
NULL_UUID = bytes(16)


class VdiHeader(NamedTuple):
    banner: bytes
    signature: int
    version: int
    header_size: int
    image_type: int
    image_flags: int
    comment: bytes
    blocks_offset: int
    data_offset: int
    cylinders: int
    heads: int
    sectors: int
    sector_size: int
    unused: int
    disk_size: int
    block_size: int
    block_extra: int
    blocks_in_image: int
    blocks_allocated: int
    uuid_create: bytes
    uuid_modify: bytes
    uuid_link: bytes
    uuid_parent_modify: bytes


def has_vdi_signature(head: bytes) -> bool:
    return head[SIGNATURE_OFFSET : SIGNATURE_OFFSET + 4] == SIGNATURE


def inspect_vdi(reader: ImageReader) -> Inspection:
    header = VdiHeader(*HEADER.unpack(reader.read_exact_at(0, HEADER.size, "VDI header")))
    if header.version != VERSION_1_1:
        raise MalformedImageError(
            f"The VDI header has version {header.version >> 16}.{header.version & 0xFFFF}; only 1.1 is accepted."
        )
    if (
        header.image_type in (TYPE_UNDO, TYPE_DIFFERENCING)
        or header.uuid_link != NULL_UUID
        or header.uuid_parent_modify != NULL_UUID
    ):
        raise UnsafeImageError(
            "The VDI image is a differencing image of a parent image; images that depend on other files "
            "are refused. Clone it into a standalone VDI with 'VBoxManage clonemedium' first."
        )
    if header.image_type not in SUBFORMATS:
        raise MalformedImageError(f"The VDI header has image type {header.image_type}; valid types are 1 to 4.")
    check_geometry(header)
    check_layout(reader, header)
    # VBoxManage convertfromraw can write sizes that are not whole sectors; qemu drops the rest.
    virtual_size = header.disk_size // SECTOR_SIZE * SECTOR_SIZE
    return Inspection("vdi", virtual_size, {"subformat": SUBFORMATS[header.image_type]})


def check_geometry(header: VdiHeader) -> None:
    if header.sector_size != SECTOR_SIZE or header.block_size != BLOCK_SIZE:
        raise MalformedImageError(
            f"The VDI image has {header.sector_size}-byte sectors and {header.block_size}-byte blocks; "
            "only 512-byte sectors and 1 MiB blocks are accepted."
        )
    if header.blocks_in_image > MAX_BLOCKS or header.blocks_allocated > header.blocks_in_image:
        raise MalformedImageError(
            f"The VDI image claims {header.blocks_in_image} blocks with {header.blocks_allocated} allocated; "
            "no valid image has that."
        )
    if header.disk_size > header.blocks_in_image * header.block_size:
        raise MalformedImageError(
            f"The VDI disk size of {describe_size(header.disk_size)} is larger than its "
            f"{header.blocks_in_image} blocks hold."
        )


def check_layout(reader: ImageReader, header: VdiHeader) -> None:
    if header.blocks_offset % SECTOR_SIZE or header.data_offset % SECTOR_SIZE:
        raise MalformedImageError("The VDI block map or data offset is not aligned to a sector.")
    block_map_end = header.blocks_offset + header.blocks_in_image * 4
    if header.blocks_offset < HEADER.size or block_map_end > header.data_offset:
        raise MalformedImageError("The VDI block map overlaps the header or the data.")
    data_end = header.data_offset + header.blocks_allocated * (header.block_size + header.block_extra)
    if max(block_map_end, data_end) > reader.size:
        raise MalformedImageError(
            f"The VDI image needs {describe_size(max(block_map_end, data_end))} for its block map and "
            f"allocated blocks, but the file has {describe_size(reader.size)}. The upload may be incomplete; "
            "upload the whole image."
        )
