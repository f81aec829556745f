"""Real disk images made by qemu-img and xorriso, and a corpus of hostile ones crafted from them.

The tools are required, not optional: CI installs the Debian packages qemu-utils and xorriso."""

import bz2
import gzip
import json
import lzma
import re
import shutil
import struct
import subprocess
import uuid
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest
import zstandard

KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40
IMAGE_SIZE = 64 * MiB
SECTOR = 512


@dataclass(frozen=True)
class RealImage:
    path: Path
    format: str
    virtual_size: int  # as qemu-img info reports it
    details: dict


def require_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed; install the Debian package {package} (CI does)", pytrace=False)
    return path


def run(*command) -> str:
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True)
    if result.returncode:
        pytest.fail(f"{' '.join(map(str, command))} failed: {result.stderr.strip()}", pytrace=False)
    return result.stdout


def qemu_virtual_size(path: Path, fmt: str) -> int:
    return json.loads(run("qemu-img", "info", "--output=json", "-f", fmt, path))["virtual-size"]


def patch(path: Path, offset: int, data: bytes) -> Path:
    with open(path, "r+b") as file:
        file.seek(offset)
        file.write(data)
    return path


def data_blocks(path: Path, block_size: int = 64 * KiB):
    """(offset, bytes) of every block that is not all zeros: an image without its holes."""
    zeros = bytes(block_size)
    with open(path, "rb") as file:
        offset = 0
        while block := file.read(block_size):
            if block != zeros[: len(block)]:
                yield offset, block
            offset += len(block)


def copy_image(source: Path, target: Path) -> Path:
    """A sparse copy: the images are mostly holes, and a dense 64 MiB copy per case adds up."""
    with open(target, "wb") as file:
        for offset, block in data_blocks(source):
            file.seek(offset)
            file.write(block)
        file.truncate(source.stat().st_size)
    return target


def truncated_copy(source: Path, target: Path, length: int) -> Path:
    with open(source, "rb") as file:
        target.write_bytes(file.read(length))
    return target


def read_at(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as file:
        file.seek(offset)
        return file.read(length)


# -- partition tables, written the way fdisk and sgdisk write them ---------------------


def mbr_entry(status: int, partition_type: int, first_lba: int, sectors: int) -> bytes:
    # CHS fields set to the "use LBA" values 0xfe 0xff 0xff, as modern tools write them.
    return struct.pack("<B3sB3sII", status, b"\xfe\xff\xff", partition_type, b"\xfe\xff\xff", first_lba, sectors)


def write_mbr(path: Path, entries: list[bytes]) -> None:
    table = b"".join(entries).ljust(64, b"\0")
    patch(path, 446, table + b"\x55\xaa")


def write_gpt(path: Path, disk_size: int) -> None:
    total_lbas = disk_size // SECTOR
    write_mbr(path, [mbr_entry(0x00, 0xEE, 1, min(total_lbas - 1, 0xFFFFFFFF))])
    linux_filesystem = uuid.UUID("0FC63DAF-8483-4772-8E79-3D69D8477DE4")
    entry = struct.pack(
        "<16s16sQQQ72s",
        linux_filesystem.bytes_le,
        uuid.uuid4().bytes_le,
        2048,
        total_lbas - 2048,
        0,
        "root".encode("utf-16-le"),
    )
    entries = entry.ljust(128 * 128, b"\0")
    entries_crc = zlib.crc32(entries)

    def header(my_lba: int, alternate_lba: int, entries_lba: int) -> bytes:
        fields = [
            b"EFI PART",
            0x00010000,
            92,
            0,
            0,
            my_lba,
            alternate_lba,
            34,
            total_lbas - 34,
            uuid.UUID(int=0x1234).bytes_le,
            entries_lba,
            128,
            128,
            entries_crc,
        ]
        without_crc = struct.pack("<8sIIIIQQQQ16sQIII", *fields)
        fields[3] = zlib.crc32(without_crc)
        return struct.pack("<8sIIIIQQQQ16sQIII", *fields)

    patch(path, SECTOR, header(1, total_lbas - 1, 2))
    patch(path, 2 * SECTOR, entries)
    patch(path, (total_lbas - 33) * SECTOR, entries)
    patch(path, (total_lbas - 1) * SECTOR, header(total_lbas - 1, 1, total_lbas - 33))


# -- real images ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("disk-images")


@pytest.fixture(scope="session")
def real_images(image_dir) -> dict[str, RealImage]:
    require_tool("qemu-img", "qemu-utils")
    require_tool("xorriso", "xorriso")
    made = image_dir / "real"
    made.mkdir()
    images = {}

    def create(name: str, fmt: str, details: dict, *options: str, size: int = IMAGE_SIZE) -> None:
        path = made / name
        run("qemu-img", "create", "-q", "-f", fmt, *options, path, str(size))
        images[name] = RealImage(path, fmt, qemu_virtual_size(path, fmt), details)

    create("v2.qcow2", "qcow2", {"version": 2, "cluster_size": 64 * KiB}, "-o", "compat=0.10")
    create("v3.qcow2", "qcow2", {"version": 3, "cluster_size": 64 * KiB}, "-o", "compat=1.1")
    create("v3-4k-clusters.qcow2", "qcow2", {"version": 3, "cluster_size": 4 * KiB}, "-o", "cluster_size=4096")
    create("v3-zstd.qcow2", "qcow2", {"version": 3, "cluster_size": 64 * KiB}, "-o", "compression_type=zstd")
    create("v3-extended-l2.qcow2", "qcow2", {"version": 3, "cluster_size": 64 * KiB}, "-o", "extended_l2=on")
    create("monolithic-sparse.vmdk", "vmdk", {"subformat": "monolithicSparse"}, "-o", "subformat=monolithicSparse")
    create("fixed.vhd", "vpc", {"subformat": "fixed"}, "-o", "subformat=fixed")
    create("dynamic.vhd", "vpc", {"subformat": "dynamic"}, "-o", "subformat=dynamic")
    create("forced-size.vhd", "vpc", {"subformat": "dynamic"}, "-o", "subformat=dynamic,force_size=on")
    create("disk.vhdx", "vhdx", {"block_size": 8 * MiB, "logical_sector_size": 512})
    create("dynamic.vdi", "vdi", {"subformat": "dynamic"})
    create("fixed.vdi", "vdi", {"subformat": "fixed"}, "-o", "static=on")
    create("disk.raw", "raw", {"partition_table": None})

    # streamOptimized is made by converting a disk with data, as VMware exports are.
    source = made / "source.raw"
    run("qemu-img", "create", "-q", "-f", "raw", source, str(IMAGE_SIZE))
    patch(source, 0, b"boot sector" * 40)
    patch(source, 32 * MiB, b"some data in the middle" * 100)
    stream = made / "stream-optimized.vmdk"
    run("qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", source, stream)
    images["stream-optimized.vmdk"] = RealImage(
        stream, "vmdk", qemu_virtual_size(stream, "vmdk"), {"subformat": "streamOptimized"}
    )

    mbr = copy_image(made / "disk.raw", made / "mbr.raw")
    write_mbr(mbr, [mbr_entry(0x80, 0x83, 2048, IMAGE_SIZE // SECTOR - 2048)])
    images["mbr.raw"] = RealImage(mbr, "raw", IMAGE_SIZE, {"partition_table": "mbr"})
    gpt = copy_image(made / "disk.raw", made / "gpt.raw")
    write_gpt(gpt, IMAGE_SIZE)
    images["gpt.raw"] = RealImage(gpt, "raw", IMAGE_SIZE, {"partition_table": "gpt"})

    content = made / "iso-content"
    content.mkdir()
    (content / "README.txt").write_text("An ISO made for the format inspector's tests.\n")
    for name, options, details in (
        ("plain.iso", [], {"hybrid": False, "partition_table": None}),
        ("hybrid.iso", ["--protective-msdos-label"], {"hybrid": True, "partition_table": "mbr"}),
    ):
        path = made / name
        run("xorriso", "-as", "mkisofs", "-quiet", "-V", "TESTS", *options, "-o", path, content)
        images[name] = RealImage(path, "iso", path.stat().st_size, details)
    return images


# -- hostile images ---------------------------------------------------------------------


QCOW2_INCOMPATIBLE_FEATURES = 72
QCOW2_CRYPT_METHOD = 32
QCOW2_CLUSTER_BITS = 20
QCOW2_SIZE = 24
QCOW2_HEADER_LENGTH = 100
QCOW2_L1_TABLE_OFFSET = 40
QCOW2_REFCOUNT_TABLE_OFFSET = 48
QCOW2_EXT_CRYPTO_HEADER = 0x0537BE77
VMDK_CAPACITY = 12
VMDK_GD_OFFSET = 56
VPC_DISK_TYPE = 60
VDI_IMAGE_TYPE = 0x4C
VDI_UUID_LINK = 0x1A8


def set_qcow2_incompatible_bits(path: Path, bits: int) -> Path:
    features = int.from_bytes(read_at(path, QCOW2_INCOMPATIBLE_FEATURES, 8), "big") | bits
    return patch(path, QCOW2_INCOMPATIBLE_FEATURES, features.to_bytes(8, "big"))


def rewrite_vmdk_descriptor(path: Path, rewrite) -> Path:
    """Edit the descriptor embedded at sector 1 of a sparse vmdk, keeping its size."""
    descriptor_offset, descriptor_size = struct.unpack_from("<QQ", read_at(path, 28, 16))
    area = read_at(path, descriptor_offset * SECTOR, descriptor_size * SECTOR)
    text = area.split(b"\0", 1)[0].decode()
    new_text = rewrite(text).encode()
    assert len(new_text) < len(area), "the rewritten descriptor must fit its sectors"
    return patch(path, descriptor_offset * SECTOR, new_text.ljust(len(area), b"\0"))


def vpc_checksum(footer: bytes) -> int:
    # One's complement of the byte sum, with the Checksum field (bytes 64-67) taken as zero.
    return ~sum(footer[:64] + footer[68:]) & 0xFFFFFFFF


def make_vpc_differencing(path: Path, parent_name: str) -> Path:
    size = path.stat().st_size
    data_offset = struct.unpack(">Q", read_at(path, 16, 8))[0]
    # Parent Unicode Name: bytes 64-575 of the dynamic disk header, UTF-16BE.
    patch(path, data_offset + 64, parent_name.encode("utf-16-be").ljust(512, b"\0"))
    for footer_offset in (0, size - SECTOR):
        footer = bytearray(read_at(path, footer_offset, SECTOR))
        footer[VPC_DISK_TYPE : VPC_DISK_TYPE + 4] = struct.pack(">I", 4)
        footer[64:68] = struct.pack(">I", vpc_checksum(bytes(footer)))
        patch(path, footer_offset, bytes(footer))
    return path


def vhdx_metadata_item_offset(path: Path, item: uuid.UUID) -> int:
    """File offset of a metadata item, found through the region table at 192 KiB."""
    metadata_region = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E")
    count = struct.unpack_from("<I", read_at(path, 192 * KiB + 8, 4))[0]
    for index in range(count):
        guid, offset, _, _ = struct.unpack("<16sQII", read_at(path, 192 * KiB + 16 + 32 * index, 32))
        if uuid.UUID(bytes_le=guid) == metadata_region:
            entries = struct.unpack_from("<H", read_at(path, offset + 10, 2))[0]
            for entry in range(entries):
                entry_bytes = read_at(path, offset + 32 + 32 * entry, 32)
                item_guid, item_offset, _, _, _ = struct.unpack("<16sIII4s", entry_bytes)
                if uuid.UUID(bytes_le=item_guid) == item:
                    return offset + item_offset
    raise AssertionError(f"no metadata item {item} in {path}")


def make_gd_at_end_stream(source: Path, target: Path, footer_capacity: int) -> Path:
    """A streamOptimized vmdk laid out as VMware writes it: gdOffset GD_AT_END in the first
    header, then a footer marker, the real header and an end-of-stream marker at the end."""
    copy_image(source, target)
    header = bytearray(read_at(source, 0, SECTOR))
    patch(target, VMDK_GD_OFFSET, struct.pack("<Q", 0xFFFFFFFFFFFFFFFF))
    header[VMDK_CAPACITY : VMDK_CAPACITY + 8] = struct.pack("<Q", footer_capacity)
    footer_marker = struct.pack("<QII", 0, 0, 3).ljust(SECTOR, b"\0")
    end_of_stream = struct.pack("<QII", 0, 0, 0).ljust(SECTOR, b"\0")
    with open(target, "ab") as file:
        file.write(footer_marker + bytes(header) + end_of_stream)
    return target


@pytest.fixture(scope="session")
def hostile_images(image_dir, real_images) -> dict[str, Path]:
    made = image_dir / "hostile"
    made.mkdir()
    images: dict[str, Path] = {}

    def copy(source: str, name: str) -> Path:
        images[name] = copy_image(real_images[source].path, made / name)
        return images[name]

    def create(name: str, fmt: str, *options: str, size: str = "64M") -> Path:
        images[name] = made / name
        run("qemu-img", "create", "-q", "-f", fmt, *options, images[name], size)
        return images[name]

    # qcow2 that reads other files, or that we cannot read.
    create("backing-passwd.qcow2", "qcow2", "-u", "-b", "/etc/passwd", "-F", "raw")
    create("data-file.qcow2", "qcow2", "-o", f"data_file={made / 'data-file.raw'}")
    set_qcow2_incompatible_bits(copy("v3.qcow2", "data-file-bit-only.qcow2"), 1 << 2)
    data_file_extension_only = copy_image(images["data-file.qcow2"], made / "data-file-extension-only.qcow2")
    patch(data_file_extension_only, QCOW2_INCOMPATIBLE_FEATURES, (0).to_bytes(8, "big"))
    images["data-file-extension-only.qcow2"] = data_file_extension_only
    set_qcow2_incompatible_bits(copy("v3.qcow2", "unknown-feature-bit-5.qcow2"), 1 << 5)
    set_qcow2_incompatible_bits(copy("v3.qcow2", "unknown-feature-bit-63.qcow2"), 1 << 63)
    set_qcow2_incompatible_bits(copy("v3.qcow2", "corrupt.qcow2"), 1 << 1)
    # Made by patching rather than by qemu-img's encrypt.format=luks, whose PBKDF2 timing takes
    # seconds and fails now and then with "Unable to get accurate CPU usage".
    patch(copy("v3.qcow2", "luks-encrypted.qcow2"), QCOW2_CRYPT_METHOD, struct.pack(">I", 2))
    crypto_header_only = copy("v3.qcow2", "crypto-extension-only.qcow2")
    header_length = struct.unpack(">I", read_at(crypto_header_only, QCOW2_HEADER_LENGTH, 4))[0]
    patch(
        crypto_header_only,
        header_length,
        struct.pack(">IIQQ", QCOW2_EXT_CRYPTO_HEADER, 16, 0x40000, 0x1000) + struct.pack(">II", 0, 0),
    )
    patch(copy("v3.qcow2", "aes-encrypted.qcow2"), QCOW2_CRYPT_METHOD, struct.pack(">I", 1))
    patch(copy("v3.qcow2", "cluster-bits-8.qcow2"), QCOW2_CLUSTER_BITS, struct.pack(">I", 8))
    patch(copy("v3.qcow2", "cluster-bits-22.qcow2"), QCOW2_CLUSTER_BITS, struct.pack(">I", 22))
    patch(copy("v3.qcow2", "header-length-100.qcow2"), QCOW2_HEADER_LENGTH, struct.pack(">I", 100))
    patch(copy("v3.qcow2", "header-length-1m.qcow2"), QCOW2_HEADER_LENGTH, struct.pack(">I", 1 << 20))
    patch(copy("v3.qcow2", "size-2-63.qcow2"), QCOW2_SIZE, struct.pack(">Q", 1 << 63))
    patch(copy("v3.qcow2", "l1-beyond-file.qcow2"), QCOW2_L1_TABLE_OFFSET, struct.pack(">Q", TiB))
    patch(copy("v3.qcow2", "refcount-unaligned.qcow2"), QCOW2_REFCOUNT_TABLE_OFFSET, struct.pack(">Q", 65537))
    patch(copy("v2.qcow2", "version-7.qcow2"), 4, struct.pack(">I", 7))
    patch(copy("v2.qcow2", "qcow-version-1.qcow2"), 4, struct.pack(">I", 1))
    create("one-tebibyte.qcow2", "qcow2", size="1T")
    raw_with_qcow2_header = copy("disk.raw", "raw-with-qcow2-header.raw")
    patch(raw_with_qcow2_header, 0, read_at(real_images["v3.qcow2"].path, 0, 4096))

    # vmdk descriptors that name other files.
    images["descriptor-shadow.vmdk"] = made / "descriptor-shadow.vmdk"
    images["descriptor-shadow.vmdk"].write_text(
        '# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="monolithicFlat"\n\n'
        '# Extent description\nRW 2048 FLAT "/etc/shadow" 0\n\n# The Disk Data Base\n#DDB\n'
        'ddb.adapterType = "ide"\n'
    )
    own_extent = re.compile(r'RW (\d+) SPARSE "[^"]*"')
    rewrite_vmdk_descriptor(
        copy("monolithic-sparse.vmdk", "second-extent.vmdk"),
        lambda text: own_extent.sub(r'\g<0>\nRW 2048 FLAT "/etc/shadow" 0', text),
    )
    rewrite_vmdk_descriptor(
        copy("monolithic-sparse.vmdk", "extent-elsewhere.vmdk"),
        lambda text: own_extent.sub(r'RW \1 SPARSE "/etc/shadow"', text),
    )
    rewrite_vmdk_descriptor(
        copy("monolithic-sparse.vmdk", "flat-extent.vmdk"),
        lambda text: own_extent.sub(r'RW \1 FLAT "disk-flat.vmdk" 0', text),
    )
    rewrite_vmdk_descriptor(
        copy("monolithic-sparse.vmdk", "parent-hint.vmdk"),
        lambda text: text.replace("parentCID=ffffffff", 'parentCID=ffffffff\nparentFileNameHint="/etc/shadow"'),
    )
    rewrite_vmdk_descriptor(
        copy("monolithic-sparse.vmdk", "two-gb-extents.vmdk"),
        lambda text: text.replace("monolithicSparse", "twoGbMaxExtentSparse"),
    )
    rewrite_vmdk_descriptor(
        copy("monolithic-sparse.vmdk", "garbage-line.vmdk"),
        lambda text: text.replace("# Extent description", "this is not a descriptor line"),
    )
    patch(copy("monolithic-sparse.vmdk", "capacity-0.vmdk"), VMDK_CAPACITY, struct.pack("<Q", 0))
    patch(copy("monolithic-sparse.vmdk", "cowd.vmdk"), 0, b"COWD")
    # VMware writes streamOptimized files whose first header says "grain directory at the end"
    # and whose footer holds the real header; qemu lets the footer win, and so must we.
    stream = real_images["stream-optimized.vmdk"].path
    images["gd-at-end.vmdk"] = make_gd_at_end_stream(stream, made / "gd-at-end.vmdk", IMAGE_SIZE // SECTOR)
    images["footer-capacity-512t.vmdk"] = make_gd_at_end_stream(
        stream, made / "footer-capacity-512t.vmdk", 512 * TiB // SECTOR
    )
    images["qemu-probes-as-vmdk.raw"] = made / "qemu-probes-as-vmdk.raw"
    images["qemu-probes-as-vmdk.raw"].write_bytes(b"version=1\n" + bytes(range(256)) * 64)

    # VHD, VHDX and VDI disks that need a parent.
    make_vpc_differencing(copy("dynamic.vhd", "differencing.vhd"), "C:\\disks\\parent.vhd")
    vhdx = copy("disk.vhdx", "differencing.vhdx")
    file_parameters = uuid.UUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
    flags_offset = vhdx_metadata_item_offset(vhdx, file_parameters) + 4
    patch(vhdx, flags_offset, struct.pack("<I", struct.unpack("<I", read_at(vhdx, flags_offset, 4))[0] | 2))
    patch(copy("dynamic.vdi", "linked.vdi"), VDI_UUID_LINK, uuid.uuid4().bytes)
    patch(copy("dynamic.vdi", "differencing.vdi"), VDI_IMAGE_TYPE, struct.pack("<I", 4))

    # Truncated uploads: the first bytes of each format, too few for its header or tables.
    for source, name, length in (
        ("v2.qcow2", "truncated-50.qcow2", 50),
        ("v3.qcow2", "truncated-90.qcow2", 90),
        ("v3.qcow2", "truncated-64k.qcow2", 64 * KiB),
        ("monolithic-sparse.vmdk", "truncated-300.vmdk", 300),
        ("stream-optimized.vmdk", "truncated-16k.vmdk", 16 * KiB),
        ("dynamic.vhd", "truncated-700.vhd", 700),
        ("disk.vhdx", "truncated-100k.vhdx", 100 * KiB),
        ("disk.vhdx", "truncated-2m.vhdx", 2 * MiB),
        ("dynamic.vdi", "truncated-200.vdi", 200),
        ("fixed.vdi", "truncated-1m.vdi", MiB),
        ("plain.iso", "truncated-0x8100.iso", 0x8100),
        ("plain.iso", "truncated-64k.iso", 64 * KiB),
    ):
        images[name] = truncated_copy(real_images[source].path, made / name, length)

    gd_at_end = images["gd-at-end.vmdk"]
    images["truncated-footer.vmdk"] = truncated_copy(
        gd_at_end, made / "truncated-footer.vmdk", gd_at_end.stat().st_size - 1024
    )

    # One file, two formats.
    patch(copy("plain.iso", "iso-with-qcow2-header.iso"), 0, read_at(real_images["v3.qcow2"].path, 0, 512))
    qcow2_with_footer = copy("v3.qcow2", "qcow2-with-vhd-footer.qcow2")
    fixed_vhd = real_images["fixed.vhd"].path
    with open(qcow2_with_footer, "ab") as file:
        file.write(read_at(fixed_vhd, fixed_vhd.stat().st_size - SECTOR, SECTOR))

    # Disk formats qemu opens that are not accepted here.
    create("disk.qed", "qed")
    images["disk.luks"] = made / "disk.luks"
    luks_header = (
        b"LUKS\xba\xbe"
        + struct.pack(">H", 1)
        + b"aes".ljust(32, b"\0")
        + b"xts-plain64".ljust(32, b"\0")
        + b"sha256".ljust(32, b"\0")
    )
    images["disk.luks"].write_bytes(luks_header.ljust(MiB, b"\0"))
    return images


@pytest.fixture(scope="session")
def non_images(image_dir) -> dict[str, Path]:
    made = image_dir / "non-images"
    made.mkdir()
    payload = b"Not a disk image at all. " * 400
    contents = {
        "video.mp4": struct.pack(">I", 24)
        + b"ftypisom"
        + b"\0\0\2\0"
        + b"isomiso2"
        + struct.pack(">I", 8 + len(payload))
        + b"mdat"
        + payload,
        "video.mov": struct.pack(">I", 20) + b"ftypqt  " + b"\0\0\2\0" + b"qt  " + payload,
        "video.webm": bytes.fromhex("1a45dfa3 9f 4286 81 01 42f7 81 01 42f2 81 04 42f3 81 08 4282 84")
        + b"webm"
        + payload,
        "document.pdf": b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n" + payload,
        "picture.png": b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + payload,
        "picture.jpg": b"\xff\xd8\xff\xe0\0\x10JFIF\0" + payload,
        "picture.gif": b"GIF89a" + payload,
        "data.gz": gzip.compress(payload),
        "data.xz": lzma.compress(payload),
        "data.bz2": bz2.compress(payload),
        "data.zst": zstandard.ZstdCompressor().compress(payload),
        "notes.txt": ("Meeting notes\n" + "Everything is fine, ünïcödé included.\n" * 200).encode(),
        "error.html": b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>"
        b"<body>Not Found</body></html>\n",
    }
    paths = {}
    for name, data in contents.items():
        paths[name] = made / name
        paths[name].write_bytes(data)
    paths["program.elf"] = copy_image(Path("/bin/true"), made / "program.elf")
    paths["archive.zip"] = made / "archive.zip"
    with zipfile.ZipFile(paths["archive.zip"], "w") as archive:
        archive.writestr("disk.img", payload)
    paths["empty.img"] = made / "empty.img"
    paths["empty.img"].write_bytes(b"")
    return paths
