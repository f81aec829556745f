"""The start-up step of every entry point (manage.py, the WSGI application, the test set-up):
create the data directory and the generated secret key before anything needs them.

Importing the settings has no side effects; this is where the service first touches the disk.
"""

import os
import secrets

from django.conf import settings


def prepare_data_dir() -> None:
    """Create DATA_DIR and its static directory, and the secret key file when the key is generated.

    Everything the service creates from here on is private to its user (umask 077): the data
    directory holds the database with the API tokens, the secret key, staged and stored images.
    """
    os.umask(0o077)
    settings.DATA_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    settings.DATA_DIR.chmod(0o700)
    settings.STATIC_ROOT.mkdir(exist_ok=True)  # WhiteNoise warns about a missing one on every start
    # Every process of this host records its metrics here (imageactions.metrics); the variable
    # is set before prometheus_client is imported and inherited by the processes started from here.
    settings.METRICS_DIR.mkdir(exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(settings.METRICS_DIR)
    key_file = settings.SECRET_KEY_FILE
    if key_file is None:
        return  # the key comes from the environment
    if not key_file.exists():
        key_file.touch(mode=0o600)
        key_file.write_text(secrets.token_urlsafe(50))
    settings.SECRET_KEY = key_file.read_text().strip()
