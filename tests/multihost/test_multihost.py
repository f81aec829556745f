"""Imports across hosts that share no filesystem (docs/deploy.md, "Several hosts, no shared
filesystem"): the edge hosts fetch, verify and convert, the core host stores, either API host
takes any request, and the loss of a host loses no action and leaves no upload behind."""

import re
import subprocess
from pathlib import Path

import pytest
import requests

from imageactions.models import ActionEvent, Image, ImageAction
from tests.conftest import make_client, wait_for_action
from tests.faults.conftest import wait_until
from tests.import_.conftest import assert_image_of, random_image

from .conftest import HOLD_MARKER, STAGING_BUCKET, STAGING_PREFIX, requires_scaleout
from .hosts import fill, venv_command

pytestmark = [requires_scaleout, pytest.mark.objectstore]
MiB = 1024 * 1024


def create_import(layout, api_host: str, source: dict, **properties) -> str:
    body = {"action_type": "import", "input": {**source, "image_properties": {"name": "multihost", **properties}}}
    response = layout.http.post(f"{layout.host(api_host).base_url}/v2/image-actions", json=body, timeout=30)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def runs_by_host(layout, action_id) -> list[tuple[str, str, str]]:
    """(step, outcome, host name) of each step run in the action's timeline, oldest first."""
    events = ActionEvent.objects.filter(action_id=action_id).order_by("started_at", "id")
    return [(event.step, event.outcome, layout.host_of(event.worker).name) for event in events]


def downloads(server, name: str) -> int:
    """Whole-file GETs the source served (not the range requests a fetch may make)."""
    return sum("Range" not in headers for headers in server.files[name].requests)


def assert_one_image(action, data: bytes, **expected):
    assert_image_of(action, data, **expected)
    assert Image.objects.filter(created_by_action=action.pk).count() == 1


def test_the_hosts_run_the_commands_and_settings_docs_deploy_md_gives(multihost):
    doc, values = multihost.doc, multihost.values
    for host in multihost.hosts:
        # The hosts' commands are the doc's by construction (Layout.add); what is checked here is
        # that its settings reach the running process, past the host name, mounts and uid.
        environment = dict(
            entry.split("=", 1)
            for entry in Path(f"/proc/{host.process.pid}/environ").read_bytes().decode().split("\0")
            if entry
        )
        for name, value in doc.environment.items():
            assert environment[name] == fill(value, values[host.name]), (host.name, name)
    assert {host.kind for host in multihost.hosts} == set(doc.commands) - {"maintenance"}
    assert len({host.data_dir for host in multihost.hosts}) == len(multihost.hosts)
    if multihost.isolation.separate_users:
        assert len({host.uid for host in multihost.hosts}) == len(multihost.hosts)
        for host in multihost.hosts:
            for pid in host.pids():
                assert Path(f"/proc/{pid}").stat().st_uid == host.uid, (host.name, pid)


def test_a_host_cannot_write_into_another_hosts_directory(multihost):
    if not (multihost.isolation.separate_users or multihost.isolation.private_mounts):
        pytest.skip(multihost.isolation.reason)
    edge, core = multihost.host("edge-1"), multihost.host("core-1")
    attempt = edge.run(["touch", str(core.data_dir / "intruder")])
    refusals = ("Permission denied", "Read-only file system", "No such file or directory")
    assert attempt.returncode != 0 and any(refusal in attempt.stderr for refusal in refusals), attempt.stderr
    assert not (core.data_dir / "intruder").exists()


def test_an_http_import_is_fetched_and_verified_on_an_edge_host_and_stored_on_the_core_host(multihost, source_server):
    data = random_image(3 * MiB + 17, seed=31)
    url = source_server.add("plain.img", data)
    action = wait_for_action(create_import(multihost, "api-1", {"location": url}), timeout=60, workers=multihost)
    assert_one_image(action, data, disk_format="raw")
    runs = runs_by_host(multihost, action.pk)
    assert [(step, outcome) for step, outcome, _ in runs] == [
        ("fetch", "success"),
        ("verify", "success"),
        ("store", "success"),
    ]
    hosts = {step: host for step, _, host in runs}
    assert hosts["fetch"].startswith("edge-") and hosts["verify"].startswith("edge-"), runs
    assert hosts["store"] == "core-1", runs
    assert downloads(source_server, "plain.img") == 1


def test_a_qcow2_import_is_converted_to_raw_on_an_edge_host(multihost, source_server, tmp_path):
    raw = random_image(4 * MiB, seed=32)
    (tmp_path / "disk.raw").write_bytes(raw)
    subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(tmp_path / "disk.raw"), str(tmp_path / "disk.qcow2")],
        check=True,
        timeout=60,
    )
    url = source_server.add("disk.qcow2", (tmp_path / "disk.qcow2").read_bytes())
    action = wait_for_action(create_import(multihost, "api-2", {"location": url}), timeout=60, workers=multihost)
    assert_one_image(action, raw, disk_format="raw")
    hosts = {step: host for step, outcome, host in runs_by_host(multihost, action.pk) if outcome == "success"}
    assert set(hosts) == {"fetch", "verify", "convert", "store"}
    assert hosts["convert"].startswith("edge-") and hosts["store"] == "core-1", hosts
    assert action.state["converted_from"] == "qcow2"


def test_an_upload_created_on_one_api_host_and_sent_to_the_other_succeeds(multihost):
    data = random_image(6 * MiB + 3, seed=33)
    action_id = create_import(multihost, "api-1", {"source": "upload"}, disk_format="raw")
    response = multihost.http.put(
        f"{multihost.host('api-2').base_url}/v2/image-actions/{action_id}/data",
        data=data,
        headers={"Content-Type": "application/octet-stream"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    action = wait_for_action(action_id, timeout=60, workers=multihost)
    assert_one_image(action, data, disk_format="raw")
    hosts = {step: host for step, outcome, host in runs_by_host(multihost, action.pk) if outcome == "success"}
    assert hosts["verify"].startswith("edge-") and hosts["store"] == "core-1", hosts
    # The multihost fixture checks after each test that no API host holds image bytes on disk.


def test_kill_9_of_the_edge_host_running_verify_ends_in_success_on_the_other_without_a_second_fetch(
    multihost, source_server
):
    data = random_image(5 * MiB + 1, seed=34)
    url = source_server.add("verified.img", data)
    marker = multihost.base / HOLD_MARKER
    marker.touch(mode=0o644)
    try:
        action_id = create_import(multihost, "api-1", {"location": url})
        verifying = wait_until(
            lambda: ImageAction.objects.filter(
                pk=action_id, status="verifying", step_state="running", worker__contains=":"
            ).first(),
            timeout=30,
            what="verifying",
        )
        victim = multihost.host_of(verifying.worker)
        assert victim.kind == "edge"
        requests_before = len(source_server.files["verified.img"].requests)
        victim.kill()
    finally:
        marker.unlink(missing_ok=True)
    action = wait_for_action(action_id, timeout=60, workers=multihost)
    assert_one_image(action, data)
    survivor = next(host for host in multihost.of_kind("edge") if host is not victim)
    runs = runs_by_host(multihost, action_id)
    verify_runs = [(outcome, host) for step, outcome, host in runs if step == "verify"]
    assert verify_runs == [("worker lost", victim.name), ("success", survivor.name)], verify_runs
    # The re-run read the staged bytes from the staging store: the source was not asked again.
    assert len(source_server.files["verified.img"].requests) == requests_before
    assert downloads(source_server, "verified.img") == 1
    [fetched_on] = [host for step, outcome, host in runs if step == "fetch" and outcome == "success"]
    if fetched_on == victim.name:  # the survivor had no copy: it read ranges and downloaded nothing
        assert action.state["inspected"]["from"] == "staging store", action.state["inspected"]
        assert action.state["inspected"]["range_requests"] >= 1
        assert str(survivor.data_dir) not in action.state["staging_cached"]["staged"]
    else:  # it fetched the image itself: its own copy
        assert action.state["inspected"] == {"from": "local copy"}
    victim.start().wait_ready()


def test_kill_9_of_the_edge_host_mid_multipart_staging_leaves_no_upload_after_clean_staging(
    multihost, source_server, object_store
):
    data = random_image(24 * MiB, seed=35)
    url = source_server.add("slow.img", data, rate=3 * MiB)  # ~8 s: the kill lands mid-upload
    staging = object_store.s3_client()
    action_id = create_import(multihost, "api-2", {"location": url})
    prefix = f"{STAGING_PREFIX}{action_id}/"

    def a_part_uploaded():
        for upload in staging.list_multipart_uploads(Bucket=STAGING_BUCKET, Prefix=prefix).get("Uploads", []):
            if staging.list_parts(Bucket=STAGING_BUCKET, Key=upload["Key"], UploadId=upload["UploadId"]).get("Parts"):
                return upload
        return None

    killed_upload = wait_until(a_part_uploaded, timeout=30, what="a staged part")
    fetching = ImageAction.objects.get(pk=action_id)
    assert fetching.status == "uploading" and fetching.progress_done < len(data)
    victim = multihost.host_of(fetching.worker)
    victim.kill()
    source_server.files["slow.img"].rate = None  # the re-run need not crawl
    action = wait_for_action(action_id, timeout=90, workers=multihost)
    assert_one_image(action, data)
    fetch_runs = [(outcome, host) for step, outcome, host in runs_by_host(multihost, action_id) if step == "fetch"]
    survivor = next(host for host in multihost.of_kind("edge") if host is not victim)
    assert fetch_runs == [("worker lost", victim.name), ("success", survivor.name)], fetch_runs
    pending = staging.list_multipart_uploads(Bucket=STAGING_BUCKET, Prefix=STAGING_PREFIX).get("Uploads", [])
    assert killed_upload["UploadId"] not in {upload["UploadId"] for upload in pending}  # the re-run aborted it

    # What a host that dies before it can record its upload leaves: an upload no state knows of.
    orphan = staging.create_multipart_upload(Bucket=STAGING_BUCKET, Key=f"{prefix}staged")["UploadId"]
    staging.upload_part(Bucket=STAGING_BUCKET, Key=f"{prefix}staged", UploadId=orphan, PartNumber=1, Body=b"x")
    cleaner = multihost.host("core-1")
    cleaning = cleaner.run(venv_command(multihost.doc.commands["maintenance"]))
    assert cleaning.returncode == 0, cleaning.stdout + cleaning.stderr
    assert f"aborted upload {orphan} of {prefix}staged (its action ended or is gone)" in cleaning.stdout
    assert re.fullmatch(r"\d+ uploads aborted, \d+ staged objects deleted\.", cleaning.stdout.splitlines()[-1])
    assert not staging.list_multipart_uploads(Bucket=STAGING_BUCKET, Prefix=STAGING_PREFIX).get("Uploads")
    assert not staging.list_objects_v2(Bucket=STAGING_BUCKET, Prefix=STAGING_PREFIX).get("Contents")
    victim.start().wait_ready()


def test_every_api_host_is_ready_with_each_pool_counting_its_own_hosts(multihost):
    """/readyz, what a load balancer asks each API host: the edge pool's clusters (two hosts)
    and the default pool's (one) are each counted under their own pool."""
    operator = make_client("olga", "operators", staff=True)
    expected = {"edge": (2, 2), "default": (1, 1)}  # (clusters, worker processes): one each
    for api in multihost.of_kind("api"):
        wait_until(
            lambda api=api: ready_with(api, operator, expected),
            timeout=10,
            what=f"{api.name}'s /readyz counting {expected}",
        )


def ready_with(api, operator, expected: dict) -> bool:
    response = requests.get(
        f"{api.base_url}/readyz", headers={"Authorization": operator._credentials["HTTP_AUTHORIZATION"]}, timeout=10
    )
    pools = response.json()["checks"]["workers"]["pools"]
    counts = {pool: (pools[pool]["clusters"], pools[pool]["workers"]) for pool in pools}
    return response.status_code == 200 and counts == expected
