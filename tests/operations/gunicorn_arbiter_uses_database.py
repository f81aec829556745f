"""gunicorn settings for a test: the service's own, plus an arbiter that has used the database
before it forks its workers (as any start-up step that reads a setting from the database would)."""

from imageactions.gunicorn_hooks import logger_class, post_worker_init, pre_fork  # noqa: F401


def on_starting(server):
    from django.db import connection

    connection.ensure_connection()
