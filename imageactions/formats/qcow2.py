"""qcow2 inspection (qemu docs/interop/qcow2.txt): virtual size, and refusal of images that
reference other files, are encrypted, or whose header no valid image has."""

import struct
from typing import NamedTuple

from .errors import MalformedImageError, UnsafeImageError, describe_size, quoted
from .inspection import LARGEST_VIRTUAL_SIZE, Inspection
from .reader import ImageReader

QCOW2_MAGIC = b"QFI\xfb"  # header bytes 0-3: 'Q', 'F', 'I', 0xfb (also qcow version 1's magic)

# Header bytes 0-71, common to versions 2 and 3, big-endian.
V2_HEADER = struct.Struct(">4sIQIIQIIQQIIQ")
# Header bytes 72-103, version 3 only.
V3_FIELDS = struct.Struct(">QQQII")
V2_HEADER_LENGTH = 72
V3_MIN_HEADER_LENGTH = 104
COMPRESSION_TYPE_OFFSET = 104  # one byte, present when header_length > 104

# incompatible_features bits (header bytes 72-79).
INCOMPAT_DIRTY = 1 << 0
INCOMPAT_CORRUPT = 1 << 1
INCOMPAT_DATA_FILE = 1 << 2
INCOMPAT_COMPRESSION = 1 << 3
INCOMPAT_EXTL2 = 1 << 4
KNOWN_INCOMPAT = INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2

# Header extension types ("Header extensions" section).
EXT_END = 0x00000000
EXT_CRYPTO_HEADER = 0x0537BE77
EXT_DATA_FILE = 0x44415441

COMPRESSION_TYPES = {0: "zlib", 1: "zstd"}
CRYPT_METHODS = {1: "AES", 2: "LUKS"}

MIN_CLUSTER_BITS, MAX_CLUSTER_BITS = 9, 21
MAX_BACKING_FILE_NAME = 1023
# qemu's limits (block/qcow2.h): QCOW_MAX_REFTABLE_SIZE, QCOW_MAX_L1_SIZE, QCOW_MAX_SNAPSHOTS.
MAX_REFCOUNT_TABLE_BYTES = 8 << 20
MAX_L1_TABLE_BYTES = 32 << 20
MAX_SNAPSHOTS = 65536
# Extensions must end inside the first cluster; we read at most this much of it.
MAX_EXTENSIONS_BYTES = 64 * 1024


class Qcow2Header(NamedTuple):
    version: int
    backing_file_offset: int
    backing_file_size: int
    cluster_bits: int
    size: int
    crypt_method: int
    l1_size: int
    l1_table_offset: int
    refcount_table_offset: int
    refcount_table_clusters: int
    nb_snapshots: int
    snapshots_offset: int
    incompatible_features: int = 0
    compatible_features: int = 0
    autoclear_features: int = 0
    refcount_order: int = 4
    header_length: int = V2_HEADER_LENGTH
    compression_type: int = 0

    @property
    def cluster_size(self) -> int:
        return 1 << self.cluster_bits


class HeaderExtensions(NamedTuple):
    data_file_name: bytes | None
    has_crypto_header: bool


def has_qcow2_magic(head: bytes) -> bool:
    return head[:4] == QCOW2_MAGIC


def inspect_qcow2(reader: ImageReader) -> Inspection:
    header = read_qcow2_header(reader)
    check_backing_file(reader, header)
    extensions = read_header_extensions(reader, header)
    check_external_data_file(header, extensions)
    check_encryption(header, extensions)
    check_incompatible_features(header)
    check_tables(reader, header)
    return Inspection("qcow2", header.size, {"version": header.version, "cluster_size": header.cluster_size})


def read_qcow2_header(reader: ImageReader) -> Qcow2Header:
    fields = V2_HEADER.unpack(reader.read_exact_at(0, V2_HEADER_LENGTH, "qcow2 header"))
    version = fields[1]
    if version == 1:
        raise UnsafeImageError(
            "The image is in the old qcow format (version 1), which is not accepted; "
            "convert it with 'qemu-img convert -O qcow2' first."
        )
    if version not in (2, 3):
        raise MalformedImageError(f"The qcow2 header has version {version}; only versions 2 and 3 exist.")
    header = Qcow2Header(*fields[1:])
    if not MIN_CLUSTER_BITS <= header.cluster_bits <= MAX_CLUSTER_BITS:
        raise MalformedImageError(
            f"The qcow2 header has cluster_bits {header.cluster_bits}; valid images have 9 to 21."
        )
    if version == 3:
        v3 = V3_FIELDS.unpack(reader.read_exact_at(V2_HEADER_LENGTH, V3_FIELDS.size, "qcow2 version 3 header"))
        header = header._replace(
            incompatible_features=v3[0],
            compatible_features=v3[1],
            autoclear_features=v3[2],
            refcount_order=v3[3],
            header_length=v3[4],
        )
        check_header_length(header)
        if header.header_length > COMPRESSION_TYPE_OFFSET:
            compression_type = reader.read_exact_at(COMPRESSION_TYPE_OFFSET, 1, "qcow2 header")[0]
            header = header._replace(compression_type=compression_type)
    return header


def check_header_length(header: Qcow2Header) -> None:
    length = header.header_length
    if length < V3_MIN_HEADER_LENGTH or length > header.cluster_size or length % 8:
        raise MalformedImageError(
            f"The qcow2 header_length is {length}; it must be a multiple of 8 between "
            f"{V3_MIN_HEADER_LENGTH} and the cluster size ({header.cluster_size})."
        )


def check_backing_file(reader: ImageReader, header: Qcow2Header) -> None:
    # A backing file makes qemu read another file of its choosing into the image:
    # /etc/passwd, or another tenant's image.
    if not header.backing_file_offset and not header.backing_file_size:
        return
    name = read_backing_file_name(reader, header)
    shown = quoted(name) if name else "whose name cannot be read"
    raise UnsafeImageError(
        f"The qcow2 image has a backing file ({shown}); images that depend on other files are refused. "
        "Upload a standalone image, e.g. made with 'qemu-img convert -O qcow2'."
    )


def read_backing_file_name(reader: ImageReader, header: Qcow2Header) -> bytes:
    offset, size = header.backing_file_offset, header.backing_file_size
    if not offset or offset > header.cluster_size:
        return b""
    return reader.read_at(offset, min(size, MAX_BACKING_FILE_NAME))


def read_header_extensions(reader: ImageReader, header: Qcow2Header) -> HeaderExtensions:
    # Extensions run from the end of the header to the backing file name or the end of the
    # first cluster, whichever comes first; qemu reads bytes past the file's end as zeros.
    start = header.header_length
    end = min(header.backing_file_offset or header.cluster_size, header.cluster_size)
    readable_end = min(end, start + MAX_EXTENSIONS_BYTES)
    area = reader.read_at(start, readable_end - start).ljust(max(0, readable_end - start), b"\0")
    data_file_name, has_crypto_header = None, False
    offset = 0
    while offset + 8 <= len(area):
        ext_type, ext_length = struct.unpack_from(">II", area, offset)
        offset += 8
        if ext_type == EXT_END:
            return HeaderExtensions(data_file_name, has_crypto_header)
        if ext_length > (end - start) - offset:
            raise MalformedImageError(
                f"The qcow2 header extension 0x{ext_type:08x} claims {ext_length} bytes, more than "
                "the first cluster holds."
            )
        if offset + ext_length > len(area):
            break
        if ext_type == EXT_DATA_FILE:
            data_file_name = area[offset : offset + ext_length]
        elif ext_type == EXT_CRYPTO_HEADER:
            has_crypto_header = True
        offset += (ext_length + 7) & ~7
    if readable_end < end:
        raise MalformedImageError(
            f"The qcow2 header extensions run past the first {MAX_EXTENSIONS_BYTES // 1024} KiB "
            "without an end marker; no valid image has that many."
        )
    return HeaderExtensions(data_file_name, has_crypto_header)


def check_external_data_file(header: Qcow2Header, extensions: HeaderExtensions) -> None:
    # An external data file holds the guest data in another file, named by the image.
    if not (header.incompatible_features & INCOMPAT_DATA_FILE or extensions.data_file_name is not None):
        return
    shown = quoted(extensions.data_file_name) if extensions.data_file_name else "whose name is not recorded"
    raise UnsafeImageError(
        f"The qcow2 image keeps its data in an external data file ({shown}); images that depend on "
        "other files are refused. Upload a standalone image, e.g. made with 'qemu-img convert -O qcow2'."
    )


def check_encryption(header: Qcow2Header, extensions: HeaderExtensions) -> None:
    if not header.crypt_method and not extensions.has_crypto_header:
        return
    method = CRYPT_METHODS.get(header.crypt_method, f"method {header.crypt_method}")
    raise UnsafeImageError(
        f"The qcow2 image is encrypted ({method}); encrypted images are refused. "
        "Decrypt it with 'qemu-img convert' before uploading."
    )


def check_incompatible_features(header: Qcow2Header) -> None:
    features = header.incompatible_features
    unknown = features & ~KNOWN_INCOMPAT
    if unknown:
        bits = ", ".join(str(bit) for bit in range(64) if unknown >> bit & 1)
        raise UnsafeImageError(
            f"The qcow2 image uses incompatible features unknown to this service (bits {bits}); "
            "images whose meaning we cannot check are refused."
        )
    if features & INCOMPAT_CORRUPT:
        raise MalformedImageError(
            "The qcow2 image is marked corrupt; repair it with 'qemu-img check -r all' and upload it again."
        )
    compression = COMPRESSION_TYPES.get(header.compression_type)
    if compression is None:
        raise MalformedImageError(f"The qcow2 image has unknown compression type {header.compression_type}.")
    if (compression != "zlib") != bool(features & INCOMPAT_COMPRESSION):
        raise MalformedImageError(
            f"The qcow2 compression type ({compression}) contradicts its compression feature bit."
        )
    if features & INCOMPAT_EXTL2 and header.cluster_bits < 14:
        # Extended L2 entries split a cluster into 32 subclusters of at least 512 bytes.
        raise MalformedImageError(
            f"The qcow2 image uses extended L2 entries with {header.cluster_size}-byte clusters; "
            "they need clusters of 16 KiB or more."
        )


def check_tables(reader: ImageReader, header: Qcow2Header) -> None:
    size = header.size
    if size > LARGEST_VIRTUAL_SIZE:
        raise MalformedImageError(f"The qcow2 header claims a virtual size of {size} bytes, beyond 2^63.")
    if header.refcount_order > 6:
        raise MalformedImageError(
            f"The qcow2 refcount_order is {header.refcount_order}; refcounts wider than 64 bits do not exist."
        )
    if header.refcount_table_clusters == 0:
        raise MalformedImageError("The qcow2 image has no reference count table.")
    check_table(
        reader,
        header,
        "reference count table",
        header.refcount_table_offset,
        header.refcount_table_clusters * header.cluster_size,
        MAX_REFCOUNT_TABLE_BYTES,
    )
    check_table(reader, header, "L1 table", header.l1_table_offset, header.l1_size * 8, MAX_L1_TABLE_BYTES)
    if header.nb_snapshots > MAX_SNAPSHOTS:
        raise MalformedImageError(
            f"The qcow2 image claims {header.nb_snapshots} snapshots; at most {MAX_SNAPSHOTS} are possible."
        )
    if header.nb_snapshots:
        check_table(reader, header, "snapshot table", header.snapshots_offset, 1, None)
    # Each L1 entry maps one L2 table: cluster_size / (8, or 16 with extended L2) clusters.
    l2_entry_size = 16 if header.incompatible_features & INCOMPAT_EXTL2 else 8
    bytes_per_l1_entry = header.cluster_size * (header.cluster_size // l2_entry_size)
    needed_l1_entries = -(-size // bytes_per_l1_entry)
    if header.l1_size < needed_l1_entries:
        raise MalformedImageError(
            f"The qcow2 L1 table has {header.l1_size} entries, too few for a virtual size of {describe_size(size)}."
        )


def check_table(
    reader: ImageReader, header: Qcow2Header, name: str, offset: int, length: int, max_length: int | None
) -> None:
    if max_length is not None and length > max_length:
        raise MalformedImageError(
            f"The qcow2 {name} is {describe_size(length)}; valid images keep it under {describe_size(max_length)}."
        )
    if offset % header.cluster_size:
        raise MalformedImageError(f"The qcow2 {name} offset {offset} is not aligned to a cluster.")
    if length and offset < header.cluster_size:
        raise MalformedImageError(f"The qcow2 {name} overlaps the header in the first cluster.")
    if length and offset + length > reader.size:
        raise MalformedImageError(
            f"The qcow2 {name} lies at offset {offset}, beyond the end of the file "
            f"({describe_size(reader.size)}). The upload may be incomplete; upload the whole image."
        )
