"""Streaming decompression: round trips, multi-stream files, corruption, and decompression bombs."""

import bz2
import gzip
import hashlib
import io
import lzma
import os
import resource
import struct
import time
import tracemalloc
import zlib

import pytest
import zstandard

from imageactions.formats import ImageFormatError
from imageactions.formats.compression import (
    COMPRESSION_ALGORITHMS,
    DecompressionError,
    decompress_file,
    detect_compression,
    human_size,
    open_decompressed,
)

MiB, GiB = 1 << 20, 1 << 30
NO_CAP = dict(max_output=1 << 50, max_ratio=float("inf"))


def compress(algo: str, data: bytes) -> bytes:
    if algo == "gzip":
        return gzip.compress(data)
    if algo == "xz":
        return lzma.compress(data)
    if algo == "bzip2":
        return bz2.compress(data)
    return zstandard.ZstdCompressor(write_checksum=True).compress(data)  # as the zstd CLI writes


def streaming_compressor(algo: str):
    """A compressor object for data fed in chunks; zstd frames it writes carry no content size."""
    if algo == "gzip":
        return zlib.compressobj(9, wbits=31)
    if algo == "xz":
        return lzma.LZMACompressor(preset=0)
    if algo == "bzip2":
        return bz2.BZ2Compressor(9)
    return zstandard.ZstdCompressor().compressobj()


def compress_zeros(algo: str, size: int) -> bytes:
    """`size` zero bytes compressed chunk by chunk, so the test never holds them in memory."""
    compressor, zeros, parts = streaming_compressor(algo), bytes(MiB), []
    for _ in range(size // MiB):
        parts.append(compressor.compress(zeros))
    parts.append(compressor.flush())
    return b"".join(parts)


@pytest.fixture(scope="module")
def disk_like_data() -> bytes:
    """6 MiB shaped like a disk: random sectors, long zero runs, repetitive text."""
    rng = b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(MiB // 32))  # incompressible
    return rng + bytes(3 * MiB) + b"ImageActions " * 80000 + rng[: MiB // 3]


def read_all(reader, size=MiB) -> bytes:
    parts = []
    while chunk := reader.read(size):
        parts.append(chunk)
    return b"".join(parts)


# -- detection ---------------------------------------------------------------------------


@pytest.mark.parametrize("algo", COMPRESSION_ALGORITHMS)
def test_detect_compression_names_each_algorithm_from_its_magic(algo):
    assert detect_compression(compress(algo, b"disk")[:8]) == algo


def test_detect_compression_sees_a_zstd_stream_starting_with_a_skippable_frame():
    assert detect_compression(struct.pack("<II", 0x184D2A50, 4) + b"pzst") == "zstd"


@pytest.mark.parametrize(
    "head",
    [
        b"QFI\xfb\x00\x00\x00\x03",  # qcow2
        b"KDMV\x01\x00\x00\x00",  # vmdk
        b"\xebc\x90\x10\x8e\xd0\xbc\x00",  # an MBR boot sector
        b"BZhx....",  # 'BZh' without a block-size digit
        bytes(8),
        b"",
    ],
)
def test_detect_compression_returns_none_for_uncompressed_data(head):
    assert detect_compression(head) is None


# -- round trips -------------------------------------------------------------------------


@pytest.mark.parametrize("algo", COMPRESSION_ALGORITHMS)
def test_round_trip_through_the_streaming_reader(algo, disk_like_data):
    reader = open_decompressed(io.BytesIO(compress(algo, disk_like_data)), algo, **NO_CAP)
    assert read_all(reader, 65536) == disk_like_data
    assert reader.bytes_out == len(disk_like_data)


@pytest.mark.parametrize("algo", COMPRESSION_ALGORITHMS)
def test_round_trip_of_data_compressed_in_chunks(algo, disk_like_data):
    compressor = streaming_compressor(algo)
    compressed = (
        b"".join(compressor.compress(disk_like_data[i : i + 100_000]) for i in range(0, len(disk_like_data), 100_000))
        + compressor.flush()
    )
    assert read_all(open_decompressed(io.BytesIO(compressed), algo, **NO_CAP)) == disk_like_data


def test_zstd_frame_without_content_size_is_decompressed():
    data = os.urandom(200_000) * 3
    compressed = zstandard.ZstdCompressor(write_content_size=False).compress(data)
    assert zstandard.get_frame_parameters(compressed).content_size == zstandard.CONTENTSIZE_UNKNOWN
    assert read_all(open_decompressed(io.BytesIO(compressed), "zstd", **NO_CAP)) == data


@pytest.mark.parametrize("algo", COMPRESSION_ALGORITHMS)
def test_concatenated_streams_decompress_to_the_concatenated_data(algo):
    # pigz, pbzip2, pixz and zstd -T write several members/streams/frames.
    parts = [os.urandom(70_000), bytes(500_000), b"end of disk" * 1000]
    compressed = b"".join(compress(algo, part) for part in parts)
    assert read_all(open_decompressed(io.BytesIO(compressed), algo, **NO_CAP), 4096) == b"".join(parts)


def test_multi_member_gzip_with_zero_padding_between_members():
    compressed = gzip.compress(b"first") + bytes(512) + gzip.compress(b"second") + bytes(100)
    assert read_all(open_decompressed(io.BytesIO(compressed), "gzip", **NO_CAP)) == b"firstsecond"


def test_zstd_skippable_frames_are_passed_over():
    skippable = struct.pack("<II", 0x184D2A5E, 6) + b"pzstd!"
    compressed = skippable + compress("zstd", b"a" * 1000) + skippable + compress("zstd", b"b")
    assert read_all(open_decompressed(io.BytesIO(compressed), "zstd", **NO_CAP)) == b"a" * 1000 + b"b"


@pytest.mark.parametrize("algo", COMPRESSION_ALGORITHMS)
def test_decompress_file_writes_the_image_and_reports_progress(algo, disk_like_data, tmp_path):
    src, dst = tmp_path / f"disk.{algo}", tmp_path / "disk.raw"
    src.write_bytes(compress(algo, disk_like_data))
    calls = []
    size = decompress_file(
        src,
        dst,
        algo,
        max_output=GiB,
        max_ratio=1000,
        chunk_size=MiB,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert size == len(disk_like_data) == dst.stat().st_size
    assert dst.read_bytes() == disk_like_data
    assert calls[-1] == (src.stat().st_size, src.stat().st_size)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_decompress_file_leaves_zero_runs_as_holes(tmp_path):
    src, dst = tmp_path / "sparse.gz", tmp_path / "sparse.raw"
    src.write_bytes(gzip.compress(b"boot" + bytes(64 * MiB - 8) + b"tail"))
    decompress_file(src, dst, "gzip", max_output=GiB, max_ratio=float("inf"))
    assert dst.stat().st_size == 64 * MiB
    assert dst.stat().st_blocks * 512 < 4 * MiB
    with open(dst, "rb") as image:
        assert image.read(4) == b"boot"
        image.seek(-4, os.SEEK_END)
        assert image.read() == b"tail"


# -- corrupt and truncated data ---------------------------------------------------------


@pytest.mark.parametrize("algo", COMPRESSION_ALGORITHMS)
@pytest.mark.parametrize("keep", [0.5, 0.999, "all but one byte", "header only"])
def test_truncated_stream_raises_decompression_error(algo, keep, disk_like_data):
    compressed = compress(algo, disk_like_data)
    cut = {"all but one byte": len(compressed) - 1, "header only": 6}.get(keep) or int(len(compressed) * keep)
    with pytest.raises(DecompressionError, match=f"The {algo} data is corrupt or truncated"):
        read_all(open_decompressed(io.BytesIO(compressed[:cut]), algo, **NO_CAP))


@pytest.mark.parametrize("algo", COMPRESSION_ALGORITHMS)
def test_empty_input_is_an_error(algo):
    with pytest.raises(DecompressionError, match="ends before the end of the compressed stream"):
        read_all(open_decompressed(io.BytesIO(b""), algo, **NO_CAP))


@pytest.mark.parametrize("algo", COMPRESSION_ALGORITHMS)
def test_corrupted_bytes_raise_decompression_error(algo, disk_like_data):
    # Every format checks a CRC or checksum; zstd only when the frame carries one (the CLI's default).
    compressed = bytearray(compress(algo, disk_like_data))
    middle = len(compressed) // 2
    compressed[middle : middle + 64] = bytes(b ^ 0x5A for b in compressed[middle : middle + 64])
    with pytest.raises(DecompressionError, match=f"The {algo} data is corrupt"):
        read_all(open_decompressed(io.BytesIO(bytes(compressed)), algo, **NO_CAP))


@pytest.mark.parametrize("algo", COMPRESSION_ALGORITHMS)
def test_garbage_after_the_last_stream_is_an_error(algo):
    compressed = compress(algo, b"disk") + b"trailing garbage"
    with pytest.raises(DecompressionError, match=f"The {algo} data is corrupt"):
        read_all(open_decompressed(io.BytesIO(compressed), algo, **NO_CAP))


def test_xz_stream_asking_for_a_4_gib_dictionary_is_refused_before_allocating_it():
    compressed = bytearray(lzma.compress(b"disk" * 1000, preset=0))
    # xz spec 3.1: the Block Header follows the 12-byte Stream Header; byte 4 of it is the LZMA2
    # dictionary-size property, 40 meaning 4 GiB - 1. The header's CRC32 covers it.
    assert compressed[13:16] == b"\x00\x21\x01"  # one filter, LZMA2, one property byte
    compressed[16] = 40
    compressed[20:24] = struct.pack("<I", zlib.crc32(compressed[12:20]))
    with pytest.raises(DecompressionError, match="^The xz data was compressed with a window larger than 256 MiB"):
        read_all(open_decompressed(io.BytesIO(bytes(compressed)), "xz", **NO_CAP))


def test_zstd_frame_with_a_1_gib_window_is_refused():
    params = zstandard.ZstdCompressionParameters(window_log=30)
    compressor = zstandard.ZstdCompressor(compression_params=params).compressobj()
    compressed = compressor.compress(b"disk" * 1000) + compressor.flush()
    assert zstandard.get_frame_parameters(compressed).window_size == GiB
    with pytest.raises(DecompressionError, match="^The zstd data was compressed with a window larger than 128 MiB"):
        read_all(open_decompressed(io.BytesIO(compressed), "zstd", **NO_CAP))


def test_decompression_error_is_an_image_format_error():
    assert issubclass(DecompressionError, ImageFormatError)


def test_decompress_file_removes_partial_output_on_failure(tmp_path, disk_like_data):
    src, dst = tmp_path / "disk.xz", tmp_path / "disk.raw"
    compressed = compress("xz", disk_like_data)
    src.write_bytes(compressed[: len(compressed) * 3 // 4])
    with pytest.raises(DecompressionError):
        decompress_file(src, dst, "xz", **NO_CAP)
    assert not dst.exists()


# -- caps and bombs ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def bombs(tmp_path_factory):
    """Compressed files of zeros that expand far beyond their size, written once per module.

    gzip: 160 members of 64 MiB of zeros, 10 GiB in ~10 MB (a 1000x ratio, near deflate's maximum).
    The others are single streams: zstd 1 GiB in 32 KiB; xz and bzip2, slower to write, 64 MiB.
    """
    directory = tmp_path_factory.mktemp("bombs")
    member = compress_zeros("gzip", 64 * MiB)
    paths = {"gzip": directory / "bomb.gz"}
    with open(paths["gzip"], "wb") as bomb:
        for _ in range(160):
            bomb.write(member)
    for algo, size in (("zstd", GiB), ("xz", 64 * MiB), ("bzip2", 64 * MiB)):
        paths[algo] = directory / f"bomb.{algo}"
        paths[algo].write_bytes(compress_zeros(algo, size))
    return paths


def measure(function):
    """Run `function`, returning (exception, seconds, peak traced allocations, RSS growth)."""
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tracemalloc.start()
    started = time.monotonic()
    try:
        function()
    except DecompressionError as exc:
        error = exc
    else:
        error = None
    elapsed = time.monotonic() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
    return error, elapsed, peak, rss_growth


@pytest.mark.parametrize("algo", COMPRESSION_ALGORITHMS)
def test_bomb_fails_early_on_the_ratio_cap_with_bounded_time_and_memory(algo, bombs, tmp_path):
    dst = tmp_path / "bomb.raw"
    error, elapsed, peak, rss_growth = measure(
        lambda: decompress_file(bombs[algo], dst, algo, max_output=100 * GiB, max_ratio=100)
    )
    assert str(error) == f"The {algo} data expands more than 100x; refused as a possible decompression bomb"
    assert elapsed < 10
    assert peak < 100 * MiB
    assert rss_growth < 100 * MiB
    assert not dst.exists()


@pytest.mark.parametrize("algo", COMPRESSION_ALGORITHMS)
def test_reader_stops_at_the_ratio_cap_within_one_read(algo, bombs):
    with open(bombs[algo], "rb") as raw:
        reader = open_decompressed(raw, algo, max_output=100 * GiB, max_ratio=50)
        with pytest.raises(DecompressionError, match="expands more than 50x"):
            read_all(reader, MiB)
        # Tripped by the read that crossed the cap: the output is at most the grace,
        # or the cap at the time, plus one read.
        assert reader.bytes_out <= max(MiB, 50 * reader.bytes_in) + MiB


def test_gzip_bomb_stops_at_the_output_cap_when_the_ratio_is_allowed(bombs, tmp_path):
    dst = tmp_path / "bomb.raw"
    error, elapsed, peak, _ = measure(
        lambda: decompress_file(bombs["gzip"], dst, "gzip", max_output=256 * MiB, max_ratio=float("inf"))
    )
    assert str(error) == "The gzip data expands beyond the 256 MiB limit on decompressed images"
    assert elapsed < 10
    assert peak < 100 * MiB
    assert not dst.exists()


def test_reader_never_hands_out_bytes_beyond_the_output_cap(bombs):
    delivered = 0
    with open(bombs["zstd"], "rb") as raw:
        reader = open_decompressed(raw, "zstd", max_output=10 * MiB + 123, max_ratio=float("inf"))

        def read_all():
            nonlocal delivered
            while chunk := reader.read(MiB):
                delivered += len(chunk)

        with pytest.raises(DecompressionError, match="beyond the 10 MiB limit"):
            read_all()
    assert delivered <= 10 * MiB + 123


def test_output_within_the_caps_is_accepted(bombs, tmp_path):
    size = decompress_file(bombs["zstd"], tmp_path / "zeros.raw", "zstd", max_output=GiB, max_ratio=float("inf"))
    assert size == GiB


def test_small_headers_are_within_the_ratio_grace():
    # 1 MiB of zeros is a 1000x expansion, but under the grace that keeps tiny inputs legal.
    compressed = gzip.compress(bytes(MiB))
    assert read_all(open_decompressed(io.BytesIO(compressed), "gzip", max_output=GiB, max_ratio=10)) == bytes(MiB)


def test_human_size_uses_binary_units():
    assert human_size(100 * GiB) == "100 GiB"
    assert human_size(1536 * MiB) == "1.5 GiB"
    assert human_size(10 * MiB) == "10 MiB"
    assert human_size(512) == "512 bytes"
    assert human_size(3 << 40) == "3 TiB"
