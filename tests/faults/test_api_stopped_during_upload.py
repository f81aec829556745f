"""SIGTERM to the API (gunicorn, run as scripts/serve runs it) while it receives an upload: the
upload ends at once with a message that says what to do, instead of running on until gunicorn's
graceful timeout kills it and leaving the action to the reaper. An API process killed outright
mid-upload: the reaper ends the upload with such a message (no worker could take it over)."""

import http.client
import json
import os
import signal
import threading
import time
from pathlib import Path

from .conftest import MiB, embedded_only, wait_until

pytestmark = embedded_only

GRACEFUL_TIMEOUT = 20


class SlowUpload(threading.Thread):
    """PUT .../data announcing `size` bytes and sending them slowly, until the server answers
    or closes the connection."""

    def __init__(self, app, action_id: str, size: int):
        super().__init__(daemon=True)
        self.app, self.action_id, self.size = app, action_id, size
        self.answer: tuple[int, dict] | None = None

    def run(self):
        connection = http.client.HTTPConnection("127.0.0.1", self.app.port, timeout=60)
        try:
            connection.putrequest("PUT", f"/v2/image-actions/{self.action_id}/data")
            connection.putheader("Authorization", self.app.http.headers["Authorization"])
            connection.putheader("Content-Type", "application/octet-stream")
            connection.putheader("Content-Length", str(self.size))
            connection.endheaders()
            chunk = b"\0" * (256 * 1024)
            for _ in range(self.size // len(chunk)):
                connection.send(chunk)
                time.sleep(0.05)  # ~5 MiB/s: the upload takes longer than the test
            response = connection.getresponse()
            self.answer = (response.status, json.loads(response.read()))
        except OSError:
            pass  # the server answered early and closed the connection mid-body
        finally:
            connection.close()


def start_upload(app) -> tuple[str, SlowUpload]:
    """Create an upload import and start sending its data; once 2 MiB arrived."""
    created = app.http.post(
        f"{app.base_url}/v2/image-actions",
        json={"action_type": "import", "input": {"source": "upload", "image_properties": {"name": "uploaded"}}},
        timeout=30,
    )
    assert created.status_code == 201, created.text
    action_id = created.json()["id"]
    upload = SlowUpload(app, action_id, size=512 * MiB)
    upload.start()
    wait_until(
        lambda: app.action(action_id)["progress"]["bytes_done"] > 2 * MiB, timeout=30, what="the upload under way"
    )
    return action_id, upload


def children_of(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return children


def test_api_stopped_mid_upload_fails_that_upload_at_once_with_a_clear_message(deployment):
    app = deployment({})
    options = ("--worker-class", "gthread", "--threads", "4", "--graceful-timeout", str(GRACEFUL_TIMEOUT))
    api = app.start_api(*options)
    action_id, upload = start_upload(app)

    stopped_at = time.monotonic()
    api.send_signal(signal.SIGTERM)
    api.wait(timeout=GRACEFUL_TIMEOUT + 10)
    took = time.monotonic() - stopped_at
    upload.join(timeout=10)

    # Not held until gunicorn's graceful timeout ran out (and then killed mid-upload).
    assert took < GRACEFUL_TIMEOUT / 2, (took, app.log_tail())
    app.start_api(*options)  # what a restarted API shows its clients
    body = app.action(action_id)
    assert body["status"] == "failure", body
    assert "API server receiving the upload shut down" in body["message"]
    assert "upload the data again" in body["message"]
    if upload.answer is not None:  # the client that was still sending got the same answer
        status, answered = upload.answer
        assert (status, answered["status"]) == (200, "failure")


def test_api_process_killed_mid_upload_is_ended_by_the_reaper_with_a_clear_message(deployment):
    app = deployment({"IMAGEACTIONS_REAPER_INTERVAL": "2", "IMAGEACTIONS_HEARTBEAT_INTERVAL": "0.5"})
    api = app.start_api("--worker-class", "gthread", "--threads", "4")
    app.start_workers()
    action_id, upload = start_upload(app)

    for pid in children_of(api.pid):  # gunicorn's workers; the arbiter starts new ones
        os.kill(pid, signal.SIGKILL)
    upload.join(timeout=10)

    body = wait_until(
        lambda: (body := app.action(action_id))["status"] == "failure" and body,
        timeout=20,
        what="the upload's action ending",
        interval=0.5,
    )
    # Not a worker running the import's first step on no bytes (an internal error).
    assert "upload was interrupted" in body["message"], body
    assert "upload the data again" in body["message"], body
