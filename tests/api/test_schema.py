"""The OpenAPI schema, and Swagger UI and Redoc served from this service alone (no CDN)."""

import re
import subprocess
import sys
from io import StringIO

import pytest
import yaml
from django.core.management import call_command
from rest_framework.test import APIClient

from imageactions.pipeline import action_types
from tests.conftest import ROOT


@pytest.fixture
def anonymous(db):
    return APIClient()


def schema(client) -> dict:
    response = client.get("/v2/schema", {"format": "json"})
    assert response.status_code == 200
    return response.json()


def test_the_schema_is_served_as_yaml_and_json_without_login(anonymous):
    as_yaml = anonymous.get("/v2/schema")
    assert as_yaml.status_code == 200
    assert as_yaml["Content-Type"].startswith("application/vnd.oai.openapi")
    document = yaml.safe_load(as_yaml.content)
    assert document["openapi"].startswith("3.")
    assert schema(anonymous)["paths"] == document["paths"]


def test_the_create_body_is_discriminated_on_action_type_with_each_types_input(anonymous):
    document = schema(anonymous)
    create_body = document["paths"]["/v2/image-actions"]["post"]["requestBody"]["content"]["application/json"]
    name = create_body["schema"]["$ref"].rsplit("/", 1)[1]
    component = document["components"]["schemas"][name]
    assert name.startswith("ImageActionCreate")
    assert component["discriminator"]["propertyName"] == "action_type"
    mapping = component["discriminator"]["mapping"]
    assert set(mapping) == set(action_types()) and "test" in mapping
    assert sorted(item["$ref"] for item in component["oneOf"]) == sorted(mapping.values())
    test_body = document["components"]["schemas"][mapping["test"].rsplit("/", 1)[1]]
    action_type = test_body["properties"]["action_type"]["$ref"].rsplit("/", 1)[1]
    assert document["components"]["schemas"][action_type]["enum"] == ["test"]
    assert set(test_body["required"]) == {"action_type", "input"}
    test_input = document["components"]["schemas"][test_body["properties"]["input"]["$ref"].rsplit("/", 1)[1]]
    assert {"prepare", "work", "wrap", "skip_wrap", "await_data"} <= set(test_input["properties"])


def test_the_schema_documents_the_error_shape_and_the_201(anonymous):
    document = schema(anonymous)
    responses = document["paths"]["/v2/image-actions"]["post"]["responses"]
    assert {"201", "400", "401", "403", "413", "415"} <= set(responses)
    error = document["components"]["schemas"]["Error"]
    assert set(error["properties"]) == {"code", "detail", "errors"}
    cancel = document["paths"]["/v2/image-actions/{id}/cancel"]["post"]["responses"]
    assert {"202", "404", "409"} <= set(cancel)


def test_owner_is_optional_in_the_action_schema(anonymous):
    action = schema(anonymous)["components"]["schemas"]["ImageAction"]
    assert "owner" in action["properties"] and "owner" not in action["required"]
    assert "status" in action["required"]


def test_an_alias_create_endpoint_shows_only_its_own_types_input(anonymous):
    document = schema(anonymous)
    body = document["paths"]["/v2/image-tests"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    component = document["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]
    assert "oneOf" not in component
    assert list(component["properties"]) == ["input", "labels", "notify_url"]  # the endpoint fixes action_type
    assert component["required"] == ["input"]
    test_input = document["components"]["schemas"][component["properties"]["input"]["$ref"].rsplit("/", 1)[1]]
    assert "skip_wrap" in test_input["properties"]


def run_spectacular_validate(*args):
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "manage.py"),
            "spectacular",
            "--validate",
            "--fail-on-warn",
            "--file",
            "/dev/null",
            *args,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"DJANGO_SETTINGS_MODULE": "tests.settings", "PATH": "/usr/bin:/bin"},
    )


def test_manage_py_spectacular_validates_without_warnings():
    result = run_spectacular_validate()
    assert result.returncode == 0, result.stderr + result.stdout
    assert "Warning" not in result.stderr and "Error" not in result.stderr, result.stderr


def test_the_schema_with_an_alias_validates_without_warnings(db):
    out = StringIO()
    call_command("spectacular", "--validate", "--fail-on-warn", stdout=out)
    assert "ImageActionCreate" in out.getvalue()


# -- offline docs ------------------------------------------------------------------------------


def local_asset_urls(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="(/static/[^"]+)"', html)


@pytest.mark.parametrize("page", ["/v2/docs", "/v2/redoc"])
def test_the_docs_pages_load_every_asset_from_this_service(anonymous, page):
    response = anonymous.get(page)
    assert response.status_code == 200
    html = response.content.decode()
    assert "http://" not in html and "https://" not in html, re.findall(r"https?://[^\"' ]+", html)
    assets = local_asset_urls(html)
    assert assets, html
    for url in assets:
        asset = anonymous.get(url)
        assert asset.status_code == 200, url
        assert len(b"".join(asset.streaming_content)) > 100, url


def test_the_root_redirects_a_browser_to_the_docs(anonymous):
    response = anonymous.get("/", HTTP_ACCEPT="text/html,application/xhtml+xml")
    assert response.status_code == 302 and response["Location"] == "/v2/docs"


@pytest.mark.parametrize(("path", "code"), [("/", 300), ("/versions", 200), ("/v2", 200), ("/v2/", 200)])
def test_clients_discover_the_glance_versions_without_a_token(anonymous, path, code):
    response = anonymous.get(path, HTTP_ACCEPT="application/json")
    assert response.status_code == code
    versions = response.json()["versions"]
    assert versions[0]["status"] == "CURRENT" and versions[0]["id"].startswith("v2.")
    assert all(v["links"] == [{"rel": "self", "href": "http://testserver/v2/"}] for v in versions)


def test_schema_paths_are_the_designs_paths_without_trailing_slashes(alice):
    paths = alice.get("/v2/schema", {"format": "json"}).json()["paths"]
    assert "/v2/image-actions" in paths and "/v2/image-actions/{id}/cancel" in paths and "/v2/images/{id}/file" in paths
    assert not [path for path in paths if path.endswith("/")]
