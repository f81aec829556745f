"""/healthz and /readyz as a load balancer and an operator ask them, with real worker processes,
and the admin dashboard's workers table."""

import json
import time

import pytest
from rest_framework.test import APIClient

from tests.http_servers import closed_port  # noqa: F401  (a fixture)


@pytest.fixture
def anonymous(db):
    return APIClient()


def readyz(client):
    response = client.get("/readyz")
    return response.status_code, response.json()


def wait_for_readyz(client, code: int, timeout=20):
    """/readyz once it answers `code`: clusters publish their status every half second, and a
    stopped one (of an earlier test) stays listed until its 3-second expiry."""
    deadline = time.monotonic() + timeout
    while True:
        got, body = readyz(client)
        if got == code or time.monotonic() > deadline:
            return got, body
        time.sleep(0.2)


def dashboard_page(admin_client, wanted, timeout=20) -> str:
    deadline = time.monotonic() + timeout
    while not wanted(page := admin_client.get("/admin/dashboard/").content.decode()):
        assert time.monotonic() < deadline, page[-3000:]
        time.sleep(0.2)
    return page


def test_healthz_answers_without_credentials_or_the_database(anonymous, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = anonymous.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "alive"})


def test_readyz_is_503_while_a_pool_has_no_live_worker_and_names_nothing_to_anonymous_callers(anonymous, operator):
    code, body = wait_for_readyz(anonymous, 503)
    assert code == 503 and body["status"] == "not ready"
    checks = body["checks"]
    assert checks["workers"] == {"ok": False}
    assert checks["database"]["ok"] and checks["broker"]["ok"] and checks["qemu_img"]["ok"] and checks["stores"]["ok"]
    assert "local" not in json.dumps(body) and "error" not in json.dumps(body)

    code, detail = readyz(operator)
    assert detail["checks"]["workers"]["pools"]["default"] == {"ok": False, "clusters": 0, "workers": 0}
    assert detail["checks"]["stores"]["stores"]["local"]["ok"]


def test_readyz_is_200_once_every_pool_has_a_live_cluster(anonymous, operator, start_workers):
    start_workers(workers=2)
    code, body = wait_for_readyz(anonymous, 200)
    assert (code, body["status"]) == (200, "ready"), body
    # Clusters an earlier test killed stay listed until their status expires (3 s).
    deadline = time.monotonic() + 10
    # A starting cluster publishes its status before it has spawned its workers.
    expected = {"ok": True, "clusters": 1, "workers": 2}
    while (pool := readyz(operator)[1]["checks"]["workers"]["pools"]["default"]) != expected:
        assert time.monotonic() < deadline, pool
        time.sleep(0.2)
    assert pool == expected


def test_readyz_counts_the_clusters_of_each_pool_under_that_pool(operator, start_workers, settings):
    settings.WORKER_POOLS = ["default", "edge"]
    start_workers(workers=2, env={"IMAGEACTIONS_WORKER_POOLS": "edge"})
    start_workers(pool="edge", workers=1, env={"IMAGEACTIONS_WORKER_POOLS": "edge"})
    expected = {"default": {"ok": True, "clusters": 1, "workers": 2}, "edge": {"ok": True, "clusters": 1, "workers": 1}}
    deadline = time.monotonic() + 20
    while (pools := readyz(operator)[1]["checks"]["workers"]["pools"]) != expected:
        assert time.monotonic() < deadline, pools
        time.sleep(0.2)


def test_readyz_fails_an_unreachable_store(anonymous, operator, settings, object_store, closed_port):  # noqa: F811
    settings.IMAGE_STORES = {
        **settings.IMAGE_STORES,
        "gone": object_store.s3_store_config(
            endpoint_url=f"http://127.0.0.1:{closed_port}", connect_timeout=1, max_attempts=1
        ),
    }
    code, body = readyz(anonymous)
    assert code == 503 and body["checks"]["stores"] == {"ok": False}  # workers or not
    stores = readyz(operator)[1]["checks"]["stores"]["stores"]
    assert stores["local"]["ok"] and not stores["gone"]["ok"]
    assert "could not be reached" in stores["gone"]["error"]


def test_readyz_fails_a_missing_staging_bucket_naming_it(anonymous, operator, settings, object_store):
    settings.STAGING_STORE = object_store.s3_store_config(bucket="no-such-staging-bucket")
    code, body = readyz(anonymous)
    assert code == 503 and body["checks"]["stores"] == {"ok": False}
    stores = readyz(operator)[1]["checks"]["stores"]["stores"]
    assert stores["local"]["ok"] and not stores["staging"]["ok"]
    assert "The bucket 'no-such-staging-bucket' of image store 'staging' does not exist" in stores["staging"]["error"]

    settings.STAGING_STORE = object_store.s3_store_config()  # the test bucket: the staging store passes
    assert readyz(operator)[1]["checks"]["stores"]["stores"]["staging"]["ok"]


def test_the_dashboard_lists_the_workers_and_the_queue_of_each_pool(admin_client, start_workers):
    dashboard_page(admin_client, lambda page: "No live worker" in page)
    start_workers(workers=2)
    page = dashboard_page(admin_client, lambda page: "No live worker" not in page)
    # Until clusters killed by earlier tests have expired (3 s), and this one has spawned its workers.
    deadline = time.monotonic() + 10
    while True:
        pool = admin_client.get("/admin/dashboard/").context["dashboard"].pools[0]
        if len(pool["clusters"]) == 1 and len(pool["clusters"][0]["cluster"].workers) == 2:
            break
        assert time.monotonic() < deadline, pool
        time.sleep(0.2)
    [entry] = pool["clusters"]
    assert (pool["pool"], pool["queued"], len(entry["cluster"].workers)) == ("default", 0, 2)
    assert str(entry["cluster"].pid) in page
