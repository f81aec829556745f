"""transfer.copy_to_file: one streaming pass with hashes, a size cap and progress."""

import hashlib
import io

import pytest

from imageactions.transfer import CHUNK_SIZE, SizeLimitExceeded, copy_to_file, human_size


class TrickleReader(io.RawIOBase):
    """Returns short reads, as sockets do."""

    def __init__(self, data: bytes, piece: int):
        self.data, self.piece, self.offset = data, piece, 0

    def read(self, n=-1):
        chunk = self.data[self.offset : self.offset + min(self.piece, n if n >= 0 else self.piece)]
        self.offset += len(chunk)
        return chunk


def test_copy_writes_the_bytes_and_every_requested_hash(tmp_path):
    data = bytes(range(256)) * 20_000  # ~5 MiB: several chunks
    result = copy_to_file(TrickleReader(data, 100_000), tmp_path / "out", hash_algorithms=("md5", "sha512", "sha256"))
    assert (tmp_path / "out").read_bytes() == data
    assert result.size == len(data)
    assert result.hashes == {a: hashlib.new(a, data).hexdigest() for a in ("md5", "sha512", "sha256")}


def test_copy_reports_progress_against_the_announced_total(tmp_path):
    data = b"a" * (3 * CHUNK_SIZE + 5)
    reports = []
    copy_to_file(io.BytesIO(data), tmp_path / "out", total=len(data), progress=lambda d, t: reports.append((d, t)))
    assert reports[0] == (CHUNK_SIZE, len(data))
    assert reports[-1] == (len(data), len(data))
    assert [d for d, _ in reports] == sorted(d for d, _ in reports)


def test_copy_stops_at_the_cap_and_removes_the_partial_file(tmp_path):
    class Endless(io.RawIOBase):
        reads = 0

        def read(self, n=-1):
            Endless.reads += 1
            return b"x" * n

    with pytest.raises(SizeLimitExceeded, match=r"^The image is larger than the 2 MiB limit$"):
        copy_to_file(Endless(), tmp_path / "out", max_size=2 * CHUNK_SIZE)
    assert Endless.reads == 3
    assert not (tmp_path / "out").exists()


def test_copy_refuses_an_announced_size_over_the_cap_before_reading(tmp_path):
    source = io.BytesIO(b"x" * 10)
    with pytest.raises(SizeLimitExceeded):
        copy_to_file(source, tmp_path / "out", max_size=5, total=100 * 1024**3)
    assert source.tell() == 0


def test_an_error_from_the_source_removes_the_partial_file(tmp_path):
    class Breaks(io.RawIOBase):
        calls = 0

        def read(self, n=-1):
            Breaks.calls += 1
            if Breaks.calls > 2:
                raise ConnectionResetError("gone")
            return b"y" * n

    with pytest.raises(ConnectionResetError):
        copy_to_file(Breaks(), tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("size", "text"), [(0, "0 bytes"), (1023, "1023 bytes"), (12 * 1024**2, "12 MiB"), (100 * 1024**3, "100 GiB")]
)
def test_sizes_read_in_binary_units(size, text):
    assert human_size(size) == text
