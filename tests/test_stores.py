"""The image store contract, run against the filesystem store and the S3 store on a real Swift."""

import hashlib
import io
import os
import shutil
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from imageactions.stores import (
    InvalidKey,
    ObjectNotFound,
    StoreError,
    all_stores,
    default_store,
    filesystem,
    get_store,
)
from tests.http_servers import free_port
from tests.objectstore import object_store  # noqa: F401  (the fixture; tests/conftest.py will import it too)

MiB = 1024 * 1024


class GeneratedStream(io.RawIOBase):
    """`size` bytes made on the fly in 1 MiB pieces, not seekable: how a clone reads another store."""

    def __init__(self, size: int, seed: bytes = b"image"):
        super().__init__()
        self.remaining = size
        self.piece = hashlib.sha512(seed).digest() * (MiB // 64)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = min(len(buffer), len(self.piece), self.remaining)
        buffer[:count] = self.piece[:count]
        self.remaining -= count
        return count


def generated_digest(size: int, seed: bytes = b"image") -> str:
    digest = hashlib.sha256()
    stream = GeneratedStream(size, seed)
    while chunk := stream.read(MiB):
        digest.update(chunk)
    return digest.hexdigest()


def stored_digest(store, key: str) -> str:
    digest = hashlib.sha256()
    with store.open_read(key) as reader:
        while chunk := reader.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


def new_key() -> str:
    return f"images/{uuid.uuid4()}"


@pytest.fixture(params=["filesystem", pytest.param("s3", marks=pytest.mark.objectstore)])
def store(request, settings, tmp_path):
    """The same store contract for each implementation; S3 with 5 MiB parts (S3's minimum)."""
    if request.param == "filesystem":
        config = {"type": "filesystem", "path": str(tmp_path / "store"), "region": "local"}
    else:
        server = request.getfixturevalue("object_store")
        config = server.s3_store_config(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    settings.IMAGE_STORES = {"contract": config}
    settings.DEFAULT_IMAGE_STORE = "contract"
    return get_store("contract")


@pytest.fixture
def s3_settings(settings, object_store):  # noqa: F811
    settings.IMAGE_STORES = {
        "east": object_store.s3_store_config(region="east", multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB),
        "west": object_store.s3_store_config(region="west", prefix="west"),
    }
    return settings


@pytest.fixture
def staged_file(tmp_path):
    def stage(data: bytes):
        path = tmp_path / f"staged-{uuid.uuid4()}"
        path.write_bytes(data)
        return path

    return stage


# -- the contract, for every store ------------------------------------------------------------


def test_put_file_then_read_whole_object_and_ranges(store, staged_file):
    data = os.urandom(3 * MiB + 123)
    key = new_key()
    store.put_file(key, staged_file(data), size=len(data))

    with store.open_read(key) as reader:
        assert reader.read() == data
    ranges = [(0, 10), (100, 2000), (len(data) - 5, None), (1000, len(data) + 100), (7, 7), (10, 3)]
    for start, end in ranges:
        with store.open_read(key, start=start, end=end) as reader:
            assert reader.read() == data[start:end], (start, end)
    assert store.size(key) == len(data)
    assert store.exists(key)


def test_range_starting_at_or_past_the_end_reads_empty(store, staged_file):
    key = new_key()
    store.put_file(key, staged_file(b"0123456789"), size=10)
    for start in (10, 11, 1000):
        with store.open_read(key, start=start) as reader:
            assert reader.read() == b""


def test_reader_returns_the_object_in_pieces_of_the_requested_size(store, staged_file):
    data = os.urandom(MiB + 17)
    key = new_key()
    store.put_file(key, staged_file(data), size=len(data))
    pieces = []
    with store.open_read(key, start=5) as reader:
        while piece := reader.read(64 * 1024):
            assert len(piece) <= 64 * 1024
            pieces.append(piece)
    assert b"".join(pieces) == data[5:]


def test_delete_removes_the_object_and_is_idempotent(store, staged_file):
    key = new_key()
    store.put_file(key, staged_file(b"bytes"), size=5)
    store.delete(key)
    assert not store.exists(key)
    store.delete(key)
    store.delete(new_key())


def test_deleting_the_last_object_of_a_directory_removes_it_and_no_more(settings, tmp_path, staged_file):
    settings.IMAGE_STORES = {"fs": {"type": "filesystem", "path": str(tmp_path / "store"), "region": "local"}}
    store = get_store("fs")
    first, second = "exports/one/disk.qcow2", "exports/two/disk.qcow2"
    store.put_file(first, staged_file(b"one"), size=3)
    store.put_file(second, staged_file(b"two"), size=3)
    store.delete(first)
    assert sorted(str(p.relative_to(tmp_path / "store")) for p in (tmp_path / "store").rglob("*")) == [
        "exports",
        "exports/two",
        "exports/two/disk.qcow2",
    ]
    store.delete(second)
    assert list((tmp_path / "store").iterdir()) == []  # the root itself stays


def test_missing_key_raises_object_not_found_naming_key_and_store(store):
    key = new_key()
    with pytest.raises(ObjectNotFound, match=f"Object '{key}' was not found in image store 'contract'"):
        store.open_read(key)
    with pytest.raises(ObjectNotFound):
        store.size(key)
    assert not store.exists(key)


def test_put_stream_of_unknown_size_stores_every_byte(store):
    size = 20 * MiB + 3
    key = new_key()
    reports = []
    store.put_stream(key, GeneratedStream(size), size=None, progress=lambda done, total: reports.append((done, total)))
    assert store.size(key) == size
    assert stored_digest(store, key) == generated_digest(size)
    assert reports[-1] == (size, None)


def test_put_stream_with_wrong_declared_size_stores_nothing(store):
    key = new_key()
    with pytest.raises(StoreError, match="had 1000 bytes where 1001 were expected"):
        store.put_stream(key, GeneratedStream(1000), size=1001)
    assert not store.exists(key)
    with pytest.raises(StoreError, match="where 999 were expected"):
        store.put_stream(key, GeneratedStream(1000), size=999)
    assert not store.exists(key)


def test_put_file_reports_progress_up_to_its_size(store, staged_file):
    data = os.urandom(6 * MiB)
    reports = []
    store.put_file(
        new_key(), staged_file(data), size=len(data), progress=lambda done, total: reports.append((done, total))
    )
    assert reports[-1] == (len(data), len(data))
    assert all(total == len(data) for _, total in reports)


def test_put_file_with_wrong_declared_size_is_refused(store, staged_file):
    key = new_key()
    with pytest.raises(StoreError, match="has 4 bytes, 5 were expected"):
        store.put_file(key, staged_file(b"four"), size=5)
    assert not store.exists(key)


def test_put_replaces_an_existing_object_whole(store, staged_file):
    key = new_key()
    store.put_file(key, staged_file(b"first version"), size=13)
    store.put_stream(key, io.BytesIO(b"second"), size=6)
    with store.open_read(key) as reader:
        assert reader.read() == b"second"


def test_memory_stays_bounded_while_storing_a_200_mib_stream(store):
    size = 200 * MiB
    key = new_key()
    tracemalloc.start()
    try:
        store.put_stream(key, GeneratedStream(size), size=size)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * MiB, f"peak {peak / MiB:.1f} MiB"
    assert store.size(key) == size
    store.delete(key)


def test_describe_shows_name_region_and_kind_only(store, settings):
    config = settings.IMAGE_STORES["contract"]
    assert store.describe() == {"name": "contract", "region": config["region"], "kind": config["type"]}


def test_keys_that_are_not_plain_relative_paths_are_refused(store):
    for key in ("../escape", "/etc/passwd", "images/../../escape", "images/./x", "images//x", "", "images/"):
        with pytest.raises(InvalidKey):
            store.size(key)
        with pytest.raises(InvalidKey):
            store.put_stream(key, io.BytesIO(b"x"), size=1)


# -- filesystem store -----------------------------------------------------------------------


@pytest.fixture
def filesystem_store(settings, tmp_path):
    settings.IMAGE_STORES = {"local": {"type": "filesystem", "path": str(tmp_path / "images"), "region": "local"}}
    return get_store("local")


def test_filesystem_put_file_on_the_same_filesystem_is_a_rename(filesystem_store, tmp_path):
    staged = tmp_path / "staged"
    staged.write_bytes(b"image bytes")
    inode = staged.stat().st_ino
    key = new_key()
    filesystem_store.put_file(key, staged, size=11)
    assert filesystem_store.local_path(key).stat().st_ino == inode
    assert not staged.exists()


def test_filesystem_put_file_from_another_filesystem_copies_it(filesystem_store, tmp_path):
    other = "/dev/shm"
    if not os.path.isdir(other) or os.stat(other).st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on another filesystem than the temporary directory")
    staged = os.path.join(other, f"imageactions-test-{uuid.uuid4()}")
    with open(staged, "wb") as file:
        file.write(b"from tmpfs")
    try:
        key = new_key()
        filesystem_store.put_file(key, staged, size=10)
        assert filesystem_store.local_path(key).read_bytes() == b"from tmpfs"
    finally:
        if os.path.exists(staged):
            os.unlink(staged)


def test_filesystem_refuses_keys_that_escape_its_root(filesystem_store, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"not an image")
    root = filesystem_store.root
    root.mkdir(parents=True)
    (root / "link").symlink_to(outside)
    for key in ("../outside/secret", "/etc/passwd", "link/secret"):
        with pytest.raises(InvalidKey):
            filesystem_store.open_read(key)
        with pytest.raises(InvalidKey):
            filesystem_store.delete(key)
    assert (outside / "secret").exists()


def test_filesystem_leaves_no_partial_file_when_a_write_fails(filesystem_store):
    class FailingStream(io.RawIOBase):
        def readinto(self, buffer):
            raise StoreError("the source went away")

    key = new_key()
    with pytest.raises(StoreError, match="the source went away"):
        filesystem_store.put_stream(key, FailingStream(), size=None)
    directory = filesystem_store.local_path(key).parent
    assert list(directory.iterdir()) == []


def test_filesystem_local_path_is_the_file_that_holds_the_object(filesystem_store):
    key = new_key()
    filesystem_store.put_stream(key, io.BytesIO(b"abc"), size=3)
    assert filesystem_store.local_path(key) == filesystem_store.root / key
    assert filesystem_store.local_path(key).read_bytes() == b"abc"


def test_filesystem_server_side_copy_links_without_copying(settings, tmp_path):
    settings.IMAGE_STORES = {
        "one": {"type": "filesystem", "path": str(tmp_path / "one")},
        "two": {"type": "filesystem", "path": str(tmp_path / "two")},
    }
    one, two = get_store("one"), get_store("two")
    one.put_stream("images/a", io.BytesIO(b"shared bytes"), size=12)
    assert two.server_side_copy(one, "images/a", "images/b")
    assert two.local_path("images/b").read_bytes() == b"shared bytes"
    assert two.local_path("images/b").stat().st_ino == one.local_path("images/a").stat().st_ino
    with pytest.raises(ObjectNotFound, match="in image store 'one'"):
        two.server_side_copy(one, "images/missing", "images/c")


@pytest.fixture
def two_filesystem_stores(settings, tmp_path):
    """'one' and 'two', in two directories of one file system."""
    settings.IMAGE_STORES = {
        "one": {"type": "filesystem", "path": str(tmp_path / "one")},
        "two": {"type": "filesystem", "path": str(tmp_path / "two")},
    }
    return get_store("one"), get_store("two")


def test_filesystem_copy_from_another_store_is_a_file_of_its_own_copied_by_the_kernel_in_slices(
    two_filesystem_stores, monkeypatch
):
    monkeypatch.setattr(filesystem, "KERNEL_COPY_SLICE", MiB)
    one, two = two_filesystem_stores
    size = 5 * MiB + 3
    one.put_stream("images/a", GeneratedStream(size), size=size)
    reports, read_back = [], hashlib.sha256()

    assert (
        two.copy_from(
            one,
            "images/a",
            "images/b",
            size=size,
            progress=lambda *report: reports.append(report),
            read_back=read_back.update,
        )
        == "kernel"
    )

    assert stored_digest(two, "images/b") == generated_digest(size) == read_back.hexdigest()
    assert two.local_path("images/b").stat().st_ino != one.local_path("images/a").stat().st_ino
    assert [done for done, _total in reports] == [MiB, 2 * MiB, 3 * MiB, 4 * MiB, 5 * MiB, size, size]
    assert {total for _done, total in reports} == {size}
    assert sorted(path.name for path in two.local_path("images/b").parent.iterdir()) == ["b"]


def test_filesystem_copy_from_keeps_the_holes_of_a_sparse_image(two_filesystem_stores):
    one, two = two_filesystem_stores
    source = one.root / "images" / "sparse"
    source.parent.mkdir(parents=True)
    with open(source, "wb") as out:
        out.write(b"boot" * (MiB // 4))
        out.seek(8 * MiB)
        out.write(b"data" * (MiB // 4))
        out.truncate(32 * MiB)  # ends in a hole
    size = source.stat().st_size

    read_back = []

    assert two.copy_from(one, "images/sparse", "images/copy", size=size, read_back=read_back.append) == "kernel"

    copy = two.local_path("images/copy")
    assert copy.read_bytes() == source.read_bytes() == b"".join(read_back)
    assert copy.stat().st_blocks * 512 <= 4 * MiB  # about the 2 MiB of data, not 32 MiB


def test_filesystem_copy_from_a_store_on_another_file_system_is_copied_by_the_kernel_too(settings, tmp_path):
    memory = Path(tempfile.mkdtemp(dir="/dev/shm")) if Path("/dev/shm").is_dir() else None
    if memory is None or memory.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on a file system of its own")
    try:
        settings.IMAGE_STORES = {
            "memory": {"type": "filesystem", "path": str(memory)},
            "disk": {"type": "filesystem", "path": str(tmp_path / "disk")},
        }
        memory_store, disk = get_store("memory"), get_store("disk")
        size = 3 * MiB + 1
        memory_store.put_stream("images/a", GeneratedStream(size), size=size)

        read_back = hashlib.sha256()

        # copy_file_range refuses two file systems (EXDEV); sendfile copies instead.
        assert disk.copy_from(memory_store, "images/a", "images/a", size=size, read_back=read_back.update) == "kernel"

        assert stored_digest(disk, "images/a") == generated_digest(size) == read_back.hexdigest()
    finally:
        shutil.rmtree(memory)


def test_filesystem_copy_whose_read_back_fails_stores_nothing_and_says_why(two_filesystem_stores):
    one, two = two_filesystem_stores
    size = 3 * MiB
    one.put_stream("images/a", GeneratedStream(size), size=size)

    def read_back(chunk):
        raise ValueError("the reader of the copy gave up")

    with pytest.raises(ValueError, match="the reader of the copy gave up"):
        two.copy_from(one, "images/a", "images/b", size=size, read_back=read_back)
    assert list((two.root / "images").iterdir()) == []


def test_filesystem_copy_from_a_missing_or_resized_source_stores_nothing(two_filesystem_stores):
    one, two = two_filesystem_stores
    with pytest.raises(ObjectNotFound, match="'images/missing' was not found in image store 'one'"):
        two.copy_from(one, "images/missing", "images/b", size=10)
    one.put_stream("images/a", io.BytesIO(b"12345"), size=5)
    with pytest.raises(StoreError, match="'images/a' of image store 'one' has 5 bytes, 6 were expected"):
        two.copy_from(one, "images/a", "images/b", size=6)
    assert list((two.root / "images").iterdir()) == []


# -- S3 store -------------------------------------------------------------------------------


@pytest.mark.objectstore
def test_s3_put_stream_of_unknown_size_is_a_multipart_upload(s3_settings):
    store = get_store("east")
    key = new_key()
    store.put_stream(key, GeneratedStream(20 * MiB), size=None)
    etag = store.client.head_object(Bucket=store.bucket, Key=key)["ETag"]
    assert etag.strip('"').endswith("-4")  # 20 MiB in 5 MiB parts


@pytest.mark.objectstore
def test_s3_prefix_places_objects_under_it(s3_settings):
    store = get_store("west")
    key = new_key()
    store.put_stream(key, io.BytesIO(b"west"), size=4)
    assert store.client.head_object(Bucket=store.bucket, Key=f"west/{key}")["ContentLength"] == 4
    assert store.local_path(key) is None


@pytest.mark.objectstore
def test_s3_server_side_copy_on_the_same_endpoint(s3_settings):
    east, west = get_store("east"), get_store("west")
    size = 12 * MiB  # above east's 5 MiB multipart threshold: a multipart copy
    key = new_key()
    east.put_stream(key, GeneratedStream(size), size=size)
    assert west.server_side_copy(east, key, key)
    assert west.size(key) == size
    assert stored_digest(west, key) == generated_digest(size)
    small = new_key()
    west.put_stream(small, io.BytesIO(b"small"), size=5)
    assert east.server_side_copy(west, small, small)
    assert east.open_read(small).read() == b"small"
    with pytest.raises(ObjectNotFound, match="in image store 'east'"):
        west.server_side_copy(east, new_key(), new_key())


@pytest.mark.objectstore
def test_s3_copy_from_on_the_same_endpoint_is_server_side_with_progress(s3_settings):
    east, west = get_store("east"), get_store("west")
    size = 12 * MiB
    key = new_key()
    east.put_stream(key, GeneratedStream(size), size=size)
    reports = []

    assert west.copy_from(east, key, key, size=size, progress=lambda *report: reports.append(report)) == "server-side"

    assert stored_digest(west, key) == generated_digest(size)
    assert reports[-1] == (size, size)


@pytest.mark.objectstore
def test_server_side_copy_between_different_services_is_declined(s3_settings, object_store, tmp_path):  # noqa: F811
    s3_settings.IMAGE_STORES = {
        **s3_settings.IMAGE_STORES,
        "local": {"type": "filesystem", "path": str(tmp_path / "local")},
        "elsewhere": object_store.s3_store_config(endpoint_url="http://127.0.0.1:1"),
    }
    east, local, elsewhere = get_store("east"), get_store("local"), get_store("elsewhere")
    assert not east.server_side_copy(local, "images/a", "images/a")
    assert not local.server_side_copy(east, "images/a", "images/a")
    assert not elsewhere.server_side_copy(east, "images/a", "images/a")
    assert east.copy_from(local, "images/a", "images/a", size=1) is None
    assert local.copy_from(east, "images/a", "images/a", size=1) is None
    assert elsewhere.copy_from(east, "images/a", "images/a", size=1) is None


def test_s3_store_on_a_closed_port_fails_quickly_naming_the_store(settings):
    settings.IMAGE_STORES = {
        "s3east": {
            "type": "s3",
            "bucket": "images",
            "endpoint_url": f"http://127.0.0.1:{free_port()}",
            "access_key": "key",
            "secret_key": "secret",
            "addressing_style": "path",
            "connect_timeout": 1,
            "max_attempts": 1,
        }
    }
    store = get_store("s3east")
    started = time.monotonic()
    with pytest.raises(StoreError, match="The image store 's3east' could not be reached at http://127.0.0.1:"):
        store.size("images/x")
    with pytest.raises(StoreError, match="'s3east' could not be reached"):
        store.put_stream("images/x", io.BytesIO(b"x"), size=1)
    assert time.monotonic() - started < 5


@pytest.mark.objectstore
def test_s3_missing_bucket_is_named_in_the_error(settings, object_store):  # noqa: F811
    settings.IMAGE_STORES = {"nobucket": object_store.s3_store_config(bucket="no-such-bucket")}
    store = get_store("nobucket")
    message = "The bucket 'no-such-bucket' of image store 'nobucket' does not exist"
    for attempt in (
        lambda: store.size("images/x"),
        lambda: store.open_read("images/x"),
        lambda: store.put_stream("images/x", io.BytesIO(b"x"), size=1),
        lambda: store.delete("images/x"),
    ):
        with pytest.raises(StoreError, match=message) as caught:
            attempt()
        assert not isinstance(caught.value, ObjectNotFound)


@pytest.mark.objectstore
def test_s3_wrong_secret_is_reported_as_refused_access(settings, object_store):  # noqa: F811
    settings.IMAGE_STORES = {"badkey": object_store.s3_store_config(secret_key="wrong")}
    store = get_store("badkey")
    with pytest.raises(StoreError, match="The image store 'badkey' refused to store 'images/x'") as caught:
        store.put_stream("images/x", io.BytesIO(b"x"), size=1)
    assert "wrong" not in str(caught.value)


@pytest.mark.objectstore
def test_s3_client_deletes_many_objects_at_once_on_swift(object_store):  # noqa: F811
    # botocore >= 1.36 leaves out Content-MD5, which Swift's s3api requires for DeleteObjects.
    client = object_store.s3_client()
    keys = [new_key() for _ in range(3)]
    for key in keys:
        client.put_object(Bucket=object_store.bucket, Key=key, Body=b"x")
    answer = client.delete_objects(Bucket=object_store.bucket, Delete={"Objects": [{"Key": key} for key in keys]})
    assert sorted(deleted["Key"] for deleted in answer["Deleted"]) == sorted(keys)


# -- configuration --------------------------------------------------------------------------


def test_unknown_store_name_lists_the_configured_ones(settings, tmp_path):
    settings.IMAGE_STORES = {
        "local": {"type": "filesystem", "path": str(tmp_path)},
        "s3east": {"type": "s3", "bucket": "b"},
    }
    with pytest.raises(StoreError, match="no image store named 'nowhere' \\(configured stores: 'local', 's3east'\\)"):
        get_store("nowhere")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"type": "ftp"}, "IMAGE_STORES\\['broken'\\] has unknown 'type' 'ftp'"),
        ({"path": "/x"}, "IMAGE_STORES\\['broken'\\] has unknown 'type' None"),
        ({"type": "s3", "endpoint_url": "http://x"}, "IMAGE_STORES\\['broken'\\] is missing 'bucket'"),
        ({"type": "filesystem"}, "IMAGE_STORES\\['broken'\\] is missing 'path'"),
        ({"type": "s3", "bucket": "b", "endpoint": "http://x"}, "has unknown key 'endpoint'"),
        ({"type": "s3", "bucket": "b", "multipart_chunksize": 1024}, "'multipart_chunksize'\\] must be at least"),
        ({"type": "s3", "bucket": "b", "read_timeout": "soon"}, "'read_timeout'\\] must be a positive number"),
    ],
)
def test_configuration_mistakes_name_the_store_and_the_key(settings, config, message):
    settings.IMAGE_STORES = {"broken": config}
    with pytest.raises(ImproperlyConfigured, match=message):
        get_store("broken")


def test_stores_are_built_once_and_rebuilt_when_settings_change(settings, tmp_path):
    settings.IMAGE_STORES = {"local": {"type": "filesystem", "path": str(tmp_path / "a")}}
    settings.DEFAULT_IMAGE_STORE = "local"
    first = get_store("local")
    assert get_store("local") is first
    assert default_store() is first
    settings.IMAGE_STORES = {
        "local": {"type": "filesystem", "path": str(tmp_path / "b")},
        "s3east": {"type": "s3", "bucket": "b", "region": "east"},
    }
    assert get_store("local") is not first
    assert [store.describe() for store in all_stores()] == [
        {"name": "local", "region": "local", "kind": "filesystem"},
        {"name": "s3east", "region": "east", "kind": "s3"},
    ]


@pytest.mark.objectstore
def test_s3_upload_fed_chunk_by_chunk_holds_a_few_parts_and_is_aborted_whole(settings, object_store):  # noqa: F811
    from imageactions.stores.s3 import PARTS_IN_FLIGHT

    part_size = 5 * MiB
    config = object_store.s3_store_config(prefix=f"parts-{uuid.uuid4().hex[:8]}", multipart_chunksize=part_size)
    settings.IMAGE_STORES = {"parts": config}
    store, client = get_store("parts"), object_store.s3_client()
    size = 120 * MiB + 5
    key = new_key()
    upload = store.start_upload(key, max_size=size)
    assert upload.part_size == part_size  # the configured chunk size: 10,000 of them hold far more
    stream = GeneratedStream(size)
    tracemalloc.start()
    try:
        while chunk := stream.read(MiB):
            upload.write(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The parts sent so far, each at least the part size (S3's rule for all but the last).
    sent = client.list_parts(Bucket=object_store.bucket, Key=f"{store.prefix}{key}", UploadId=upload.upload_id)
    assert sent["Parts"] and all(part["Size"] >= part_size for part in sent["Parts"])
    upload.complete()
    assert stored_digest(store, key) == generated_digest(size)
    # The parts being sent, the one filling and its joined copy: not the 120 MiB.
    assert peak < (PARTS_IN_FLIGHT + 2) * part_size + 2 * MiB, f"peak {peak / MiB:.1f} MiB"

    abandoned = store.start_upload(new_key(), max_size=size)
    abandoned.write(GeneratedStream(12 * MiB).read(12 * MiB))
    abandoned.abort()
    assert abandoned.upload_id not in {upload.upload_id for upload in store.list_uploads()}
    store.delete(key)


def test_s3_part_size_is_whole_mib_enough_for_10000_parts(settings):
    settings.IMAGE_STORES = {"parts": {"type": "s3", "bucket": "b", "multipart_chunksize": 8 * MiB}}
    store = get_store("parts")
    assert store.part_size(None) == store.part_size(80_000 * MiB) == 8 * MiB
    assert store.part_size(80_000 * MiB + 1) == 9 * MiB
    assert store.part_size(1024 * 1024 * MiB) == 105 * MiB  # 1 TiB: 9,986 parts


@pytest.mark.objectstore
def test_s3_upload_aborted_while_parts_are_being_sent_leaves_no_upload(settings, object_store):  # noqa: F811
    from imageactions.stores.s3 import PARTS_IN_FLIGHT

    config = object_store.s3_store_config(prefix=f"parts-{uuid.uuid4().hex[:8]}", multipart_chunksize=5 * MiB)
    settings.IMAGE_STORES = {"parts": config}
    store, client = get_store("parts"), object_store.s3_client()
    upload = store.start_upload(new_key(), max_size=1024 * MiB)
    stream = GeneratedStream(PARTS_IN_FLIGHT * 5 * MiB)
    while chunk := stream.read(MiB):
        upload.write(chunk)
    assert any(not part.done() for part in upload._parts)  # parts still on their way

    upload.abort()

    assert upload.upload_id not in {pending.upload_id for pending in store.list_uploads()}
    listed = client.list_multipart_uploads(Bucket=object_store.bucket, Prefix=store.prefix)
    assert listed.get("Uploads", []) == []


@pytest.mark.objectstore
def test_s3_copy_from_a_source_of_another_size_copies_nothing(s3_settings):
    east, west = get_store("east"), get_store("west")
    key = new_key()
    east.put_stream(key, io.BytesIO(b"12345"), size=5)
    with pytest.raises(StoreError, match=f"'{key}' of image store 'east' has 5 bytes, 6 were expected"):
        west.copy_from(east, key, key, size=6)
    assert not west.exists(key)
