"""Streaming decompression of gzip, xz, bzip2 and zstd images, capped against decompression bombs.

Used inside the import pipeline (source -> decompress -> hash -> sniff -> write), so bytes are
decompressed once, during the download, and memory does not grow with the image.
"""

import bz2
import io
import lzma
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import zstandard

from imageactions.formats import ImageFormatError
from imageactions.formats.errors import human_size
from imageactions.sparse import SparseWriter

COMPRESSION_MAGIC = {
    # RFC 1952 2.3.1: ID1=0x1f ID2=0x8b, then CM=8 (deflate), the only method defined.
    "gzip": b"\x1f\x8b\x08",
    # xz file format 1.2.0, 2.1.1.1: Header Magic Bytes.
    "xz": b"\xfd7zXZ\x00",
    # bzip2 stream header: 'BZ', 'h' (Huffman-coded), then the block size '1'..'9'.
    "bzip2": b"BZh",
    # RFC 8878 3.1.1: Magic_Number 0xFD2FB528, little-endian.
    "zstd": b"\x28\xb5\x2f\xfd",
}
ZSTD_SKIPPABLE_MAGIC_MASK = 0xFFFFFFF0  # RFC 8878 3.1.2: skippable frames are 0x184D2A50..5F
ZSTD_SKIPPABLE_MAGIC = 0x184D2A50
COMPRESSION_ALGORITHMS = tuple(COMPRESSION_MAGIC)

# Output allowed before the ratio check applies, so a stream header decoding into a few
# zeros does not count as a bomb.
RATIO_GRACE_BYTES = 1 << 20
INPUT_CHUNK_SIZE = 1 << 16
# An xz header may ask for a dictionary of up to 4 GiB; xz -9 needs 65 MiB to decode.
XZ_MEMORY_LIMIT = 256 << 20
# zstd decoders refuse windows above 2**27 (128 MiB) unless told otherwise; keep that bound.
ZSTD_MAX_WINDOW_SIZE = 1 << 27


class DecompressionError(ImageFormatError):
    """The compressed image is corrupt, truncated, or expands beyond the configured caps."""


class DecompressionLimitError(DecompressionError):
    """The compressed image expands beyond the configured caps."""


def detect_compression(head: bytes) -> str | None:
    """The compression of a stream starting with `head` (at least 6 bytes), or None."""
    for algo, magic in COMPRESSION_MAGIC.items():
        if head.startswith(magic):
            if algo == "bzip2" and not head[3:4].isdigit():
                continue
            return algo
    if len(head) >= 4 and struct.unpack_from("<I", head)[0] & ZSTD_SKIPPABLE_MAGIC_MASK == ZSTD_SKIPPABLE_MAGIC:
        return "zstd"  # pzstd starts its output with a skippable frame
    return None


def _needs_too_much_memory(algo: str, limit: int) -> DecompressionError:
    return DecompressionLimitError(
        f"The {algo} data was compressed with a window larger than {human_size(limit)}, more memory than "
        f"decompressing is allowed; compress it again with default settings"
    )


class _CountingSource:
    """Reads the compressed input, counting bytes and showing them to an optional observer."""

    def __init__(self, raw: BinaryIO, observer: Callable[[bytes], None] | None = None):
        self.raw = raw
        self.bytes_read = 0
        self.observer = observer

    def read(self, size: int = INPUT_CHUNK_SIZE) -> bytes:
        data = self.raw.read(size)
        self.bytes_read += len(data)
        if self.observer and data:
            self.observer(data)
        return data


class _ZlibDecompressor:
    """zlib.decompressobj with the needs_input/max_length contract of lzma and bz2."""

    def __init__(self):
        # wbits=47: a zlib or gzip header, detected automatically, with a 32 KiB window.
        self._zlib = zlib.decompressobj(wbits=47)
        self._tail = b""
        self.needs_input = True

    def decompress(self, data: bytes, max_length: int) -> bytes:
        out = self._zlib.decompress(self._tail + data, max_length)
        self._tail = self._zlib.unconsumed_tail
        # A full output buffer may leave output pending inside zlib even with no input left.
        self.needs_input = not self._tail and len(out) < max_length
        return out

    @property
    def eof(self) -> bool:
        return self._zlib.eof

    @property
    def unused_data(self) -> bytes:
        return self._zlib.unused_data


_STREAM_DECOMPRESSORS = {
    "gzip": (_ZlibDecompressor, zlib.error),
    "xz": (lambda: lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=XZ_MEMORY_LIMIT), lzma.LZMAError),
    "bzip2": (bz2.BZ2Decompressor, OSError),
}


class _MultiStreamDecoder:
    """Decodes concatenated gzip members, xz streams or bzip2 streams (pigz, pixz, pbzip2 output).

    NUL padding between streams is skipped, as gzip(1) and xz(1) do (xz spec 2.2: Stream Padding).
    """

    def __init__(self, source: _CountingSource, algo: str):
        self.source = source
        self.algo = algo
        self._factory, self._error = _STREAM_DECOMPRESSORS[algo]
        self._decompressor = self._factory()

    def read(self, size: int) -> bytes:
        while True:
            d = self._decompressor
            if d.eof:
                leftover = d.unused_data.lstrip(b"\0") or self._next_nonzero_input()
                if not leftover:
                    return b""
                self._decompressor = self._factory()
                out = self._decompress(leftover, size)
            elif not d.needs_input:
                out = self._decompress(b"", size)
            else:
                chunk = self.source.read(INPUT_CHUNK_SIZE)
                if not chunk:
                    raise DecompressionError(
                        f"The {self.algo} data is corrupt or truncated: it ends before the end of the compressed stream"
                    )
                out = self._decompress(chunk, size)
            if out:
                return out

    def _next_nonzero_input(self) -> bytes:
        while chunk := self.source.read(INPUT_CHUNK_SIZE):
            if chunk := chunk.lstrip(b"\0"):
                return chunk
        return b""

    def _decompress(self, data: bytes, size: int) -> bytes:
        try:
            return self._decompressor.decompress(data, size)
        except self._error as exc:
            # liblzma reports LZMA_MEMLIMIT_ERROR only through its message.
            if "Memory usage limit" in str(exc):
                raise _needs_too_much_memory(self.algo, XZ_MEMORY_LIMIT) from exc
            raise DecompressionError(f"The {self.algo} data is corrupt or truncated: {exc}") from exc


class _ZstdFrameTracker:
    """Walks zstd frame and block headers (RFC 8878 3.1) as input passes, to tell a complete
    stream from a truncated one: python-zstandard's bounded-output reader ends silently on both.
    """

    def __init__(self):
        self._need = 4  # bytes of the next header field to collect
        self._header = bytearray()
        self._skip = 0  # bytes of block content, checksum or skippable data still to pass
        self._state = "magic"
        self._checksum_size = 0
        self.frames = 0

    @property
    def at_frame_boundary(self) -> bool:
        return self._state == "magic" and not self._header and not self._skip and self.frames > 0

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._skip:
                step = min(self._skip, len(view))
                self._skip -= step
                view = view[step:]
                if not self._skip and self._state == "trailer":
                    self._end_frame()
                continue
            step = min(self._need - len(self._header), len(view))
            self._header += view[:step]
            view = view[step:]
            if len(self._header) == self._need:
                field, self._header = bytes(self._header), bytearray()
                self._parse(field)

    def _parse(self, field: bytes) -> None:
        if self._state == "magic":
            (magic,) = struct.unpack("<I", field)
            if magic & ZSTD_SKIPPABLE_MAGIC_MASK == ZSTD_SKIPPABLE_MAGIC:
                self._state, self._need = "skippable_size", 4  # 3.1.2 Frame_Size
            elif field == COMPRESSION_MAGIC["zstd"]:
                self._state, self._need = "descriptor", 1
            else:
                raise DecompressionError("The zstd data is corrupt: unknown frame magic number")
        elif self._state == "skippable_size":
            self._skip = struct.unpack("<I", field)[0]
            self._state, self._need = "trailer", 4
            if not self._skip:
                self._end_frame()
        elif self._state == "descriptor":
            # 3.1.1.1.1 Frame_Header_Descriptor: FCS flag (bits 7-6), Single_Segment (5),
            # Content_Checksum (2), Dictionary_ID flag (1-0).
            (fhd,) = field
            fcs_flag, single_segment = fhd >> 6, (fhd >> 5) & 1
            self._checksum_size = 4 if fhd & 0b100 else 0
            window_descriptor_size = 0 if single_segment else 1
            dictionary_id_size = (0, 1, 2, 4)[fhd & 0b11]
            content_size_size = (single_segment, 2, 4, 8)[fcs_flag]
            rest = window_descriptor_size + dictionary_id_size + content_size_size
            self._state, self._need = "block_header", 3
            if rest:
                self._state, self._need = "header_rest", rest
        elif self._state == "header_rest":
            self._state, self._need = "block_header", 3
        elif self._state == "block_header":
            # 3.1.1.2 Block_Header: Last_Block (bit 0), Block_Type (bits 2-1), Block_Size (23-3).
            header = int.from_bytes(field, "little")
            last_block, block_type, block_size = header & 1, (header >> 1) & 0b11, header >> 3
            if block_type == 3:
                raise DecompressionError("The zstd data is corrupt: reserved block type")
            self._skip = 1 if block_type == 1 else block_size  # an RLE block stores one byte
            if last_block:
                self._state, self._need = "trailer", 4
                self._skip += self._checksum_size
                if not self._skip:
                    self._end_frame()

    def _end_frame(self) -> None:
        self.frames += 1
        self._state, self._need = "magic", 4


class _ZstdDecoder:
    """zstd frames, including frames without a content size, via python-zstandard's stream reader."""

    algo = "zstd"

    def __init__(self, source: _CountingSource):
        self._tracker = _ZstdFrameTracker()
        source.observer = self._tracker.feed
        self.source = source
        decompressor = zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW_SIZE)
        self._reader = decompressor.stream_reader(
            source, read_size=INPUT_CHUNK_SIZE, read_across_frames=True, closefd=False
        )

    def read(self, size: int) -> bytes:
        try:
            out = self._reader.read(size)
        except zstandard.ZstdError as exc:
            if "too much memory" in str(exc):
                raise _needs_too_much_memory("zstd", ZSTD_MAX_WINDOW_SIZE) from exc
            raise DecompressionError(f"The zstd data is corrupt or truncated: {exc}") from exc
        if not out and not self._tracker.at_frame_boundary:
            raise DecompressionError(
                "The zstd data is corrupt or truncated: it ends before the end of the compressed stream"
            )
        return out


class DecompressingReader(io.RawIOBase):
    """A readable stream of the decompressed bytes of `raw`.

    Raises DecompressionError as soon as the output passes `max_output` bytes or `max_ratio`
    times the input read so far; each read decompresses at most the size asked for, so a bomb
    costs no more memory than one read. The underlying stream is not closed.
    """

    def __init__(
        self, raw: BinaryIO, algo: str, *, max_output: int, max_ratio: float, ratio_grace: int = RATIO_GRACE_BYTES
    ):
        if algo not in COMPRESSION_ALGORITHMS:
            raise ValueError(f"unknown compression {algo!r}; expected one of {COMPRESSION_ALGORITHMS}")
        self.algo = algo
        self.max_output = max_output
        self.max_ratio = max_ratio
        self.ratio_grace = ratio_grace
        self.bytes_out = 0
        self._source = _CountingSource(raw)
        self._decoder = _ZstdDecoder(self._source) if algo == "zstd" else _MultiStreamDecoder(self._source, algo)

    @property
    def bytes_in(self) -> int:
        """Compressed bytes read from the underlying stream so far."""
        return self._source.bytes_read

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        with memoryview(buffer) as view:
            if not len(view):
                return 0
            data = self._decoder.read(len(view))
            self.bytes_out += len(data)
            self._check_limits()
            view[: len(data)] = data
            return len(data)

    def _check_limits(self) -> None:
        if self.bytes_out > self.max_output:
            raise DecompressionLimitError(
                f"The {self.algo} data expands beyond the {human_size(self.max_output)} limit on decompressed images"
            )
        if self.bytes_out > self.ratio_grace and self.bytes_out > self.max_ratio * self.bytes_in:
            raise DecompressionLimitError(
                f"The {self.algo} data expands more than {self.max_ratio:g}x; refused as a possible decompression bomb"
            )


def open_decompressed(raw: BinaryIO, algo: str, *, max_output: int, max_ratio: float) -> DecompressingReader:
    """Wrap a compressed stream (a network response, a file) into a capped decompressing reader."""
    return DecompressingReader(raw, algo, max_output=max_output, max_ratio=max_ratio)


def decompress_file(
    src_path,
    dst_path,
    algo: str,
    *,
    max_output: int,
    max_ratio: float,
    chunk_size: int = 1 << 20,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Decompress `src_path` into `dst_path`, returning the decompressed size.

    Runs of zeros are left as holes (disk images are mostly empty). `progress(compressed_done,
    compressed_total)` is called after each chunk. On any error `dst_path` is removed.
    """
    src_path, dst_path = Path(src_path), Path(dst_path)
    total_in = src_path.stat().st_size
    buffer = bytearray(chunk_size)
    try:
        with open(src_path, "rb") as src, open(dst_path, "wb") as dst:
            reader = open_decompressed(src, algo, max_output=max_output, max_ratio=max_ratio)
            writer = SparseWriter(dst)
            with memoryview(buffer) as view:
                while n := reader.readinto(view):
                    writer.write(view[:n])
                    if progress:
                        progress(reader.bytes_in, total_in)
            writer.finish()
            return reader.bytes_out
    except BaseException:
        dst_path.unlink(missing_ok=True)
        raise
