"""Imports staged through a staging store (IMAGEACTIONS_STAGING_STORE): an S3 bucket of the test
Swift holds the staged bytes, so steps run on hosts that share no scratch directory, uploads never
touch the API host's disk, and nothing is left in the bucket when an action ends."""

import json
import socket
import subprocess
import threading
import time
import uuid
from datetime import timedelta
from io import StringIO
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from django.core.management import CommandError, call_command
from django.utils import timezone

from imageactions.formats.verifiers import VerificationFailed
from imageactions.models import ImageAction
from imageactions.pipeline import StepContext, discard_staged, staging_upload
from imageactions.pipeline.errors import ActionCancelled, RunSuperseded
from imageactions.runner import sweep_scratch
from tests.conftest import wait_for_action
from tests.http_servers import CountingRelay, free_port
from tests.objectstore import object_store  # noqa: F401  (the session fixture)
from tests.staging import pools_with_core_steps

from .conftest import assert_image_of, assert_left_nothing, random_image, run_import, start_import, token_of

pytestmark = pytest.mark.objectstore
MiB = 1024 * 1024


def pools_split_at(step: str, start_workers, settings, tmp_path, env: dict):
    """A default pool, and a "core" pool on another host that runs the import's steps from `step` on."""
    steps = ["fetch", "verify", "convert", "store"]
    core_steps = [f"import.{name}" for name in steps[steps.index(step) :]]
    return pools_with_core_steps(core_steps, start_workers, settings, tmp_path, env)


def test_an_http_import_is_staged_and_stored_from_the_staging_store_by_another_host(
    alice, staging, shared_images, start_workers, settings, tmp_path, image_server
):
    edge, core, core_dir = pools_split_at("store", start_workers, settings, tmp_path, staging.env(**shared_images))
    data = random_image(19 * MiB + 5, seed=31)

    action = run_import(alice, core, {"location": image_server.add("staged.raw", data)})

    # The default pool's host (this test's data directory) kept its copy until its sweep.
    assert sweep_scratch(throttled=False) == [str(action.pk)]
    assert_image_of(action, data)
    assert action.state["inspected"] == {"from": "local copy"}  # verify ran where fetch did
    assert action.state["stored_by"] == {"local": "streamed from staging"}  # the core host had no copy
    assert action.state["staging_uploads"] == {}
    staging.assert_empty()
    assert not (core_dir / "scratch" / str(action.pk)).exists()


@pytest.mark.parametrize("change", ["deleted", "resized"])
def test_a_staged_object_lost_before_store_fails_the_import_without_blaming_the_image_store(
    change, alice, staging, shared_images, start_workers, settings, tmp_path, image_server
):
    settings.STEP_POOLS, settings.WORKER_POOLS = {"import.store": "core"}, ["core", "default"]
    env = staging.env(IMAGEACTIONS_STEP_POOLS=json.dumps(settings.STEP_POOLS), **shared_images)
    edge = start_workers(workers=1, env=env)
    data = random_image(3 * MiB, seed=40)
    action_id = start_import(alice, {"location": image_server.add("lost.raw", data)})
    deadline = time.monotonic() + 60  # until the store step waits for a core worker
    while (row := ImageAction.objects.get(pk=action_id)).step_index < 3 and row.status != "failure":
        assert time.monotonic() < deadline, edge.log_tail()
        time.sleep(0.1)
    assert row.status != "failure", row.message
    key = f"staging/{action_id}/staged"
    if change == "deleted":
        staging.server.s3_client().delete_object(Bucket=staging.bucket, Key=key)
    else:
        staging.server.s3_client().put_object(Bucket=staging.bucket, Key=key, Body=data[:MiB])
    core = start_workers(pool="core", workers=1, env={**env, "IMAGEACTIONS_DATA_DIR": str(tmp_path / "core-host")})

    action = wait_for_action(action_id, workers=core)

    where = "is no longer" if change == "deleted" else f"has {MiB} bytes where {len(data)} were staged"
    assert (action.status, action.error_code) == ("failure", "image_data_missing"), action.message
    assert (
        action.message == f"The image {where} in the staging store, and this host has no copy; start the action again"
    )
    assert action.state["failed_stores"] == []  # the image store did nothing wrong
    assert sweep_scratch(throttled=False) == [action_id]  # the fetch's copy, on the edge host
    assert_left_nothing(action)
    staging.assert_empty()


def test_a_qcow2_is_inspected_and_converted_from_the_staged_object_on_another_host(
    alice, staging, shared_images, start_workers, settings, tmp_path, image_server
):
    raw = random_image(6 * MiB, seed=32) + bytes(10 * MiB)
    (tmp_path / "disk.raw").write_bytes(raw)
    qcow2 = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", tmp_path / "disk.raw", qcow2], check=True)
    env = staging.env(IMAGEACTIONS_IMAGE_STORE_FORMAT="raw", **shared_images)
    edge, core, _ = pools_split_at("verify", start_workers, settings, tmp_path, env)

    action = run_import(alice, core, {"location": image_server.add("disk.qcow2", qcow2.read_bytes())}, timeout=90)

    # The qcow2's header and tables were read in a few ranges of the staged object, then the
    # whole of it downloaded to convert it.
    assert action.state["inspected"]["from"] == "staging store"
    assert 1 <= action.state["inspected"]["range_requests"] <= 4

    assert sweep_scratch(throttled=False) == [str(action.pk)]
    assert_image_of(action, raw, disk_format="raw", virtual_size=len(raw))
    assert action.state["converted_from"] == "qcow2"
    assert action.state["stored_by"] == {"local": "local file"}  # converted on the host that stored it
    staging.assert_empty()


def refuse_images_that_start_with_bad(path, inspection):
    """An operator's verifier that reads the image's bytes (so it needs the file)."""
    with open(path, "rb") as image:
        if image.read(4) == b"BAD!":
            raise VerificationFailed(f"{path.name} starts with BAD!")


def test_a_verifier_that_reads_the_file_gets_the_staged_object_downloaded_on_another_host(
    alice, staging, shared_images, start_workers, settings, tmp_path, image_server
):
    verifiers = f"imageactions.formats.verifiers.max_virtual_size,{__name__}.refuse_images_that_start_with_bad"
    env = staging.env(IMAGEACTIONS_IMAGE_VERIFIERS=verifiers, **shared_images)
    edge, core, _ = pools_split_at("verify", start_workers, settings, tmp_path, env)
    data = b"BAD!" + random_image(9 * MiB, seed=36)

    action = run_import(alice, core, {"location": image_server.add("bad.raw", data)})

    assert (action.status, action.message) == ("failure", "staged starts with BAD!")
    # Inspected with ranged reads, then downloaded for the verifier: the core host has a copy now.
    assert action.state["inspected"]["from"] == "staging store"
    assert action.state["staging_cached"]["staged"].endswith(str(tmp_path / "core-host" / "scratch"))
    assert sweep_scratch(throttled=False) == [str(action.pk)]  # the copy the fetch left on its host
    assert_left_nothing(action)
    staging.assert_empty()


@pytest.fixture
def api_host(request, monkeypatch, tmp_path):
    """`api_host(env)`: the API behind gunicorn with a data directory of its own (another host)."""

    def start(env: dict):
        with monkeypatch.context() as patch:  # for the gunicorn only, not the workers started later
            patch.setenv("IMAGEACTIONS_DATA_DIR", str(tmp_path / "api-host"))
            for name, value in env.items():
                patch.setenv(name, value)
            return request.getfixturevalue("api_server"), tmp_path / "api-host"

    return start


def files_under(directory: Path) -> dict[str, int]:
    return {str(path.relative_to(directory)): path.stat().st_size for path in directory.rglob("*") if path.is_file()}


def test_an_upload_goes_to_the_staging_store_and_is_copied_into_a_bucket_inside_the_object_store(
    alice, staging, start_workers, settings, api_host
):
    endpoint = urlsplit(staging.server.s3_endpoint)
    with CountingRelay(endpoint.hostname, endpoint.port).relaying() as relay:
        # The image store and the staging store both reach the object store through the relay.
        staging.config["endpoint_url"] = relay.url
        stores = {
            "bucket": staging.server.s3_store_config(prefix=f"images-{uuid.uuid4().hex[:8]}", endpoint_url=relay.url)
        }
        settings.IMAGE_STORES, settings.DEFAULT_IMAGE_STORE = stores, "bucket"
        env = staging.env(IMAGEACTIONS_STORES=json.dumps(stores), IMAGEACTIONS_DEFAULT_STORE="bucket")
        server, api_dir = api_host(env)
        workers = start_workers(env=env)
        action_id = start_import(alice, {"source": "upload"})
        before = files_under(api_dir)
        data = random_image(24 * MiB + 11, seed=33)

        response = requests.put(
            f"{server.base_url}/v2/image-actions/{action_id}/data",
            data=data,
            headers={"Authorization": f"Token {token_of(alice)}", "Content-Type": "application/octet-stream"},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        action = wait_for_action(action_id, workers=workers, timeout=60)
        sent, received = relay.sent, relay.received
        assert_image_of(action, data)  # reads the stored copy back through the relay
        staging.assert_empty()

    # Nothing of the image on the API host: no scratch directory, and its data directory grew by
    # no more than what its metrics and caches take per request.
    assert not (api_dir / "scratch").exists()
    assert sum(files_under(api_dir).values()) - sum(before.values()) < MiB
    # The worker had no copy: it inspected the staged object with a few range requests...
    assert action.state["inspected"]["from"] == "staging store"
    assert 1 <= action.state["inspected"]["range_requests"] <= 4
    # ... and the store copied it inside the object store: the bytes crossed the relay once, inward.
    assert action.state["stored_by"] == {"bucket": "server-side"}
    assert len(data) <= sent < len(data) + 2 * MiB
    assert received < 2 * MiB


def test_a_failed_import_leaves_nothing_in_the_staging_store(alice, staging, start_workers_with, image_server):
    workers = start_workers_with(**staging.env())
    data = random_image(9 * MiB, seed=34)
    wrong = {"algo": "sha256", "value": "0" * 64}

    action = run_import(alice, workers, {"location": image_server.add("mismatch.raw", data)}, checksum=wrong)
    empty = run_import(alice, workers, {"location": image_server.add("empty.raw", b"")})

    assert action.status == "failure" and action.error_code == "checksum_mismatch", action.message
    assert empty.message == "The image is empty (0 bytes); check the source and try again"
    for ended in (action, empty):
        assert_left_nothing(ended)
        assert ended.state["staging_discarded"]  # a purge will not ask the staging store again
    staging.assert_empty()


def test_a_cancelled_import_aborts_its_multipart_upload(alice, staging, start_workers_with, image_server):
    workers = start_workers_with(**staging.env())
    image_server.add("slow-staged.img", random_image(24 * MiB, seed=35))
    action_id = start_import(alice, {"location": image_server.url("/slow/slow-staged.img?rate=262144")})
    deadline = time.monotonic() + 30
    while not (recorded := ImageAction.objects.get(pk=action_id).state.get("staging_uploads")):
        assert time.monotonic() < deadline, workers.log_tail()
        time.sleep(0.1)
    [upload] = staging.uploads()
    assert recorded == {"staged": upload["UploadId"]}  # recorded before the first part was sent

    assert alice.post(f"/v2/image-actions/{action_id}/cancel").status_code == 202
    action = wait_for_action(action_id, workers=workers, timeout=30)

    assert action.status == "cancelled"
    assert_left_nothing(action)
    staging.assert_empty()


def step_context(alice) -> StepContext:
    """The context of a run that owns an import (held for its data), as a worker's step has it."""
    action = ImageAction.objects.get(pk=start_import(alice, {"source": "upload"}))
    action.run_token = uuid.uuid4()
    ImageAction.objects.filter(pk=action.pk).update(run_token=action.run_token)
    return StepContext(action, None, action.run_token)


class SourceBroke(Exception):
    pass


@pytest.mark.parametrize("ending", ["source broke", "cancelled", "superseded before the first part"])
def test_a_staging_upload_that_does_not_end_well_is_aborted_at_once(ending, alice, staging):
    ctx = step_context(alice)
    if ending == "superseded before the first part":  # another run took the step: save_state() fails
        ImageAction.objects.filter(pk=ctx.action.pk).update(run_token=uuid.uuid4())
    expected = {"source broke": SourceBroke, "cancelled": ActionCancelled}.get(ending, RunSuperseded)

    def stage():
        with staging_upload(ctx, "staged", max_size=1024 * MiB) as sink:
            data = random_image(20 * MiB, seed=41)
            for offset in range(0, len(data), MiB):  # two parts of 8 MiB sent, 4 MiB buffered
                sink(data[offset : offset + MiB])
            if ending == "source broke":
                raise SourceBroke()
            ImageAction.objects.filter(pk=ctx.action.pk).update(cancel_requested=True)
            ctx.check_cancelled()

    with pytest.raises(expected):
        stage()

    # Before any clean-up at the action's end: the upload itself is gone.
    assert staging.uploads() == []
    assert staging.objects() == []


def test_discarding_staged_objects_lists_nothing_and_gives_up_on_an_unreachable_store(staging, settings):
    action_id = uuid.uuid4()
    staged = {"staging_uploads": {}, "staging_objects": ["staged"]}
    for name in ("staged", "converted", "extra"):
        staging.server.s3_client().put_object(Bucket=staging.bucket, Key=f"staging/{action_id}/{name}", Body=b"x")
    assert discard_staged(action_id, {**staged, "staging_objects": ["staged", "extra"]})
    assert staging.objects() == []

    with SilentServer() as silent:  # takes connections, never answers
        settings.STAGING_STORE = {**staging.config, "endpoint_url": silent.url, "read_timeout": 1, "max_attempts": 1}
        # Discarded already, or nothing ever staged: the store is not asked.
        assert not discard_staged(action_id, {**staged, "staging_discarded": True})
        assert not discard_staged(action_id, {"size": 5})
        assert silent.connections == 0
        started = time.monotonic()
        state = {"staging_uploads": {"staged": "an-upload"}, "staging_objects": ["staged", "converted"]}
        assert not discard_staged(action_id, state)  # gave up after the first request timed out
        # One request (botocore's max_attempts counts retries: it is sent twice), not three.
        assert silent.connections == 2 and time.monotonic() - started < 4
        assert "staging_discarded" not in state  # clean_staging removes the rest later


class SilentServer:
    """A TCP port on 127.0.0.1 that accepts connections, counts them and never answers."""

    def __init__(self):
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.connections = 0
        self._held = []

    def __enter__(self):
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._listener.close()
        for connection in self._held:
            connection.close()

    def _accept(self):
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:  # closed
                return
            self.connections += 1
            self._held.append(connection)


def test_a_missing_staging_bucket_fails_the_import_naming_it(alice, staging, start_workers_with, image_server):
    staging.config["bucket"] = "no-such-staging-bucket"
    workers = start_workers_with(**staging.env())

    action = run_import(alice, workers, {"location": image_server.add("nowhere.raw", random_image(MiB))})

    assert action.status == "failure"
    assert action.error_code == "store_unavailable"
    assert "The bucket 'no-such-staging-bucket' of image store 'staging' does not exist" in action.message
    assert_left_nothing(action)


def test_an_upload_into_a_missing_staging_bucket_answers_the_failed_import_naming_it(alice, staging):
    staging.config["bucket"] = "no-such-staging-bucket"
    action_id = start_import(alice, {"source": "upload"})

    response = alice.generic(
        "PUT", f"/v2/image-actions/{action_id}/data", random_image(MiB), content_type="application/octet-stream"
    )

    # As for any upload that fails: the action, failed and saying why (not a traceback, not a 500).
    assert (response.status_code, response["Content-Type"]) == (200, "application/json"), response.content
    bucket = "The bucket 'no-such-staging-bucket' of image store 'staging' does not exist"
    assert response.json()["status"] == "failure" and bucket in response.json()["message"]
    action = ImageAction.objects.get(pk=action_id)
    assert (action.status, action.error_code) == ("failure", "store_unavailable")
    assert bucket in action.message
    assert_left_nothing(action)


def test_a_staging_bucket_deleted_mid_fetch_fails_the_import_naming_it_with_its_upload_aborted(
    alice, staging, start_workers_with, image_server
):
    workers = start_workers_with(**staging.env())
    image_server.add("deleted-under.img", random_image(24 * MiB, seed=42))
    action_id = start_import(alice, {"location": image_server.url("/slow/deleted-under.img?rate=2097152")})
    client = staging.server.s3_client()

    def a_part_sent():
        for upload in staging.uploads():
            if client.list_parts(Bucket=staging.bucket, Key=upload["Key"], UploadId=upload["UploadId"]).get("Parts"):
                return upload
        return None

    deadline = time.monotonic() + 30
    while not (upload := a_part_sent()):
        assert time.monotonic() < deadline, workers.log_tail()
        time.sleep(0.1)
    client.delete_bucket(Bucket=staging.bucket)

    action = wait_for_action(action_id, workers=workers, timeout=60)

    assert (action.status, action.error_code) == ("failure", "store_unavailable"), action.message
    assert action.message.startswith("The staging store failed: The bucket ")
    assert f"'{staging.bucket}' of image store 'staging' does not exist" in action.message
    assert_left_nothing(action)
    client.create_bucket(Bucket=staging.bucket)  # the upload went with it, and nothing was left
    staging.assert_empty()
    assert upload["UploadId"] not in {pending["UploadId"] for pending in staging.uploads()}


def test_clean_staging_aborts_stale_uploads_and_leaves_the_current_ones(alice, staging):
    client = staging.server.s3_client()
    running = start_import(alice, {"source": "upload"})  # held for its data: a running action

    def upload(action_id) -> str:
        return client.create_multipart_upload(Bucket=staging.bucket, Key=f"staging/{action_id}/staged")["UploadId"]

    current, earlier_run, of_unknown = upload(running), upload(running), upload(uuid.uuid4())
    client.put_object(Bucket=staging.bucket, Key=f"staging/{running}/staged-before", Body=b"x")
    gone = uuid.uuid4()
    client.put_object(Bucket=staging.bucket, Key=f"staging/{gone}/staged", Body=b"x")
    ImageAction.objects.filter(pk=running).update(state={"staging_uploads": {"staged": current}})

    out = StringIO()
    call_command("clean_staging", stdout=out)  # the earlier run's upload is still within the grace period
    assert {u["UploadId"] for u in staging.uploads()} == {current, earlier_run}
    assert f"aborted upload {of_unknown} of staging/" in out.getvalue()
    assert f"deleted staging/{gone}/staged (its action ended or is gone)" in out.getvalue()
    assert out.getvalue().splitlines()[-1] == "1 uploads aborted, 1 staged objects deleted."

    time.sleep(1.5)  # Swift gives an upload's start rounded up to the next second
    out = StringIO()
    call_command("clean_staging", "--grace", "0", stdout=out)
    assert [u["UploadId"] for u in staging.uploads()] == [current]
    assert f"aborted upload {earlier_run} of staging/{running}/staged (not its running action's current upload)" in (
        out.getvalue()
    )
    assert staging.objects() == [f"staging/{running}/staged-before"]  # its action still runs

    ImageAction.objects.filter(pk=running).update(status="failure", finished_at=timezone.now(),
                                                  expires_at=timezone.now() + timedelta(days=1))  # fmt: skip
    call_command("clean_staging", stdout=StringIO())
    staging.assert_empty()


@pytest.mark.parametrize("wrong", ["endpoint", "secret key"])
def test_clean_staging_against_a_store_it_cannot_reach_says_so_in_one_line(wrong, staging, settings, db):
    change = {"endpoint_url": f"http://127.0.0.1:{free_port()}", "connect_timeout": 1, "max_attempts": 1}
    if wrong == "secret key":
        change = {"secret_key": "not-the-secret-key"}
    settings.STAGING_STORE = {**staging.config, **change}

    with pytest.raises(CommandError) as raised:
        call_command("clean_staging", stdout=StringIO())

    why = "could not be reached at" if wrong == "endpoint" else "refused to list the uploads of 'staging/'"
    assert str(raised.value).startswith("The staging store could not be cleaned: The image store 'staging' ")
    assert why in str(raised.value)


def test_a_step_run_again_aborts_the_upload_its_earlier_run_recorded(alice, staging, start_workers_with):
    workers = start_workers_with(**staging.env())
    action_id = start_import(alice, {"source": "upload"})
    # As a run whose host died mid-staging leaves it: an upload begun, its id in the state.
    key = f"staging/{action_id}/staged"
    earlier = staging.server.s3_client().create_multipart_upload(Bucket=staging.bucket, Key=key)["UploadId"]
    ImageAction.objects.filter(pk=action_id).update(state={"staging_uploads": {"staged": earlier}})
    data = random_image(7 * MiB + 1, seed=37)

    response = alice.generic(
        "PUT", f"/v2/image-actions/{action_id}/data", data, content_type="application/octet-stream"
    )

    assert response.status_code == 200, response.json()
    assert earlier not in {upload["UploadId"] for upload in staging.uploads()}
    assert_image_of(wait_for_action(action_id, workers=workers), data)
    staging.assert_empty()


def test_glance_stage_then_import_and_a_direct_upload_go_through_the_staging_store(alice, staging, start_workers_with):
    from imageactions.runner import scratch_dir

    workers = start_workers_with(**staging.env())

    def record() -> str:
        body = {"name": "staged", "disk_format": "raw", "container_format": "bare"}
        return alice.post("/v2/images", body, format="json").json()["id"]

    def put(path, data):
        return alice.put(path, data=data, content_type="application/octet-stream")

    staged_id, staged_data = record(), random_image(6 * MiB + 7, seed=38)
    assert put(f"/v2/images/{staged_id}/stage", staged_data).status_code == 204
    action = ImageAction.objects.get(image_links__image_id=staged_id)
    # Between stage and import the bytes are in the staging store only.
    assert staging.objects() == [f"staging/{action.pk}/staged"]
    assert not scratch_dir(action.pk).exists()
    body = {"method": {"name": "glance-direct"}}
    assert alice.post(f"/v2/images/{staged_id}/import", body, format="json").status_code == 202
    assert_image_of(wait_for_action(action.pk, workers=workers), staged_data)

    direct_id, direct_data = record(), random_image(3 * MiB + 1, seed=39)
    assert put(f"/v2/images/{direct_id}/file", direct_data).status_code == 204
    assert_image_of(ImageAction.objects.filter(image_links__image_id=direct_id).distinct().get(), direct_data)
    staging.assert_empty()
