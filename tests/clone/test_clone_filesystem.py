"""Clones between filesystem stores, run by real workers: the copies, verification, cancel."""

import hashlib
import time

from imageactions.models import Image
from imageactions.stores import get_store
from tests.conftest import wait_for_action

from .conftest import MiB, clone, files_under, image_bytes, images_made_by, run_clone
from .faults import CORRUPTED_OFFSET


def stored_bytes(image: Image) -> bytes:
    with get_store(image.location.store).open_read(image.location.key) as reader:
        return reader.read()


def test_clone_to_a_store_in_another_region_makes_an_equal_image_there(alice, clone_setup):
    workers = clone_setup.workers()
    data = image_bytes()
    source = clone_setup.image(
        store="home",
        data=data,
        name="base",
        disk_format="qcow2",
        virtual_size=10 * MiB,
        visibility="shared",
        min_disk=3,
        min_ram=512,
        properties={"os_distro": "debian"},
        tags=["gold", "lts"],
    )

    action, body = run_clone(alice, workers, image_id=str(source.pk), stores=["away"])

    assert body["status"] == "success", body["message"]
    [clone] = images_made_by(action.pk)
    assert body["result"] == {
        "image_refs": [str(clone.pk)],
        "images": [{"id": str(clone.pk), "store": "away", "region": "south"}],
        "failed_stores": [],
        "targets": [{"store": "away", "outcome": "copied", "image_id": str(clone.pk), "region": "south"}],
    }
    assert stored_bytes(clone) == data
    assert clone.location.key == f"images/{clone.pk}"
    for field in (
        "name",
        "disk_format",
        "container_format",
        "size",
        "virtual_size",
        "checksum",
        "os_hash_algo",
        "os_hash_value",
        "visibility",
        "min_disk",
        "min_ram",
        "owner",
    ):
        assert getattr(clone, field) == getattr(source, field), field
    assert clone.properties == {"os_distro": "debian", "cloned_from": str(source.pk)}
    assert sorted(clone.tag_set.values_list("name", flat=True)) == ["gold", "lts"]
    assert clone.os_hash_value == hashlib.sha512(data).hexdigest()
    assert body["progress"]["bytes_total"] == len(data) and body["progress"]["percent"] == 100.0
    shown = alice.get(f"/v2/images/{clone.pk}").json()
    assert shown["stores"] == "away"  # Glance's shape: the store names, comma-separated
    assert stored_bytes(source) == data  # the source is untouched


def test_a_clone_between_filesystem_stores_is_a_file_of_its_own_copied_by_the_kernel_and_read_back_once(
    alice, clone_setup
):
    workers = clone_setup.workers()
    data = image_bytes(9 * MiB + 5)
    source = clone_setup.image(store="home", data=data)

    action, body = run_clone(alice, workers, image_id=str(source.pk), stores=["away"])

    assert body["status"] == "success", body["message"]
    target = action.state["targets"]["away"]
    # The read-back happened while the kernel copied: the verify step compared its hash.
    assert (target["copied_by"], target["copy_sha512"]) == ("kernel", hashlib.sha512(data).hexdigest())
    assert action.events.filter(step="verify", outcome="success").exists()
    [clone] = images_made_by(action.pk)
    assert stored_bytes(clone) == data
    assert get_store("away").local_path(clone.location.key).stat().st_nlink == 1  # no link to the source
    assert body["progress"]["targets"] == {
        "away": {"status": "copied", "bytes_done": len(data), "bytes_total": len(data), "percent": 100.0}
    }


def test_clone_by_region_copies_to_every_store_of_the_region_under_the_new_name(alice, clone_setup):
    workers = clone_setup.workers()
    data = image_bytes(2 * MiB)
    source = clone_setup.image(store="home", data=data)

    action, body = run_clone(alice, workers, image_id=str(source.pk), regions=["south"], name="replica")

    assert body["status"] == "success", body["message"]
    clones = {image.location.store: image for image in images_made_by(action.pk)}
    assert set(clones) == {"away", "far"}
    assert body["result"]["images"] == [
        {"id": str(clones["away"].pk), "store": "away", "region": "south"},
        {"id": str(clones["far"].pk), "store": "far", "region": "south"},
    ]
    assert body["result"]["image_refs"] == [str(clones["away"].pk), str(clones["far"].pk)]
    for image in clones.values():
        assert image.name == "replica"
        assert stored_bytes(image) == data
    assert body["progress"]["bytes_total"] == 2 * len(data)


def test_a_copy_changed_in_flight_fails_verification_and_leaves_no_object_and_no_image(alice, clone_setup, tmp_path):
    workers = clone_setup.workers(IMAGEACTIONS_CLONE_STREAM_FILTER="tests.clone.faults.flip_one_byte")
    data = image_bytes()
    source = clone_setup.image(store="home", data=data)
    corrupted = bytearray(data)
    corrupted[CORRUPTED_OFFSET] ^= 0xFF

    action, body = run_clone(alice, workers, image_id=str(source.pk), stores=["away", "far"])

    assert body["status"] == "failure"
    assert body["message"] == (
        f"The copy in store 'away' does not match the source: expected sha512 {source.os_hash_value}, "
        f"got {hashlib.sha512(corrupted).hexdigest()}; nothing was cloned. Try again; if it happens again, "
        f"tell an operator."
    )
    assert action.events.filter(step="verify", outcome="failure").exists()
    assert files_under(tmp_path / "away") == [] and files_under(tmp_path / "far") == []
    assert images_made_by(action.pk) == []
    assert stored_bytes(source) == data


def test_a_clone_of_a_damaged_source_fails_naming_the_source_as_damaged(alice, clone_setup, tmp_path):
    workers = clone_setup.workers()
    source = clone_setup.image(store="home")
    path = get_store("home").local_path(source.location.key)
    damaged = bytearray(path.read_bytes())
    damaged[5] ^= 0x01
    path.write_bytes(bytes(damaged))

    action, body = run_clone(alice, workers, image_id=str(source.pk), stores=["away"])

    assert body["status"] == "failure"
    assert action.state["targets"]["away"]["copied_by"] == "kernel"
    assert body["error_code"] == "checksum_mismatch"
    assert body["message"].startswith(
        f"The source image's bytes in store 'home' no longer match its sha512 (recorded {source.os_hash_value}, "
        f"read {hashlib.sha512(bytes(damaged)).hexdigest()}); nothing was cloned."
    )
    assert files_under(tmp_path / "away") == []
    assert images_made_by(action.pk) == []


def test_cancel_during_copying_leaves_no_partial_object_and_no_image(alice, clone_setup, tmp_path):
    workers = clone_setup.workers(IMAGEACTIONS_CLONE_STREAM_FILTER="tests.clone.faults.slow_reader")
    source = clone_setup.image(store="home", data=image_bytes(16 * MiB))
    response = clone(alice, image_id=str(source.pk), stores=["away"])
    action_id = response.json()["id"]
    deadline = time.monotonic() + 30
    while True:
        body = alice.get(f"/v2/image-actions/{action_id}").json()
        if body["status"] == "copying" and body["progress"]["bytes_done"] >= MiB:
            break
        assert time.monotonic() < deadline, body
        time.sleep(0.05)
    assert files_under(tmp_path / "away"), "the copy should be under way"

    assert alice.post(f"/v2/image-actions/{action_id}/cancel").status_code in (200, 202)

    action = wait_for_action(action_id, workers=workers, timeout=30)
    assert action.status == "cancelled"
    assert files_under(tmp_path / "away") == []
    assert images_made_by(action_id) == []


def test_a_clone_whose_source_was_deleted_meanwhile_fails_and_says_so(alice, clone_setup, tmp_path):
    source = clone_setup.image(store="home")
    response = clone(alice, image_id=str(source.pk), stores=["away"])
    assert response.status_code == 201
    Image.objects.filter(pk=source.pk).update(status="deleted")
    workers = clone_setup.workers()

    action = wait_for_action(response.json()["id"], workers=workers)

    assert action.status == "failure"
    assert action.message == f"The image {source.pk} was deleted before it could be copied; nothing was cloned."
    assert files_under(tmp_path / "away") == []


def test_image_id_lists_the_clone_by_its_source_and_by_each_copy(alice, clone_setup):
    workers = clone_setup.workers()
    source = clone_setup.image(store="home")
    other = clone_setup.image(store="home")
    action, body = run_clone(alice, workers, image_id=str(source.pk), stores=["away", "far"])
    assert body["status"] == "success", body["message"]
    run_clone(alice, workers, image_id=str(other.pk), stores=["away"])  # another image's clone

    for image_id in (source.pk, *body["result"]["image_refs"]):
        listed = alice.get("/v2/image-actions", {"image_id": str(image_id)}).json()["results"]
        assert [item["id"] for item in listed] == [str(action.pk)]
