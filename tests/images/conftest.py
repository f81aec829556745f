"""Images made directly (rows plus bytes in a store), so the Images API is tested without an import."""

import hashlib
import io
import uuid

import pytest

from imageactions.images import create_image
from imageactions.models import Image
from imageactions.stores import default_store, get_store
from tests.import_.conftest import image_server  # noqa: F401  (a fixture: the loopback image server)


def put_image(owner: str, data: bytes = b"disk image bytes", *, store: str | None = None, tags=(), **fields) -> Image:
    """An active Image of `owner` whose bytes `data` are in `store` (default: the default store)."""
    image_store = get_store(store) if store else default_store()
    image_id = uuid.uuid4()
    key = f"images/{image_id}"
    image_store.put_stream(key, io.BytesIO(data), size=len(data))
    values = {
        "name": f"image-{str(image_id)[:8]}",
        "disk_format": "raw",
        "size": len(data),
        "checksum": hashlib.md5(data).hexdigest(),
        "os_hash_algo": "sha512",
        "os_hash_value": hashlib.sha512(data).hexdigest(),
        **fields,
    }
    return create_image(id=image_id, owner=owner, locations={image_store.name: key}, tags=tags, **values)


@pytest.fixture
def make_image(db):
    return put_image
