"""A clone's failures carry error codes, for the whole clone and for each target store in
result.targets; its progress shows each target store's own; run by real workers."""

import time

import pytest

from imageactions.models import Image, ProjectQuota
from imageactions.stores import get_store
from tests.conftest import wait_for_action

from .conftest import CloneSetup, MiB, clone, files_under, image_bytes, run_clone


@pytest.fixture
def stores_with_a_broken_one(settings, start_workers, filesystem_stores, tmp_path):
    """'home', 'away' and 'far', and 'broken': a store whose directory is a plain file, so every
    write into it fails."""
    (tmp_path / "not-a-directory").write_bytes(b"")
    broken = {"type": "filesystem", "path": str(tmp_path / "not-a-directory" / "images"), "region": "south"}
    return CloneSetup(settings, start_workers, {**filesystem_stores, "broken": broken})


def test_a_store_that_cannot_be_written_fails_the_clone_as_store_unavailable(alice, stores_with_a_broken_one):
    workers = stores_with_a_broken_one.workers()
    source = stores_with_a_broken_one.image(store="home", data=image_bytes(MiB))

    action, body = run_clone(alice, workers, image_id=str(source.pk), stores=["away", "broken"])

    assert body["status"] == "failure"
    assert body["error_code"] == "store_unavailable" and body["error_details"] == {"store": "broken"}
    assert body["message"].startswith("The image could not be copied to store 'broken': ")
    assert body["message"].endswith("; nothing was cloned.")
    assert body["progress"]["targets"]["broken"]["status"] == "failed"


def test_a_partial_clone_says_which_store_failed_why_and_with_which_code(alice, stores_with_a_broken_one, tmp_path):
    workers = stores_with_a_broken_one.workers()
    size = MiB + 3
    source = stores_with_a_broken_one.image(store="home", data=image_bytes(size))

    action, body = run_clone(
        alice, workers, image_id=str(source.pk), stores=["away", "broken"], all_stores_must_succeed=False
    )

    assert body["status"] == "success", body["message"]
    assert body["error_code"] is None
    copied, failed = body["result"]["targets"]
    assert copied["store"] == "away" and copied["outcome"] == "copied"
    assert failed["store"] == "broken" and failed["outcome"] == "failed"
    assert failed["error_code"] == "store_unavailable" and failed["error_details"] == {"store": "broken"}
    # Something was cloned: the store's message says what became of that store alone.
    assert failed["message"].startswith("The image could not be copied to store 'broken': ")
    assert failed["message"].endswith("; the store was left out.")
    assert "nothing was cloned" not in failed["message"]
    assert body["result"]["failed_stores"] == ["broken"]
    assert body["progress"]["targets"] == {
        "away": {"status": "copied", "bytes_done": size, "bytes_total": size, "percent": 100.0},
        "broken": {"status": "failed", "bytes_done": 0, "bytes_total": size, "percent": 0.0},
    }


def test_a_clone_whose_every_store_fails_has_their_code(alice, stores_with_a_broken_one, settings, tmp_path):
    (tmp_path / "also-not-a-directory").write_bytes(b"")
    stores_with_a_broken_one.stores["broken2"] = {
        "type": "filesystem",
        "path": str(tmp_path / "also-not-a-directory" / "images"),
        "region": "south",
    }
    settings.IMAGE_STORES = stores_with_a_broken_one.stores
    workers = stores_with_a_broken_one.workers()
    source = stores_with_a_broken_one.image(store="home", data=image_bytes(MiB))

    action, body = run_clone(
        alice, workers, image_id=str(source.pk), stores=["broken", "broken2"], all_stores_must_succeed=False
    )

    assert body["status"] == "failure"
    assert body["message"] == "No target store took a verified copy: broken, broken2; nothing was cloned."
    assert body["error_code"] == "store_unavailable"
    assert body["error_details"] == {"error_codes": {"broken": "store_unavailable", "broken2": "store_unavailable"}}


def test_a_source_deleted_before_the_copy_is_image_not_found(alice, clone_setup):
    source = clone_setup.image(store="home")
    response = clone(alice, image_id=str(source.pk), stores=["away"])
    Image.objects.filter(pk=source.pk).update(status="deleted")
    workers = clone_setup.workers()

    action, body = run_clone_result(alice, workers, response)

    assert body["error_code"] == "image_not_found"
    assert body["error_details"] == {"image_id": str(source.pk)}


def test_a_source_whose_bytes_are_gone_from_its_store_is_image_data_missing(alice, clone_setup):
    workers = clone_setup.workers()
    source = clone_setup.image(store="home")
    get_store("home").delete(source.location.key)

    action, body = run_clone(alice, workers, image_id=str(source.pk), stores=["away"])

    assert body["status"] == "failure"
    assert body["error_code"] == "image_data_missing"
    assert body["error_details"] == {"image_id": str(source.pk), "store": "home"}


def test_copies_that_differ_from_the_source_are_checksum_mismatches_naming_whose_bytes(alice, clone_setup):
    workers = clone_setup.workers(IMAGEACTIONS_CLONE_STREAM_FILTER="tests.clone.faults.flip_one_byte")
    source = clone_setup.image(store="home")

    action, body = run_clone(alice, workers, image_id=str(source.pk), stores=["away"])

    assert body["error_code"] == "checksum_mismatch"
    details = body["error_details"]
    assert (details["store"], details["damaged"], details["algo"]) == ("away", "copy", "sha512")
    assert details["expected"] == source.os_hash_value and details["actual"] != source.os_hash_value

    workers = clone_setup.workers()
    damaged = clone_setup.image(store="home")
    path = get_store("home").local_path(damaged.location.key)
    path.write_bytes(b"\xff" + path.read_bytes()[1:])
    action, body = run_clone(alice, workers, image_id=str(damaged.pk), stores=["far"])
    assert body["error_code"] == "checksum_mismatch" and body["error_details"]["damaged"] == "source"


def test_copies_that_would_pass_the_projects_stored_bytes_quota_are_quota_exceeded(alice, clone_setup, tmp_path):
    workers = clone_setup.workers()
    size = MiB
    source = clone_setup.image(store="home", data=image_bytes(size))
    # Room for one more copy, not for two: the create passes (the quota is not used up).
    ProjectQuota.objects.create(project="project-a", image_size_total=2 * size + 10)

    action, body = run_clone(alice, workers, image_id=str(source.pk), stores=["away", "far"])

    assert body["status"] == "failure"
    assert body["error_code"] == "quota_exceeded"
    assert body["error_details"] == {
        "quota": "image_size_total",
        "limit": 2 * size + 10,
        "usage": size,
        "adding": 2 * size,
    }
    assert "nothing was cloned" in body["message"]
    assert files_under(tmp_path / "away") == [] and files_under(tmp_path / "far") == []


def run_clone_result(client, workers, response):
    assert response.status_code == 201, response.json()
    action = wait_for_action(response.json()["id"], workers=workers)
    return action, client.get(f"/v2/image-actions/{action.pk}").json()


# -- progress per target ------------------------------------------------------------------


def test_a_clone_to_two_stores_shows_each_stores_progress_while_copying_and_its_outcome_at_the_end(alice, clone_setup):
    # The copies are read at about 4 MiB/s (tests.clone.faults.slow_reader): each takes about
    # 1.5 s, in which the progress (written every 0.1 s by the tests' settings) is seen moving.
    workers = clone_setup.workers(IMAGEACTIONS_CLONE_STREAM_FILTER="tests.clone.faults.slow_reader")
    size = 6 * MiB
    source = clone_setup.image(store="home", data=image_bytes(size))
    response = clone(alice, image_id=str(source.pk), stores=["away", "far"])
    action_id = response.json()["id"]

    seen = []  # every progress seen while the copy step ran
    deadline = time.monotonic() + 60
    while True:
        body = alice.get(f"/v2/image-actions/{action_id}").json()
        if body["status"] in ("success", "failure", "cancelled"):
            break
        if body["progress"]["step"] == "copy" and "targets" in body["progress"]:
            seen.append(body["progress"])
        copying = {name for p in seen for name, t in p["targets"].items() if 0 < t["bytes_done"] < size}
        if copying == {"away", "far"}:
            break
        assert time.monotonic() < deadline, body
        time.sleep(0.03)

    for progress in seen:
        targets = progress["targets"]
        assert list(targets) == ["away", "far"]  # in the order asked
        # One write records the action's and the targets' progress: they always agree.
        assert progress["bytes_done"] == sum(target["bytes_done"] for target in targets.values())
        for target in targets.values():
            assert target["bytes_total"] == size
            assert target["status"] in ("waiting", "copying", "written")
            assert target["percent"] == round(100 * target["bytes_done"] / size, 1)
    # The stores are copied one after the other: "far" moves once "away" is written.
    mid_away = [p for p in seen if 0 < p["targets"]["away"]["bytes_done"] < size]
    mid_far = [p for p in seen if 0 < p["targets"]["far"]["bytes_done"] < size]
    assert mid_away and mid_far, seen
    assert all(
        p["targets"]["away"]["status"] == "copying" and p["targets"]["far"]["status"] == "waiting" for p in mid_away
    )
    assert all(
        p["targets"]["away"]["status"] == "written" and p["targets"]["far"]["status"] == "copying" for p in mid_far
    )

    action_body = run_clone_result(alice, workers, response)[1]
    assert action_body["status"] == "success", action_body["message"]
    outcomes = {target["store"]: target["outcome"] for target in action_body["result"]["targets"]}
    assert outcomes == {"away": "copied", "far": "copied"}
    assert action_body["progress"]["targets"] == {
        name: {"status": "copied", "bytes_done": size, "bytes_total": size, "percent": 100.0} for name in outcomes
    }


def test_actions_that_write_to_one_place_show_no_targets(alice, clone_setup):
    response = alice.post("/v2/image-actions", {"action_type": "test", "input": {}}, format="json")
    assert "targets" not in response.json()["progress"]
