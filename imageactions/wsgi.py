"""WSGI entry point (gunicorn imageactions.wsgi); with Keystone configured, behind its auth_token."""

import os

from django.conf import settings
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")

from imageactions.startup import prepare_data_dir

prepare_data_dir()
application = get_wsgi_application()
if settings.KEYSTONE_URL:
    from imageactions.keystone import protect

    application = protect(application)
