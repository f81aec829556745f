"""What the API records of every request: its id (X-Request-Id, taken from the client or made,
and returned), one log line when it is answered, and its latency in the metrics."""

from __future__ import annotations

import logging
import re
import time

from . import metrics
from .logs import bound, request_id_from

log = logging.getLogger("imageactions.requests")

REQUEST_ID_HEADER = "X-Request-Id"
# Django REST framework's routes are regular expressions; the metric's `route` label shows them
# the way path() routes read: v2/image-actions/{pk}.
_NAMED_GROUP = re.compile(r"\(\?P<(\w+)>[^)]*\)")


def route_of(request) -> str:
    """The URL pattern the request matched, without its values: a bounded set of labels."""
    match = getattr(request, "resolver_match", None)
    if match is None:
        return "unmatched"
    route = _NAMED_GROUP.sub(r"{\1}", match.route or "").replace("/?", "/").replace("^", "").replace("$", "")
    route = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)  # path() converters: <uuid:pk> -> {pk}
    route = "/" + route.strip("/") if route else "/"
    # A request that waits for a change (?wait=N) takes as long as it was told: its own label,
    # so that it does not pass for a slow answer.
    return route + "?wait" if request.GET.get("wait") not in (None, "", "0") else route


class RequestTelemetryMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request_id = request_id_from(request.headers.get(REQUEST_ID_HEADER))
        request.request_id = request_id
        started = time.monotonic()
        with bound(request_id=request_id):
            response = self.get_response(request)
            seconds = time.monotonic() - started
            response[REQUEST_ID_HEADER] = request_id
            route = route_of(request)
            metrics.request_served(request.method, route, response.status_code, seconds)
            user = getattr(request, "user", None)
            log.info(
                "%s %s %s",
                request.method,
                request.path[:500],
                response.status_code,
                extra={
                    "fields": {
                        "route": route,
                        "status": response.status_code,
                        "duration_ms": round(seconds * 1000, 1),
                        "user": getattr(user, "username", "") or None,
                        "remote_addr": request.META.get("REMOTE_ADDR"),
                    }
                },
            )
        return response
