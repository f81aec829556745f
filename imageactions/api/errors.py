"""One JSON shape for every API error: {"code", "detail", "errors": {"field.path": [...]}}."""

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from ..choices import ErrorCode
from .glance import error_body


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "payload_too_large"
    default_detail = "The request body is too large."


class LengthRequired(exceptions.APIException):
    status_code = status.HTTP_411_LENGTH_REQUIRED
    default_code = "length_required"
    default_detail = "Send the request body with a Content-Length header (chunked bodies are not accepted here)."


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"
    default_detail = "The resource is not in a state that allows this request."


class QuotaExceededError(exceptions.APIException):
    """A project quota would be passed (imageactions.quotas); 413 on Glance's routes, as Glance answers."""

    status_code = status.HTTP_403_FORBIDDEN
    default_code = "quota_exceeded"

    def __init__(self, error, *, glance: bool = False):
        super().__init__(str(error))
        if glance:
            self.status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
        self.quota = {"quota": error.quota, "limit": error.limit, "usage": error.usage}


class KeyReusedError(exceptions.APIException):
    """An Idempotency-Key sent again with a different request (the IETF draft's 422)."""

    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_code = "idempotency_key_reused"


class DryRunRefused(exceptions.ValidationError):
    """A dry run found what the action would fail on: the 400 carries the failure's error code."""

    def __init__(self, error):
        super().__init__({"input": [str(error)]})
        self.error_code, self.error_details = error.code, error.details


class NotifyUrlRefused(exceptions.ValidationError):
    """A notify_url the URL policy refuses: a 400 with the import sources' code, url_not_allowed."""

    error_code = ErrorCode.URL_NOT_ALLOWED

    def __init__(self, words: str, url: str):
        super().__init__({"notify_url": [words]})
        self.error_details = {"url": url}


def flatten_errors(detail, prefix="") -> dict[str, list[str]]:
    """{"input": {"location": ["..."]}} -> {"input.location": ["..."]}."""
    if isinstance(detail, dict):
        flat = {}
        for key, value in detail.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            flat.update(flatten_errors(value, name))
        return flat
    if isinstance(detail, list) and detail and all(isinstance(item, (dict, list)) for item in detail):
        flat = {}
        for index, value in enumerate(detail):
            flat.update(flatten_errors(value, f"{prefix}[{index}]"))
        return flat
    items = detail if isinstance(detail, list) else [detail]
    return {prefix or "non_field_errors": [str(item) for item in items]}


def exception_handler(exc, context):
    if isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        exc = PayloadTooLarge(f"The request body is larger than the {limit} bytes allowed; send a smaller JSON object.")
    elif isinstance(exc, Http404):
        # Django's text names models and queries; a missing, foreign or malformed id all read alike.
        exc = exceptions.NotFound("Not found: nothing exists at this address for your project.")
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        errors = flatten_errors(exc.detail) or {"non_field_errors": ["The request is invalid."]}
        first_field, first_messages = next(iter(errors.items()))
        body = {
            "code": getattr(exc, "error_code", "invalid"),
            "detail": f"{first_field}: {first_messages[0]}" if first_field != "non_field_errors" else first_messages[0],
            "errors": errors,
        }
        if getattr(exc, "error_details", None):
            body["error_details"] = exc.error_details
    else:
        detail = getattr(exc, "detail", str(exc))
        code = detail.code if hasattr(detail, "code") else getattr(exc, "default_code", "error")
        body = {"code": code, "detail": str(detail), "errors": {}}
        if isinstance(exc, QuotaExceededError):
            body["quota"] = exc.quota
    if getattr(context.get("view"), "glance_errors", False):
        # The Glance API answers in Glance's shape, which its clients parse.
        body = error_body(response.status_code, body["detail"], body["errors"])
    return Response(body, status=response.status_code, headers=dict(response.items()))
