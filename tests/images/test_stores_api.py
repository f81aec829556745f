"""GET /v2/stores: the stores users may target, with the default marked and no way in shown."""

from rest_framework.test import APIClient

S3_SECRET = "s3cr3t-never-shown"


def test_stores_lists_each_configured_store_with_its_region_kind_and_the_default(alice, settings):
    settings.IMAGE_STORES = {
        "local": {"type": "filesystem", "path": str(settings.DATA_DIR / "images"), "region": "here"},
        "far": {
            "type": "s3",
            "bucket": "images",
            "endpoint_url": "http://127.0.0.1:9",
            "access_key": "AKIDEXAMPLE",
            "secret_key": S3_SECRET,
            "region": "there",
        },
    }
    settings.DEFAULT_IMAGE_STORE = "far"

    response = alice.get("/v2/stores")

    assert response.status_code == 200
    assert response.json() == [
        {"name": "local", "region": "here", "kind": "filesystem", "default": False},
        {"name": "far", "region": "there", "kind": "s3", "default": True},
    ]


def test_stores_never_show_credentials_endpoints_or_paths(alice, settings):
    settings.IMAGE_STORES = {
        "far": {
            "type": "s3",
            "bucket": "private-bucket",
            "endpoint_url": "http://127.0.0.1:9",
            "access_key": "AKIDEXAMPLE",
            "secret_key": S3_SECRET,
            "region": "there",
        },
    }
    settings.DEFAULT_IMAGE_STORE = "far"

    text = alice.get("/v2/stores").content.decode()

    for secret in (S3_SECRET, "AKIDEXAMPLE", "127.0.0.1", "private-bucket"):
        assert secret not in text


def test_the_default_settings_offer_one_local_filesystem_store(alice):
    assert alice.get("/v2/stores").json() == [
        {"name": "local", "region": "local", "kind": "filesystem", "default": True}
    ]


def test_stores_need_credentials(db):
    response = APIClient().get("/v2/stores")

    assert response.status_code == 401
