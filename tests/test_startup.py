"""What the service leaves on disk is private to its user: the data directory and everything the
first start creates in it (the database holding the API tokens, the secret key)."""

import os
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_data_directory_and_its_files_are_private(tmp_path):
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEACTIONS_")}
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
