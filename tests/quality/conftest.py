"""Fixtures for the quality-control tests: the real and hostile images of tests/formats, served by
the import tests' loopback HTTP server, and helpers that import them through the API."""

import gzip
import lzma
import subprocess
import time
import zlib

import pytest
import zstandard

from imageactions.runner import scratch_dir
from tests.conftest import wait_for_action
from tests.formats.conftest import hostile_images, image_dir, non_images, real_images  # noqa: F401
from tests.import_.conftest import assert_left_nothing, image_server, start_import  # noqa: F401

MiB = 1 << 20

COMPRESSORS = {
    "gzip": gzip.compress,
    "xz": lzma.compress,
    "zstd": lambda data: zstandard.ZstdCompressor().compress(data),
}


@pytest.fixture(scope="session")
def data_qcow2(real_images, image_dir):  # noqa: F811
    """A qcow2 with data in it (real_images' qcow2 are empty), and the raw disk it was made from."""
    source = real_images["stream-optimized.vmdk"].path.parent / "source.raw"
    target = image_dir / "data.qcow2"
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(source), str(target)], check=True)
    return target, source


def gzip_bomb(expanded: int) -> bytes:
    """gzip of `expanded` zero bytes: about a thousandth of the size it expands to."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: a gzip header and trailer
    zeros = bytes(MiB)
    parts = [compressor.compress(zeros) for _ in range(expanded // MiB)]
    return b"".join(parts) + compressor.flush()


def import_file(client, server, workers, path, *, name=None, timeout=60, **properties):
    """Serve `path` (or bytes) on the loopback server, import it, and return the ended action."""
    data = path if isinstance(path, bytes) else path.read_bytes()
    file_name = name or (path.name if not isinstance(path, bytes) else "data.img")
    url = server.add(file_name, data)
    try:
        action_id = start_import(client, {"location": url}, **properties)
        return wait_for_action(action_id, workers=workers, timeout=timeout)
    finally:
        server.files.pop(file_name, None)


def assert_refused_cleanly(action, *fragments):
    """The import failed with a message holding every fragment, and left nothing behind."""
    assert action.status == "failure", f"{action.status}: {action.message}"
    for fragment in fragments:
        assert fragment in action.message, action.message
    # The runner removes the scratch directory just after it records the failure.
    deadline = time.monotonic() + 5
    while scratch_dir(action.pk).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert_left_nothing(action)
