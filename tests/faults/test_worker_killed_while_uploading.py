"""kill -9 of the worker that downloads a large import: its cluster sees the death and hands the
step back at once, the re-run stages afresh, and exactly one Image with the right bytes comes out."""

import os
import signal
import time

from django.conf import settings

from imageactions.models import ActionEvent, Image, ImageAction
from imageactions.runner import scratch_dir
from tests.conftest import wait_for_action
from tests.import_.conftest import assert_image_of, start_import

from .conftest import MiB, embedded_only, patterned_bytes, wait_until

pytestmark = embedded_only

# Without the hand-back, the reaper would see the stale heartbeat only after this long.
STALE_AFTER = max(settings.REAPER_INTERVAL, 3 * settings.HEARTBEAT_INTERVAL)


def test_worker_killed_mid_download_is_restarted_at_once_and_yields_one_image_with_the_right_hashes(
    alice, workers, faulty_server
):
    data = patterned_bytes(200 * MiB, seed=7)
    url = faulty_server.add("large.img", data, rate=20 * MiB)  # ~10 s per download
    action_id = start_import(alice, {"location": url})
    running = wait_until(
        lambda: ImageAction.objects.filter(pk=action_id, status="uploading", progress_done__gt=40 * MiB).first(),
        timeout=30,
        what="40 MiB of the download",
    )
    pid = int(running.worker.rsplit(":", 1)[1])
    assert pid in workers.pids() and pid != workers.process.pid, "the step must run in a django-q2 pool child"
    staged = scratch_dir(action_id) / "staged"
    staged_at_kill = staged.stat().st_size
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()

    def downloads():
        # Not the one-byte range a fetch asks first, to see whether the server serves ranges
        # (this one does not: its whole answer makes the fetch one stream).
        return [r for r in faulty_server.files["large.img"].requests if "Range" not in r]

    wait_until(lambda: len(downloads()) == 2, timeout=15, what="the restarted download", interval=0.01)
    restarted_after = time.monotonic() - killed_at
    # The re-run starts its staging afresh (not appending to what the killed run left).
    wait_until(
        lambda: staged.exists() and staged.stat().st_size < staged_at_kill,
        timeout=5,
        what="a fresh staging file",
        interval=0.01,
    )
    # A fresh download, not a resume of what the killed run had.
    assert len(faulty_server.files["large.img"].requests) == 4  # each run: the first GET and the range asked

    action = wait_for_action(action_id, workers=workers, timeout=60)
    # Sooner than the reaper could: the cluster hands it back within a guard cycle.
    assert restarted_after < STALE_AFTER, restarted_after
    assert_image_of(action, data)  # size, md5, sha512, the stored bytes, and no scratch left
    assert Image.objects.filter(created_by_action=action_id).count() == 1
    outcomes = list(
        ActionEvent.objects.filter(action_id=action_id, step="fetch")
        .order_by("started_at")
        .values_list("outcome", flat=True)
    )
    assert outcomes == ["worker lost", "success"]
    assert action.restarts == 1
