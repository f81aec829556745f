"""A real OpenStack Keystone on 127.0.0.1 for the tests: installed from PyPI into a venv of its own
(kept under .cache/, so a second run starts in seconds), SQLite, fernet tokens, bootstrapped,
with two projects and their users; served by serve_keystone.py (Keystone's oslo.config reads
sys.argv, which gunicorn's own options would confuse)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.http_servers import free_port

ROOT = Path(__file__).resolve().parents[2]
KEYSTONE_VERSION = "30.0.0"
VENV = ROOT / ".cache" / f"keystone-{KEYSTONE_VERSION}"
ADMIN_PASSWORD = "keystone-admin-secret"
SERVICE_USER, SERVICE_PASSWORD = "imageactions", "imageactions-service-secret"

# name -> (project, role); every password is "pw-" + name.
USERS = {
    "alpha-member": ("alpha", "member"),
    "alpha-reader": ("alpha", "reader"),
    "beta-member": ("beta", "member"),
    "cloud-admin": ("alpha", "admin"),
}


def password_of(user: str) -> str:
    return f"pw-{user}"


def ensure_venv() -> Path:
    """Keystone's venv, installed once; its python."""
    python = VENV / "bin" / "python"
    stamp = VENV / ".installed"
    if not stamp.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", f"keystone=={KEYSTONE_VERSION}"],
            check=True,
        )
        stamp.write_text(KEYSTONE_VERSION)
    return python


@dataclass
class Keystone:
    url: str  # the identity API, http://127.0.0.1:PORT/v3
    process: subprocess.Popen
    log_path: Path
    project_ids: dict[str, str]

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def token(self, user: str, project: str | None = None) -> str:
        """A project-scoped token of `user` (in its own project unless told)."""
        project = project or USERS[user][0]
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {"user": {"name": user, "domain": {"id": "default"}, "password": password_of(user)}},
                },
                "scope": {"project": {"name": project, "domain": {"id": "default"}}},
            }
        }
        response = requests.post(f"{self.url}/auth/tokens", json=body, timeout=30)
        response.raise_for_status()
        return response.headers["X-Subject-Token"]

    def revoke(self, token: str) -> None:
        response = requests.delete(
            f"{self.url}/auth/tokens", headers={"X-Auth-Token": token, "X-Subject-Token": token}, timeout=30
        )
        assert response.status_code == 204, response.text

    def admin_env(self) -> dict:
        """The OS_* variables of the cloud's admin, system-scoped (what register_in_keystone reads)."""
        return {
            "OS_AUTH_URL": self.url,
            "OS_USERNAME": "admin",
            "OS_PASSWORD": ADMIN_PASSWORD,
            "OS_USER_DOMAIN_NAME": "Default",
            "OS_SYSTEM_SCOPE": "all",
            "OS_IDENTITY_API_VERSION": "3",
        }

    def user_env(self, user: str) -> dict:
        """The OS_* variables a user's openrc sets: password auth, found through the catalog."""
        return {
            "OS_AUTH_URL": self.url,
            "OS_USERNAME": user,
            "OS_PASSWORD": password_of(user),
            "OS_PROJECT_NAME": USERS[user][0],
            "OS_USER_DOMAIN_NAME": "Default",
            "OS_PROJECT_DOMAIN_NAME": "Default",
            "OS_IDENTITY_API_VERSION": "3",
            "OS_IMAGE_API_VERSION": "2",
            "OS_REGION_NAME": "RegionOne",
            "OS_INTERFACE": "public",
        }

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_keystone(workdir: Path) -> Keystone:
    """Install (once), configure, bootstrap and start Keystone; create the projects and users."""
    python = ensure_venv()
    port = free_port()
    url = f"http://127.0.0.1:{port}/v3"
    for name in ("fernet", "receipts", "credentials"):
        (workdir / name).mkdir(mode=0o700, parents=True, exist_ok=True)
    config = workdir / "keystone.conf"
    config.write_text(
        f"[DEFAULT]\nlog_file = {workdir / 'keystone.log'}\n"
        f"[database]\nconnection = sqlite:///{workdir / 'keystone.db'}\n"
        f"[token]\nprovider = fernet\nexpiration = 3600\n"
        f"[fernet_tokens]\nkey_repository = {workdir / 'fernet'}\n"
        f"[fernet_receipts]\nkey_repository = {workdir / 'receipts'}\n"
        f"[credential]\nkey_repository = {workdir / 'credentials'}\n"
    )
    manage = [str(VENV / "bin" / "keystone-manage"), "--config-file", str(config)]
    owner = ["--keystone-user", str(os.getuid()), "--keystone-group", str(os.getgid())]
    for step in (["db_sync"], ["fernet_setup", *owner], ["credential_setup", *owner]):
        subprocess.run([*manage, *step], check=True, capture_output=True)
    subprocess.run(
        [
            *manage,
            "bootstrap",
            "--bootstrap-password", ADMIN_PASSWORD,
            "--bootstrap-admin-url", url,
            "--bootstrap-public-url", url,
            "--bootstrap-internal-url", url,
            "--bootstrap-region-id", "RegionOne",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    log_path = workdir / "server.log"
    process = subprocess.Popen(
        [str(python), str(Path(__file__).with_name("serve_keystone.py")), str(port)],
        env={**os.environ, "OS_KEYSTONE_CONFIG_FILES": str(config)},
        stdout=open(log_path, "ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    keystone = Keystone(url=url, process=process, log_path=log_path, project_ids={})
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(url, timeout=5).status_code == 200:
                break
        except requests.RequestException:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            keystone.stop()
            raise AssertionError(f"Keystone did not start:\n{keystone.log_tail()}")
        time.sleep(0.2)
    _create_projects_and_users(keystone)
    return keystone


def _create_projects_and_users(keystone: Keystone) -> None:
    from keystoneauth1 import session
    from keystoneauth1.identity import v3

    admin = session.Session(
        auth=v3.Password(
            auth_url=keystone.url,
            username="admin",
            password=ADMIN_PASSWORD,
            user_domain_name="Default",
            system_scope="all",
        )
    )

    def call(method, path, **body):
        response = admin.request(f"{keystone.url}{path}", method, json=body or None, raise_exc=True)
        return response.json() if response.content else {}

    roles = {role["name"]: role["id"] for role in call("GET", "/roles")["roles"]}
    for project in sorted({project for project, _ in USERS.values()}):
        created = call("POST", "/projects", project={"name": project, "domain_id": "default"})
        keystone.project_ids[project] = created["project"]["id"]
    for user, (project, role) in USERS.items():
        created = call("POST", "/users", user={"name": user, "domain_id": "default", "password": password_of(user)})
        user_id, project_id = created["user"]["id"], keystone.project_ids[project]
        call("PUT", f"/projects/{project_id}/users/{user_id}/roles/{roles[role]}")
