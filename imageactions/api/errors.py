"""One JSON shape for every API error: {"code", "detail", "errors": {"field.path": [...]}}."""

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from ..choices import ErrorCode
from ..validators import CONFLICT, FORBIDDEN, NOT_FOUND
from .glance import error_body

# Leaf codes of a ValidationError that make it a 422 (see imageactions.validators).
UNPROCESSABLE_CODES = frozenset({NOT_FOUND, CONFLICT, FORBIDDEN, *ErrorCode.values})


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
    """An Idempotency-Key sent again with a different request: a conflict with the request that
    key already stands for."""

    status_code = status.HTTP_409_CONFLICT
    default_code = "idempotency_key_reused"


class DryRunRefused(exceptions.ValidationError):
    """A dry run found what the action would fail on: a 422 with the failure's error code."""

    def __init__(self, error):
        super().__init__({"input": [str(error)]}, code=error.code)
        self.error_details = error.details


class NotifyUrlRefused(exceptions.ValidationError):
    """A notify_url the URL policy refuses: a 422 with the import sources' code, url_not_allowed."""

    def __init__(self, words: str, url: str):
        super().__init__({"notify_url": [words]}, code=ErrorCode.URL_NOT_ALLOWED)
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


def leaf_codes(detail, ordered: bool = False):
    """The codes of the messages in a ValidationError's detail (a set; in order with `ordered`)."""
    if isinstance(detail, dict):
        found = [code for value in detail.values() for code in leaf_codes(value, ordered=True)]
    elif isinstance(detail, list):
        found = [code for item in detail for code in leaf_codes(item, ordered=True)]
    else:
        found = [getattr(detail, "code", None)]
    return found if ordered else set(found)


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
    glance = getattr(context.get("view"), "glance_errors", False)
    if isinstance(exc, exceptions.ValidationError):
        errors = flatten_errors(exc.detail) or {"non_field_errors": ["The request is invalid."]}
        first_field, first_messages = next(iter(errors.items()))
        codes = leaf_codes(exc.detail)
        code = "invalid"
        if codes and codes <= UNPROCESSABLE_CODES:
            # The request has the schema's shape; what it names makes it impossible (Glance's
            # clients know only Glance's 400).
            code = next(iter(leaf_codes(exc.detail, ordered=True)))
            if not glance:
                response.status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
        body = {
            "code": code,
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
    if glance:
        # The Glance API answers in Glance's shape, which its clients parse.
        body = error_body(response.status_code, body["detail"], body["errors"])
    return Response(body, status=response.status_code, headers=dict(response.items()))
