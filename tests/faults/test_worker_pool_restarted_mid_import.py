"""A worker pool restarted (SIGTERM, then a new pool) while imports download: the downloads under
way are handed back at once when the grace period ends, the next pool runs them, and every
import ends with exactly one Image with the right bytes, each step recorded once as a success."""

from imageactions.models import ActionEvent, Image, ImageAction
from tests.conftest import wait_for_action
from tests.import_.conftest import assert_image_of, start_import

from .conftest import MiB, embedded_only, patterned_bytes, wait_until

pytestmark = embedded_only

SIZE, RATE = 20 * MiB, 2 * MiB  # ten seconds per download: the restart lands mid-fetch
STOP_GRACE = 1
# Only a hand-back can explain a step that runs again within seconds: these pools' reapers would
# count a worker dead only after ten minutes without heartbeats.
SLOW_REAPER = {"IMAGEACTIONS_REAPER_INTERVAL": "600", "IMAGEACTIONS_HEARTBEAT_INTERVAL": "200"}


def test_worker_pool_restarted_mid_imports_ends_every_import_once_with_its_image(alice, start_workers, faulty_server):
    pool = start_workers(workers=2, env={"IMAGEACTIONS_STOP_GRACE": str(STOP_GRACE), **SLOW_REAPER})
    images = {}  # action id: (file name, bytes)
    for seed in range(3):  # one more than the pool has workers: one import waits in the queue
        name, data = f"image-{seed}.img", patterned_bytes(SIZE, seed=seed)
        images[start_import(alice, {"location": faulty_server.add(name, data, rate=RATE)})] = (name, data)
    downloading = wait_until(
        lambda: _downloads_under_way(images, at_least=MiB, expected=2), timeout=30, what="two downloads under way"
    )

    took = pool.stop_gracefully()

    # The grace second and a hand-back, not the eight seconds or more the downloads had left.
    assert took < 7, (took, pool.log_tail())
    for action_id in downloading:
        row = ImageAction.objects.get(pk=action_id)
        assert (row.step_state, row.run_token, row.restarts) == ("queued", None, 0)

    # A worker for each import: the queued one, if taken first, must not hold a hand-back back.
    new_pool = start_workers(workers=3, env=SLOW_REAPER)
    wait_until(
        lambda: all(len(faulty_server.files[images[action_id][0]].requests) == 2 for action_id in downloading),
        timeout=15,
        what="the handed-back downloads starting again",
    )
    for action_id, (name, data) in images.items():
        action = wait_for_action(action_id, workers=new_pool, timeout=60)
        assert_image_of(action, data)  # size, md5, sha512, the stored bytes, no scratch left
        assert Image.objects.filter(created_by_action=action_id).count() == 1
        events = list(
            ActionEvent.objects.filter(action_id=action_id).order_by("started_at").values_list("step", "outcome")
        )
        assert [step for step, outcome in events if outcome == "success"] == ["fetch", "verify", "store"], events
        handed_back = [("fetch", "handed back")] if action_id in downloading else []
        assert [event for event in events if event[1] != "success"] == handed_back, events
        assert action.restarts == 0  # a hand-back is no crash
        # One download per fetch run: the queued import was passed on, never started twice.
        assert len(faulty_server.files[name].requests) == (2 if action_id in downloading else 1)


def _downloads_under_way(images: dict, *, at_least: int, expected: int) -> list[str] | None:
    running = list(
        ImageAction.objects.filter(pk__in=list(images), status="uploading", progress_done__gt=at_least).values_list(
            "pk", flat=True
        )
    )
    return [str(action_id) for action_id in running] if len(running) == expected else None
