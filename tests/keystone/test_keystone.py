"""ImageActions inside an OpenStack cloud: a real Keystone validates every X-Auth-Token, a caller is
its token's project with its token's roles, and OpenStack's clients find the service through
Keystone's catalog with nothing but a user's password."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.import_.conftest import random_image

from .conftest import CACHE_TIME

BIN = Path(sys.executable).parent
MiB = 1024 * 1024


class Caller:
    """Requests to the API with one Keystone token."""

    def __init__(self, base_url: str, token: str):
        self.base_url, self.token = base_url, token

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = {"X-Auth-Token": self.token, **kwargs.pop("headers", {})}
        return requests.request(method, self.base_url + path, headers=headers, timeout=60, **kwargs)

    def get(self, path, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path, body, **kwargs):
        return self.request("POST", path, json=body, **kwargs)


@pytest.fixture
def as_user(keystone, keystone_api):
    def caller(user: str) -> Caller:
        return Caller(keystone_api.base_url, keystone.token(user))

    return caller


def client_env(extra: dict, home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "IMAGEACTIONS_", "DJANGO_"))}
    return {**env, **extra, "HOME": str(home)}


def run(command: list[str], env: dict, timeout: int = 180) -> str:
    # Standard input closed: the command-line clients take any non-terminal stdin for image data.
    result = subprocess.run(
        command, env=env, preexec_fn=lambda: os.close(0), capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result.stdout


def wait_active(caller: Caller, image_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        image = caller.get(f"/v2/images/{image_id}").json()
        if image["status"] == "active" or image.get("os_glance_failed_import") or time.monotonic() > deadline:
            return image
        time.sleep(0.2)


def raw_image_file(tmp_path: Path, seed: int) -> tuple[Path, bytes]:
    data = random_image(MiB + seed, seed=seed)
    path = tmp_path / f"disk-{seed}.raw"
    path.write_bytes(data)
    return path, data


def test_openstack_cli_with_a_password_finds_the_service_in_the_catalog(keystone, keystone_api, as_user, tmp_path):
    path, data = raw_image_file(tmp_path, 1)
    env = client_env(keystone.user_env("alpha-member"), tmp_path)
    openstack = str(BIN / "openstack")

    created = json.loads(
        run(
            [openstack, "image", "create", "--import", "--file", str(path), "--disk-format", "raw",
             "--container-format", "bare", "from-osc", "-f", "json"],
            env,
        )
    )  # fmt: skip
    member = as_user("alpha-member")
    image = wait_active(member, created["id"])
    assert (image["status"], image["size"], image["owner"]) == ("active", len(data), keystone.project_ids["alpha"])

    listed = json.loads(run([openstack, "image", "list", "-f", "json"], env))
    assert [item["Name"] for item in listed] == ["from-osc"]
    catalog = json.loads(run([openstack, "catalog", "show", "image", "-f", "json"], env))
    assert keystone_api.base_url in json.dumps(catalog["endpoints"])


def test_openstacksdk_connects_from_clouds_yaml(keystone, keystone_api, as_user, tmp_path, monkeypatch):
    import openstack

    path, data = raw_image_file(tmp_path, 2)
    user = keystone.user_env("beta-member")
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(
        json.dumps(
            {
                "clouds": {
                    "testcloud": {
                        "auth": {
                            "auth_url": user["OS_AUTH_URL"],
                            "username": user["OS_USERNAME"],
                            "password": user["OS_PASSWORD"],
                            "project_name": user["OS_PROJECT_NAME"],
                            "user_domain_name": "Default",
                            "project_domain_name": "Default",
                        },
                        "region_name": "RegionOne",
                        "identity_api_version": 3,
                    }
                }
            }
        )
    )  # JSON is YAML
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds))

    conn = openstack.connect(cloud="testcloud")
    image = conn.image.create_image(
        name="from-sdk", filename=str(path), disk_format="raw", container_format="bare", use_import=True
    )
    shown = wait_active(as_user("beta-member"), image.id)
    assert (shown["status"], shown["owner"]) == ("active", keystone.project_ids["beta"])
    assert [listed.name for listed in conn.image.images()] == ["from-sdk"]
    conn.image.delete_image(image)
    assert list(conn.image.images()) == []


def test_glanceclient_with_keystone_auth_imports_from_a_url(keystone, keystone_api, as_user, image_server, tmp_path):
    data = random_image(MiB, seed=3)
    url = image_server.add("keystone-web.raw", data)
    env = client_env(keystone.user_env("alpha-member"), tmp_path)
    glance = str(BIN / "glance")

    out = run(
        [glance, "image-create-via-import", "--name", "from-glance", "--disk-format", "raw", "--container-format",
         "bare", "--import-method", "web-download", "--uri", url],
        env,
    )  # fmt: skip
    image_id = next(line.split("|")[2].strip() for line in out.splitlines() if line.startswith("| id "))
    assert wait_active(as_user("alpha-member"), image_id)["status"] == "active"
    assert "from-glance" in run([glance, "image-list"], env)


def test_projects_are_isolated(keystone_api, as_user):
    alpha, beta = as_user("alpha-member"), as_user("beta-member")
    image = alpha.post("/v2/images", {"name": "alpha's", "disk_format": "raw", "container_format": "bare"}).json()
    action = alpha.post(
        "/v2/image-actions", {"action_type": "import", "input": {"source": "upload", "image_properties": {"name": "a"}}}
    ).json()

    assert beta.get(f"/v2/images/{image['id']}").status_code == 404
    assert beta.get(f"/v2/image-actions/{action['id']}").status_code == 404
    assert beta.post(f"/v2/image-actions/{action['id']}/cancel", {}).status_code == 404
    assert beta.get("/v2/images").json()["images"] == []
    assert beta.get("/v2/image-actions").json()["results"] == []
    assert [item["id"] for item in alpha.get("/v2/image-actions").json()["results"]] == [action["id"]]


def test_a_reader_reads_and_may_not_write(keystone_api, as_user):
    member, reader = as_user("alpha-member"), as_user("alpha-reader")
    image = member.post("/v2/images", {"name": "shared", "disk_format": "raw", "container_format": "bare"}).json()

    assert reader.get(f"/v2/images/{image['id']}").status_code == 200
    assert [item["id"] for item in reader.get("/v2/images").json()["images"]] == [image["id"]]
    assert reader.get("/v2/image-actions").status_code == 200
    refused = reader.post("/v2/images", {"name": "mine", "disk_format": "raw", "container_format": "bare"})
    assert refused.status_code == 403 and "'create'" in refused.json()["error"]["message"]
    body = {"action_type": "import", "input": {"source": "upload", "image_properties": {"name": "r"}}}
    assert reader.post("/v2/image-actions", body).status_code == 403
    patch = [{"op": "replace", "path": "/name", "value": "renamed"}]
    changed = reader.request(
        "PATCH", f"/v2/images/{image['id']}", data=json.dumps(patch),
        headers={"Content-Type": "application/openstack-images-v2.1-json-patch"},
    )  # fmt: skip
    assert changed.status_code == 403
    assert reader.request("DELETE", f"/v2/images/{image['id']}").status_code == 403


def test_an_admin_sees_and_acts_on_every_project(keystone, keystone_api, as_user):
    alpha, beta, admin = as_user("alpha-member"), as_user("beta-member"), as_user("cloud-admin")
    upload = {"action_type": "import", "input": {"source": "upload", "image_properties": {"name": "x"}}}
    alpha_action, beta_action = (
        alpha.post("/v2/image-actions", upload).json(),
        beta.post("/v2/image-actions", upload).json(),
    )
    beta_image = beta.post("/v2/images", {"name": "beta's", "disk_format": "raw", "container_format": "bare"}).json()

    everything = admin.get("/v2/image-actions", params={"all_projects": "true"}).json()["results"]
    assert {item["id"] for item in everything} == {alpha_action["id"], beta_action["id"]}
    assert {item["owner"] for item in everything} == {keystone.project_ids["alpha"], keystone.project_ids["beta"]}
    own = admin.get("/v2/image-actions").json()["results"]  # by default, its own project's (alpha)
    assert [item["id"] for item in own] == [alpha_action["id"]]
    assert alpha.get("/v2/image-actions", params={"all_projects": "true"}).status_code == 403
    assert "owner" not in alpha.get(f"/v2/image-actions/{alpha_action['id']}").json()  # operator-only detail

    assert admin.get(f"/v2/images/{beta_image['id']}").status_code == 200
    assert beta_image["id"] in [image["id"] for image in admin.get("/v2/images").json()["images"]]
    assert admin.post(f"/v2/image-actions/{beta_action['id']}/cancel", {}).status_code in (200, 202)
    assert beta.get(f"/v2/image-actions/{beta_action['id']}").json()["status"] == "cancelled"
    assert admin.get("/v2/info/stores/detail").status_code == 200
    assert alpha.get("/v2/info/stores/detail").status_code == 403


def test_invalid_forged_and_revoked_tokens_are_refused(keystone, keystone_api, as_user):
    base = keystone_api.base_url
    assert requests.get(f"{base}/v2/images", headers={"X-Auth-Token": "not-a-token"}, timeout=30).status_code == 401
    forged = {"X-Project-Id": keystone.project_ids["alpha"], "X-Roles": "admin", "X-Identity-Status": "Confirmed"}
    assert requests.get(f"{base}/v2/images", headers=forged, timeout=30).status_code == 401
    # With a valid token, forged identity headers are replaced by the token's own.
    beta = as_user("beta-member")
    alpha = as_user("alpha-member")
    alpha.post("/v2/images", {"name": "alpha's", "disk_format": "raw", "container_format": "bare"})
    assert beta.get("/v2/images", headers=forged).json()["images"] == []

    # A token revoked before the service saw it is refused at once.
    fresh = keystone.token("alpha-member")
    keystone.revoke(fresh)
    assert requests.get(f"{base}/v2/images", headers={"X-Auth-Token": fresh}, timeout=30).status_code == 401

    # A token the service validated stays accepted until its cache entry expires, then not.
    seen = keystone.token("alpha-member")
    assert requests.get(f"{base}/v2/images", headers={"X-Auth-Token": seen}, timeout=30).status_code == 200
    keystone.revoke(seen)
    time.sleep(CACHE_TIME + 1)
    assert requests.get(f"{base}/v2/images", headers={"X-Auth-Token": seen}, timeout=30).status_code == 401


def test_embedded_api_tokens_still_work_beside_keystone(keystone_api, alice):
    from tests.import_.conftest import token_of

    headers = {"Authorization": f"Token {token_of(alice)}"}
    assert requests.get(f"{keystone_api.base_url}/v2/image-actions", headers=headers, timeout=30).status_code == 200
    # X-Auth-Token is Keystone's now: the same token there is refused.
    x_auth = {"X-Auth-Token": token_of(alice)}
    assert requests.get(f"{keystone_api.base_url}/v2/image-actions", headers=x_auth, timeout=30).status_code == 401
