"""The `imageactions` command, run as a real process against the API behind gunicorn and real workers."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from imageactions.models import Image
from tests.import_.conftest import random_image, run_import, start_import

MiB = 1024 * 1024
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
CONSOLE_SCRIPT = Path(sys.executable).parent / "imageactions"


def cli(*args, url: str, token: str | None, timeout: int = 120) -> subprocess.CompletedProcess:
    """Run the installed console script the way a user does: settings only from its environment."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("IMAGEACTIONS_", "DJANGO_"))}
    env["IMAGEACTIONS_URL"] = url
    if token is not None:
        env["IMAGEACTIONS_TOKEN"] = token
    command = [str(CONSOLE_SCRIPT)] if CONSOLE_SCRIPT.exists() else [sys.executable, "-m", "imageactions.cli"]
    return subprocess.run([*command, *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def run(api_server, alice_token):
    """`run("actions", "--pending")`: the CLI as alice against the test server."""

    def run_as_alice(*args, **kwargs):
        return cli(*args, url=api_server.base_url, token=alice_token, **kwargs)

    return run_as_alice


def percents(stderr: str, label: str) -> list[int]:
    """The percentages one progress bar drew (it redraws its line with carriage returns)."""
    frames = re.split(r"[\r\n]", stderr)
    return [
        int(match.group(1))
        for frame in frames
        if frame.startswith(label)
        for match in [re.search(r"(\d+)%", frame)]
        if match
    ]


def test_the_console_script_is_installed_with_the_project():
    assert CONSOLE_SCRIPT.exists(), f"{CONSOLE_SCRIPT} is missing; install the project with `pip install -e .`"
    result = subprocess.run([str(CONSOLE_SCRIPT), "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    for command in ("import", "actions", "show", "cancel", "images", "download"):
        assert command in result.stdout


def test_the_cli_runs_without_django():
    probe = "import sys, imageactions.cli; print(sorted({m.split('.')[0] for m in sys.modules} & {'django', 'rest_framework'}))"
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=30,
        env={k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"},
    )
    assert result.stdout.strip() == "[]", result.stderr


def test_import_of_a_local_file_uploads_it_with_a_progress_bar_and_prints_the_image_id(run, workers, tmp_path):
    data = random_image(8 * MiB + 3, seed=71)
    disk = tmp_path / "disk.img"
    disk.write_bytes(data)
    result = run("import", str(disk), "--name", "from-my-laptop", "--wait", "--progress")
    assert result.returncode == 0, result.stderr
    image_id = result.stdout.strip()
    assert UUID.match(image_id), result.stdout
    image = Image.objects.get(pk=image_id)
    assert (image.name, image.size, image.owner) == ("from-my-laptop", len(data), "project-a")
    sent = percents(result.stderr, "sending")
    assert sent == sorted(sent) and sent[-1] == 100 and len(set(sent)) >= 20, sent
    assert "MiB / 8 MiB" in result.stderr


def test_import_from_a_url_without_a_terminal_prints_plain_status_lines(run, workers, image_server):
    data = random_image(2 * MiB, seed=72)
    result = run("import", image_server.add("cli-url.img", data), "--name", "from-a-url", "--wait")
    assert result.returncode == 0, result.stderr
    image = Image.objects.get(pk=result.stdout.strip())
    assert (image.name, image.size) == ("from-a-url", len(data))
    assert "\r" not in result.stderr  # no bar: stderr is not a terminal and --progress was not given
    assert re.search(r"^Action [0-9a-f-]+: success$", result.stderr, re.MULTILINE), result.stderr


def test_import_that_fails_prints_the_failure_message_and_exits_1(run, workers, image_server):
    result = run("import", image_server.url("/status/404"), "--name", "missing", "--wait")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "The import failed: Could not retrieve image." in result.stderr
    assert "404" in result.stderr


def test_import_without_wait_prints_the_action_id(run, image_server, alice):
    result = run("import", image_server.add("later.img", b"x" * 4096), "--name", "later")
    assert result.returncode == 0, result.stderr
    action_id = result.stdout.strip()
    assert alice.get(f"/v2/image-actions/{action_id}").json()["input"]["image_properties"]["name"] == "later"


def test_actions_pending_shows_an_aligned_table_of_unfinished_actions(run, alice, image_server):
    waiting = [start_import(alice, {"source": "upload"}, name=f"upload-{n}") for n in range(2)]
    ended = start_import(alice, {"source": "upload"}, name="cancelled-one")
    alice.post(f"/v2/image-actions/{ended}/cancel")
    result = run("actions", "--pending", "--type", "import")
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["ID", "TYPE", "STATUS", "PROGRESS", "CREATED", "NAME", "MESSAGE"]
    assert [row.split()[0] for row in rows] == waiting[::-1]  # newest first
    assert all(row.split()[1:3] == ["import", "waiting"] for row in rows)
    status_column = header.index("STATUS")
    assert all(row[status_column:].startswith("waiting") for row in rows)
    everything = run("actions", "--limit", "10").stdout
    assert ended in everything and "cancelled" in everything


def test_actions_with_none_pending_says_so(run):
    result = run("actions", "--pending")
    assert (result.returncode, result.stdout) == (0, "No pending actions.\n")


def test_show_prints_key_value_lines_or_json(run, alice):
    action_id = start_import(alice, {"source": "upload"}, name="shown")
    lines = run("show", action_id).stdout.splitlines()
    assert f"id: {action_id}" in lines
    assert "status: waiting" in lines
    assert "input.image_properties.name: shown" in lines
    assert "progress.bytes_done: 0" in lines
    as_json = json.loads(run("show", action_id, "--json").stdout)
    assert as_json == alice.get(f"/v2/image-actions/{action_id}").json()


def test_cancel_cancels_a_waiting_action_and_refuses_an_ended_one(run, alice):
    action_id = start_import(alice, {"source": "upload"}, name="to-cancel")
    result = run("cancel", action_id)
    assert (result.returncode, result.stdout) == (0, f"Cancelled action {action_id}.\n")
    assert alice.get(f"/v2/image-actions/{action_id}").json()["status"] == "cancelled"
    again = run("cancel", action_id)
    assert again.returncode == 1
    assert "409" in again.stderr and "already ended with status 'cancelled'" in again.stderr


def test_images_lists_them_and_download_saves_the_same_bytes_with_a_progress_bar(
    run, alice, workers, image_server, tmp_path
):
    data = random_image(5 * MiB + 11, seed=73)
    action = run_import(alice, workers, {"location": image_server.add("dl.img", data)}, name="to-download")
    image_id = action.result["image_ref"]
    listing = run("images")
    assert listing.returncode == 0, listing.stderr
    header, row = listing.stdout.splitlines()
    assert header.split() == ["ID", "NAME", "FORMAT", "SIZE", "STATUS", "CREATED"]
    assert row.split()[:5] == [image_id, "to-download", "raw", "5", "MiB"]

    target = tmp_path / "copy.img"
    result = run("download", image_id, str(target), "--progress")
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == data
    assert not (tmp_path / "copy.img.part").exists()
    assert result.stdout == f"Saved image {image_id} (5 MiB) to {target}.\n"
    drawn = percents(result.stderr, "download")
    assert drawn == sorted(drawn) and drawn[-1] == 100, drawn


def test_a_bad_token_is_refused_saying_how_to_get_one(api_server):
    result = cli("actions", url=api_server.base_url, token="not-a-token")
    assert result.returncode == 2
    assert result.stderr.startswith(
        "imageactions: The server refused the token (401). Set IMAGEACTIONS_TOKEN to a valid token: "
        "manage.py create_api_user"
    )


def test_a_missing_token_says_to_set_it(closed_port):
    result = cli("images", url=f"http://127.0.0.1:{closed_port}", token=None)
    assert result.returncode == 2
    assert "Set IMAGEACTIONS_TOKEN to your API token" in result.stderr


def test_an_unreachable_server_is_named_with_the_reason(closed_port):
    url = f"http://127.0.0.1:{closed_port}"
    result = cli("actions", url=url, token="any")
    assert result.returncode == 2
    assert f"Cannot reach the ImageActions API at {url}: connection refused." in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_action_and_image_ids_are_reported_by_name(run, tmp_path):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    for args, message in [
        (("show", "x"), "No action 'x' in your project."),
        (
            ("cancel", "7c6a1d3e-0000-4000-8000-000000000000"),
            "No action '7c6a1d3e-0000-4000-8000-000000000000' in your project.",
        ),
        (("download", "nope", str(downloads / "nope.img")), "No image 'nope' in your project."),
    ]:
        result = run(*args)
        assert (result.returncode, result.stderr) == (2, f"imageactions: {message}\n")
    assert list(downloads.iterdir()) == []


def test_import_of_a_file_that_does_not_exist_is_refused_before_anything_is_created(run, alice):
    result = run("import", "no/such/disk.img", "--name", "x")
    assert result.returncode == 2
    assert "No such file 'no/such/disk.img', and it is not a URL" in result.stderr
    assert alice.get("/v2/image-actions").json()["results"] == []
