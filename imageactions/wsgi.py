"""WSGI entry point (gunicorn imageactions.wsgi)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")

from imageactions.startup import prepare_data_dir

prepare_data_dir()
application = get_wsgi_application()
