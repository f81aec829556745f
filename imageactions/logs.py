"""Structured logs: one JSON object per line, carrying what the line is about.

The API binds a request id to each request (taken from X-Request-Id, or made), the runner binds
the action, its type, step, attempt, worker and the id of the request that created it to the
work of each step; every line logged meanwhile, by any logger, carries them. So one action id,
or one request id, finds the whole story (README: "Following an action through the logs").

IMAGEACTIONS_LOG_FORMAT=text writes the same fields as `key=value` after a plain message, for
a person reading a terminal. The settings' LOGGING routes every logger through one of the two.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime

from gunicorn import glogging

from .formats.errors import printable

_bound: contextvars.ContextVar[dict] = contextvars.ContextVar("imageactions_log_context", default={})  # noqa: B039

# What a client may send as its own request id: short, printable, no separators of a log line.
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


@contextmanager
def bound(**fields):
    """Add `fields` to every log line written inside the block (in this thread or task)."""
    token = _bound.set({**_bound.get(), **{key: value for key, value in fields.items() if value not in (None, "")}})
    try:
        yield
    finally:
        _bound.reset(token)


def context() -> dict:
    """The fields bound now."""
    return dict(_bound.get())


def request_id_from(header: str | None) -> str:
    """The client's X-Request-Id when it is a sane one, else a new id."""
    if header and _CLIENT_REQUEST_ID.fullmatch(header):
        return header
    return f"req-{uuid.uuid4()}"


def current_request_id() -> str:
    return _bound.get().get("request_id", "")


class JsonFormatter(logging.Formatter):
    """A JSON object per record: time, level, logger, message, the bound fields, the process
    and, for errors, the exception."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **_bound.get(),
            **{key: value for key, value in getattr(record, "fields", {}).items() if value is not None},
            "process": record.process,
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The same fields for a terminal: `time level logger: message key=value ...`."""

    def format(self, record: logging.LogRecord) -> str:
        # Control characters escaped: a request path can carry a line break, and a forged
        # second line would pass for a record of its own.
        fields = {**_bound.get(), **{k: v for k, v in getattr(record, "fields", {}).items() if v is not None}}
        when = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        text = f"{when} {record.levelname.lower()} {record.name}: {printable(record.getMessage())}"
        if fields:
            text += " " + " ".join(f"{key}={_field(value)}" for key, value in fields.items())
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def _field(value) -> str:
    text = printable(str(value))
    return json.dumps(text) if (" " in text or '"' in text or not text) else text


class GunicornLogger(glogging.Logger):
    """gunicorn's own lines (its start, workers booting and exiting) in the service's format
    (the logger class of imageactions.gunicorn_hooks); the request lines are the
    API's own, so gunicorn's access log stays off."""

    def setup(self, cfg):
        super().setup(cfg)
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")  # as the WSGI application does
        from django.conf import settings

        formatter = TextFormatter() if settings.LOG_FORMAT == "text" else JsonFormatter()
        for handler in self.error_log.handlers:
            handler.setFormatter(formatter)
