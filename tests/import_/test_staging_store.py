"""Imports staged through a staging store (IMAGEACTIONS_STAGING_STORE): an S3 bucket of the test
Swift holds the staged bytes, so steps run on hosts that share no scratch directory, uploads never
touch the API host's disk, and nothing is left in the bucket when an action ends."""

import json
import subprocess
import time
import uuid
from datetime import timedelta
from io import StringIO
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from django.core.management import call_command
from django.utils import timezone

from imageactions.formats.verifiers import VerificationFailed
from imageactions.models import ImageAction
from imageactions.runner import sweep_scratch
from tests.conftest import wait_for_action
from tests.http_servers import CountingRelay
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
    staging.assert_empty()


def test_a_cancelled_import_aborts_its_multipart_upload(alice, staging, start_workers_with, image_server):
    workers = start_workers_with(**staging.env())
    image_server.add("slow-staged.img", random_image(24 * MiB, seed=35))
    action_id = start_import(alice, {"location": image_server.url("/slow/slow-staged.img?rate=262144")})
    deadline = time.monotonic() + 30
    while not staging.uploads() and time.monotonic() < deadline:
        time.sleep(0.1)
    [upload] = staging.uploads()
    recorded = ImageAction.objects.get(pk=action_id).state["staging_uploads"]
    assert recorded == {"staged": upload["UploadId"]}  # recorded before the first part was sent

    assert alice.post(f"/v2/image-actions/{action_id}/cancel").status_code == 202
    action = wait_for_action(action_id, workers=workers, timeout=30)

    assert action.status == "cancelled"
    assert_left_nothing(action)
    staging.assert_empty()


def test_a_missing_staging_bucket_fails_the_import_naming_it(alice, staging, start_workers_with, image_server):
    staging.config["bucket"] = "no-such-staging-bucket"
    workers = start_workers_with(**staging.env())

    action = run_import(alice, workers, {"location": image_server.add("nowhere.raw", random_image(MiB))})

    assert action.status == "failure"
    assert action.error_code == "store_unavailable"
    assert "The bucket 'no-such-staging-bucket' of image store 'staging' does not exist" in action.message
    assert_left_nothing(action)


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
