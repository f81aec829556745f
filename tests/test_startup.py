"""Production hardening: what the service leaves on disk is private to its user (the data
directory, the database holding the API tokens, the secret key), and behind a TLS-terminating
proxy it passes Django's deployment checks and sends plain HTTP to HTTPS."""

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_the_data_directory_and_its_files_are_private(tmp_path):
    data = tmp_path / "data"
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("IMAGEACTIONS_", "DJANGO_"))
    }  # as a deployment has it
    env.update(DJANGO_SETTINGS_MODULE="settings", IMAGEACTIONS_DATA_DIR=str(data))
    # Started under a permissive umask, as a service manager may leave it.
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v", "0"],
        cwd=ROOT,
        env=env,
        check=True,
        preexec_fn=lambda: os.umask(0o022),
    )
    subprocess.run(
        [sys.executable, "manage.py", "create_api_user", "u", "--project", "p"],
        cwd=ROOT, env=env, check=True, capture_output=True, preexec_fn=lambda: os.umask(0o022),
    )  # fmt: skip
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    created = [data / "secret_key", data / "imageactions.sqlite3", *data.rglob("*")]
    for path in created:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path} is {oct(mode)}"


def test_production_behind_a_tls_proxy_passes_the_deployment_checks(tmp_path):
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("IMAGEACTIONS_", "DJANGO_"))
    }  # as a deployment has it
    env.update(
        DJANGO_SETTINGS_MODULE="settings",
        IMAGEACTIONS_DATA_DIR=str(tmp_path / "data"),
        IMAGEACTIONS_PRODUCTION="1",
        IMAGEACTIONS_SECRET_KEY="a-production-key-" + "x" * 50,
        IMAGEACTIONS_ALLOWED_HOSTS="images.example.org",
        IMAGEACTIONS_PROXY_SCHEME_HEADER="X-Forwarded-Proto",
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout + result.stderr


def test_plain_http_through_the_proxy_is_sent_to_https_but_the_probes_are_not(client, settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_SSL_REDIRECT = True
    response = client.get("/v2/images", HTTP_X_FORWARDED_PROTO="http")
    assert (response.status_code, response["Location"]) == (301, "https://testserver/v2/images")
    assert client.get("/v2/images", HTTP_X_FORWARDED_PROTO="https").status_code == 401  # reached the API
    assert client.get("/healthz", HTTP_X_FORWARDED_PROTO="http").status_code == 200


def test_text_logs_keep_one_record_on_one_line():
    import logging

    from imageactions.logs import TextFormatter, bound

    record = logging.LogRecord("t", logging.INFO, __file__, 1, "GET %s", ("/x\n2026 info forged: line",), None)
    with bound(action_id="a b\nc"):
        line = TextFormatter().format(record)
    assert "\n" not in line and "\\n2026 info forged" in line and 'action_id="a b\\\\nc"' in line


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("IMAGEACTIONS_BROKER_POLL", "-1", "between 0.01 and 60"),
        ("IMAGEACTIONS_BROKER_POLL", "0", "between 0.01 and 60"),
        ("IMAGEACTIONS_FETCH_CONNECTIONS", "0", "between 1 and 32"),
        ("IMAGEACTIONS_FETCH_CONNECTIONS", "64", "between 1 and 32"),
        ("IMAGEACTIONS_FETCH_PART_SIZE", str(1024**3), "between 1048576 and 268435456"),
        ("IMAGEACTIONS_FETCH_PARALLEL_THRESHOLD", "-5", "at least 0"),
        ("IMAGEACTIONS_FETCH_CONNECTIONS", "four", "must be a int"),
    ],
)
def test_a_setting_out_of_its_range_stops_the_start_naming_it(tmp_path, name, value, says):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMAGEACTIONS_", "DJANGO_"))}
    env.update(DJANGO_SETTINGS_MODULE="settings", IMAGEACTIONS_DATA_DIR=str(tmp_path / "data"), **{name: value})
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode != 0
    assert f"ImproperlyConfigured: {name} must be" in result.stderr and says in result.stderr, result.stderr[-500:]


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("{not json", "IMAGEACTIONS_STAGING_STORE must be JSON"),
        ('["s3"]', "got a JSON list"),
        ('{"type": "filesystem", "path": "/srv/staging"}', "its type is 'filesystem'"),
        ('{"type": "s3", "endpoint_url": "http://127.0.0.1:1"}', "it has no 'bucket'"),
        ('{"type": "s3", "bucket": "b", "colour": "red"}', "has unknown key 'colour'"),
        (
            '{"type": "s3", "bucket": "b", "read_timeout": -1}',
            "IMAGEACTIONS_STAGING_STORE['read_timeout'] must be a positive number",
        ),
    ],
)
def test_a_bad_staging_store_stops_the_start_naming_the_setting(tmp_path, value, says):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMAGEACTIONS_", "DJANGO_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="settings",
        IMAGEACTIONS_DATA_DIR=str(tmp_path / "data"),
        IMAGEACTIONS_STAGING_STORE=value,
    )
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode != 0
    assert "ImproperlyConfigured: IMAGEACTIONS_STAGING_STORE" in result.stderr and says in result.stderr, result.stderr[
        -500:
    ]
