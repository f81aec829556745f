"""The start-up step of every entry point (manage.py, the WSGI application, the test set-up):
create the data directory and the generated secret key before anything needs them.

Importing the settings has no side effects; this is where the service first touches the disk.
"""

import secrets

from django.conf import settings


def prepare_data_dir() -> None:
    """Create DATA_DIR and its static directory, and the secret key file when the key is generated."""
    settings.DATA_DIR.mkdir(parents=True, exist_ok=True)
    settings.STATIC_ROOT.mkdir(exist_ok=True)  # WhiteNoise warns about a missing one on every start
    key_file = settings.SECRET_KEY_FILE
    if key_file is None:
        return  # the key comes from the environment
    if not key_file.exists():
        key_file.touch(mode=0o600)
        key_file.write_text(secrets.token_urlsafe(50))
    settings.SECRET_KEY = key_file.read_text().strip()
