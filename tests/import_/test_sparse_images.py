"""Sparse images: blocks of zeros become holes in the staged file, in filesystem stores and in a
conversion's output, while sizes, hashes and downloads stay those of every byte. The imports run
through the API and real workers, from the loopback HTTP server."""

import gzip
import hashlib
import io
import os
import subprocess

import pytest
import requests

from imageactions.models import Image
from imageactions.sparse import HOLE_SIZE, SparseWriter, read_chunks
from imageactions.stores import FilesystemStore, get_store
from imageactions.transfer import CHUNK_SIZE, copy_to_file, hash_file
from tests.clone.conftest import (  # noqa: F401  (fixtures)
    CloneSetup,
    clone_setup_with_s3,
    filesystem_stores,
    s3_prefix,
)
from tests.conftest import wait_for_action
from tests.objectstore import object_store  # noqa: F401  (the session fixture)

from .conftest import assert_image_of, random_image, run_import, start_import, token_of

MiB = 1024 * 1024


def mostly_zeros(size: int, seed: int = 0) -> bytes:
    """A fresh disk's bytes: a boot area, a few scattered blocks of data at odd offsets, and zeros,
    up to the end (`size` need not be a multiple of a block)."""
    data = bytearray(size)
    data[: 64 * 1024] = random_image(64 * 1024, seed)
    for index, offset in enumerate(range(size // 7, size - MiB, size // 5)):
        piece = random_image(10_000, seed + index + 1)
        data[offset + 123 : offset + 123 + len(piece)] = piece
    return bytes(data)


def allocated(path) -> int:
    """Bytes of disk the file uses."""
    return os.stat(path).st_blocks * 512


def assert_sparse(path, data: bytes):
    """The file holds `data` exactly, with its zeros left as holes (its data is a few percent)."""
    assert os.stat(path).st_size == len(data)
    assert allocated(path) < len(data) // 20, f"{allocated(path)} bytes allocated of {len(data)}"
    with open(path, "rb") as file:
        assert hashlib.sha512(file.read()).hexdigest() == hashlib.sha512(data).hexdigest()


def stored_path(image: Image, store: str | None = None):
    location = image.locations.get(store=store) if store else image.location
    return get_store(location.store).local_path(location.key)


# -- the writer and reader -------------------------------------------------------------------

PATTERNS = {
    "mostly zeros, ending in an odd run of zeros": mostly_zeros(5 * MiB + 777),
    "zeros only": bytes(3 * MiB + 1),
    "data ending in a partial block": bytes(2 * MiB) + os.urandom(HOLE_SIZE + 5),
    "dense random data": os.urandom(3 * MiB + 17),
    "alternating blocks": b"".join(bytes(HOLE_SIZE) if i % 2 else os.urandom(HOLE_SIZE) for i in range(600)),
    "empty": b"",
}


class TrickleReader(io.RawIOBase):
    """Short reads at odd sizes, so chunks start anywhere within a block."""

    def __init__(self, data: bytes, piece: int):
        self.data, self.piece, self.offset = data, piece, 0

    def read(self, n=-1):
        chunk = self.data[self.offset : self.offset + min(self.piece, n)]
        self.offset += len(chunk)
        return chunk


@pytest.mark.parametrize("piece", [CHUNK_SIZE, 100_003])
@pytest.mark.parametrize("pattern", PATTERNS)
def test_a_sparse_copy_has_every_byte_its_hashes_and_its_length(pattern, piece, tmp_path):
    data = PATTERNS[pattern]
    out = tmp_path / "staged"
    result = copy_to_file(TrickleReader(data, piece), out, sparse=True)
    assert out.read_bytes() == data
    assert result.size == len(data)
    assert result.hashes == {"md5": hashlib.md5(data).hexdigest(), "sha512": hashlib.sha512(data).hexdigest()}
    assert hash_file(out) == result


@pytest.mark.parametrize("piece", [CHUNK_SIZE, 100_003])
def test_zeros_are_holes_in_a_sparse_copy_and_written_in_a_dense_one(piece, tmp_path):
    data = mostly_zeros(32 * MiB + 5)
    copy_to_file(TrickleReader(data, piece), tmp_path / "sparse", sparse=True)
    copy_to_file(TrickleReader(data, piece), tmp_path / "dense", sparse=False)
    assert_sparse(tmp_path / "sparse", data)
    # Holes are whole blocks of the file, wherever the chunks happened to end.
    blocks_with_data = sum(any(data[start : start + HOLE_SIZE]) for start in range(0, len(data), HOLE_SIZE))
    assert allocated(tmp_path / "sparse") <= blocks_with_data * HOLE_SIZE
    assert (tmp_path / "dense").read_bytes() == data
    assert allocated(tmp_path / "dense") >= len(data)


# A read buffer larger than the file system's holes (NFS, XFS with large I/O) must not hide
# where SEEK_DATA and SEEK_HOLE moved the file's position.
@pytest.mark.parametrize("buffering", [-1, 64 * 1024, 1024 * 1024])
def test_reading_a_sparse_file_gives_its_holes_as_zeros_without_reading_them(tmp_path, buffering):
    data = bytearray(mostly_zeros(8 * MiB + 3))
    # Holes smaller than the read buffer too: a block of data, then two of zeros.
    for offset in range(MiB, 2 * MiB, 3 * HOLE_SIZE):
        data[offset : offset + HOLE_SIZE] = random_image(HOLE_SIZE, offset)
    data = bytes(data)
    path = tmp_path / "image"
    with open(path, "wb") as file:
        writer = SparseWriter(file)
        writer.write(data)
        writer.finish()
    with open(path, "rb", buffering=buffering) as file:
        chunks = list(read_chunks(file, CHUNK_SIZE))
        assert file.tell() == len(data)
    assert b"".join(chunks) == data
    assert all(len(chunk) <= CHUNK_SIZE for chunk in chunks)
    holes = [chunk for chunk in chunks if isinstance(chunk, memoryview)]  # ZEROS, not read from the file
    assert sum(len(chunk) for chunk in holes) > len(data) // 2
    assert not any(any(chunk) for chunk in holes)


def test_a_filesystem_store_writes_a_stream_of_zeros_as_holes(settings, tmp_path):
    store = FilesystemStore("scratch", path=tmp_path / "store")
    data = mostly_zeros(16 * MiB + 9)
    store.put_stream("images/sparse", io.BytesIO(data), size=len(data))
    assert_sparse(store.local_path("images/sparse"), data)
    settings.SPARSE_IMAGES = False
    store.put_stream("images/dense", io.BytesIO(data), size=len(data))
    assert allocated(store.local_path("images/dense")) >= len(data)
    assert store.local_path("images/dense").read_bytes() == data


# -- imports through the API -----------------------------------------------------------------


def test_a_mostly_zero_image_is_stored_with_holes_and_downloads_byte_for_byte(alice, workers, image_server, api_server):
    data = mostly_zeros(48 * MiB + 4321)
    action = run_import(alice, workers, {"location": image_server.add("empty-disk.raw", data)})
    image = assert_image_of(action, data, disk_format="raw", virtual_size=len(data))
    # One store: the staged file itself was moved into it, holes and all.
    assert_sparse(stored_path(image), data)

    response = requests.get(
        f"{api_server.base_url}/v2/images/{image.pk}/file",
        headers={"Authorization": f"Token {token_of(alice)}"},
        stream=True,
        timeout=30,
    )
    assert response.status_code == 200
    downloaded = hashlib.sha512()
    size = 0
    for chunk in response.iter_content(MiB):
        downloaded.update(chunk)
        size += len(chunk)
    assert (size, downloaded.hexdigest()) == (len(data), hashlib.sha512(data).hexdigest())


def test_a_gzip_compressed_mostly_zero_image_is_decompressed_into_holes(alice, workers, image_server):
    data = mostly_zeros(40 * MiB + 1)
    compressed = gzip.compress(data, compresslevel=1)
    action = run_import(alice, workers, {"location": image_server.add("empty-disk.raw.gz", compressed)})
    image = assert_image_of(action, data)
    assert action.state["compression"] == "gzip"
    assert_sparse(stored_path(image), data)


def test_dense_random_data_is_stored_whole(alice, workers, image_server):
    data = random_image(6 * MiB + 11, seed=5)
    action = run_import(alice, workers, {"location": image_server.add("dense.raw", data)})
    image = assert_image_of(action, data)
    assert allocated(stored_path(image)) >= len(data)


@pytest.fixture
def two_stores(settings, start_workers, filesystem_stores):  # noqa: F811
    return CloneSetup(settings, start_workers, filesystem_stores)


def test_every_filesystem_store_of_an_import_keeps_the_holes(alice, two_stores, image_server):
    workers = two_stores.workers()
    data = mostly_zeros(24 * MiB + 99)
    action_id = start_import(alice, {"location": image_server.add("two.raw", data), "stores": ["home", "away"]})
    action = wait_for_action(action_id, workers=workers)
    image = assert_image_of(action, data)
    # 'home' got a copy written from the staged file, 'away' the staged file itself.
    for store in ("home", "away"):
        assert_sparse(stored_path(image, store), data)


@pytest.mark.objectstore
def test_an_s3_store_gets_every_byte_of_a_sparse_staged_file(alice, clone_setup_with_s3, image_server):  # noqa: F811
    workers = clone_setup_with_s3.workers()
    data = mostly_zeros(12 * MiB + 5)
    action_id = start_import(alice, {"location": image_server.add("to-s3.raw", data), "stores": ["bucket", "home"]})
    image = assert_image_of(wait_for_action(action_id, workers=workers), data)
    location = image.locations.get(store="bucket")
    with get_store("bucket").open_read(location.key) as stored:
        assert hashlib.sha512(stored.read()).hexdigest() == hashlib.sha512(data).hexdigest()
    assert_sparse(stored_path(image, "home"), data)


def test_with_sparse_images_off_every_byte_is_written(alice, two_stores, image_server):
    workers = two_stores.workers(IMAGEACTIONS_SPARSE_IMAGES="false")
    data = mostly_zeros(16 * MiB + 3)
    action_id = start_import(alice, {"location": image_server.add("dense-zeros.raw", data), "stores": ["home", "away"]})
    image = assert_image_of(wait_for_action(action_id, workers=workers), data)
    for store in ("home", "away"):
        assert allocated(stored_path(image, store)) >= len(data)


def test_a_qcow2_stored_as_raw_is_converted_into_holes(alice, start_workers_with, image_server, tmp_path):
    raw = mostly_zeros(64 * MiB)
    (tmp_path / "disk.raw").write_bytes(raw)
    qcow2 = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", tmp_path / "disk.raw", qcow2], check=True)
    workers = start_workers_with(IMAGEACTIONS_IMAGE_STORE_FORMAT="raw")
    action = run_import(alice, workers, {"location": image_server.add("disk.qcow2", qcow2.read_bytes())})
    image = assert_image_of(action, raw, disk_format="raw", virtual_size=len(raw))
    assert action.state["converted_from"] == "qcow2"
    assert_sparse(stored_path(image), raw)


def test_an_uploaded_mostly_zero_image_is_stored_with_holes(alice, workers):
    data = mostly_zeros(20 * MiB + 77)
    action_id = start_import(alice, {"source": "upload"})
    response = alice.generic(
        "PUT", f"/v2/image-actions/{action_id}/data", data, content_type="application/octet-stream"
    )
    assert response.status_code == 200, response.json()
    image = assert_image_of(wait_for_action(action_id, workers=workers), data)
    assert_sparse(stored_path(image), data)
