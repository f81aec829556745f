"""What an import's clean-up removes: stored bytes no Image owns, never an Image's bytes."""

import uuid

from imageactions.images import create_image
from imageactions.models import ImageAction
from imageactions.runner import clean_up
from imageactions.stores import default_store

STORED_KEY = f"images/{uuid.uuid4()}"


def stored_action(tmp_path, *, owner="project-a") -> ImageAction:
    """An import action whose `store` step has put bytes into the default store."""
    store = default_store()
    key = STORED_KEY
    staged = tmp_path / "staged"
    staged.write_bytes(b"image bytes")
    store.put_file(key, staged, size=11)
    return ImageAction.objects.create(
        action_type="import",
        owner=owner,
        status="failure",
        input={"source": "upload", "image_properties": {"name": "x"}},
        state={"store_keys": {store.name: key}, "stored": [store.name], "size": 11},
    )


def test_clean_up_after_a_failure_past_storing_removes_the_stored_object(db, tmp_path):
    action = stored_action(tmp_path)
    clean_up(action)
    assert not default_store().exists(STORED_KEY)


def test_clean_up_on_purge_of_a_successful_import_keeps_the_image_bytes(db, tmp_path):
    action = stored_action(tmp_path)
    create_image(
        locations=action.state["store_keys"],
        name="kept",
        disk_format="raw",
        size=11,
        checksum="0" * 32,
        os_hash_value="0" * 128,
        owner="project-a",
        created_by_action=action.pk,
    )
    clean_up(action)
    assert default_store().exists(STORED_KEY)
