"""The /v2/image-actions resource and its per-type aliases."""

import logging
import re
import time

from django.conf import settings
from django.core.exceptions import FieldDoesNotExist
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from django.http import Http404
from django.utils import timezone
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from drf_spectacular.views import SpectacularRedocView
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action as route
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.filters import OrderingFilter
from rest_framework.pagination import CursorPagination
from rest_framework.parsers import BaseParser
from rest_framework.response import Response

from .. import idempotency, quotas, runner, webhooks
from ..choices import TERMINAL_STATUSES, ActionStatus, ErrorCode
from ..filtersets import ImageActionFilterSet
from ..models import ImageAction, WebhookDelivery
from ..pipeline import StepError, get_action_type
from ..projects import listed_for, owner_of, visible_to
from ..urlpolicy import UnresolvableHost, UrlRefused
from ..validators import query_flag, whole_number
from .errors import Conflict, DryRunRefused, KeyReusedError, LengthRequired, NotifyUrlRefused, QuotaExceededError
from .parsers import BoundedJSONParser
from .serializers import (
    ErrorSerializer,
    ImageActionCreateSerializer,
    ImageActionSerializer,
    LabelsUpdateSerializer,
    WebhookDeliverySerializer,
    create_request_schema,
    known_statuses,
    unknown_fields,
)
from .streaming import (
    DownloadExpired,
    IgnoreAcceptHeader,
    download_parameters,
    download_responses,
    request_body_is_empty,
    stored_file_response,
)

log = logging.getLogger(__name__)


def error_responses(*codes: int, words: dict[int, str] | None = None) -> dict:
    """Schema entries for the error answers an operation can give (all share one shape);
    `words` replaces the default description of some codes."""
    words = {
        400: "The request is invalid; `errors` names each field.",
        401: "No valid credentials were sent.",
        403: "The user may not do this (e.g. it is in no project).",
        404: "No such action (or it belongs to another project).",
        409: "The action's state does not allow this.",
        411: "The body was sent without a Content-Length.",
        413: "The body is larger than allowed.",
        415: "The body is not JSON.",
        422: "The request has the schema's shape, but what it names makes it impossible: `code` says why "
        "(not_found: no such image, store or region in your project; conflict: it is not in a state that "
        "allows this; url_not_allowed: a location or URL this service does not read or write; with "
        "dry_run=true, the error code the action would fail with, or destination_unreachable for a notify_url whose "
        "host does not resolve; forbidden: your roles do not allow what the "
        "input asks, e.g. a public image).",
    } | (words or {})
    return {code: OpenApiResponse(ErrorSerializer, description=words[code]) for code in codes}


# The fields of the create body; an alias's body with none of them is the input itself.
CREATE_FIELDS = frozenset({"input", "action_type", "labels", "notify_url"})

_BASE64 = re.compile(r"[A-Za-z0-9+/=]*")


class NewestFirstCursorPagination(CursorPagination):
    """Keyset pagination: a page costs the same at row one million as at row one."""

    ordering = "-created_at"
    page_size = 50
    page_size_query_param = "limit"
    max_page_size = 1000
    invalid_cursor_message = "Invalid cursor: pass the `next` or `previous` link of a page of this list unchanged."

    def get_page_size(self, request):
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        if not 1 <= (whole_number(raw, max_digits=4) or 0) <= self.max_page_size:
            raise ValidationError({"limit": [f"A whole number from 1 to {self.max_page_size}; got {raw!r}."]})
        return int(raw)

    def decode_cursor(self, request):
        raw = request.query_params.get(self.cursor_query_param)
        if raw is not None and not _BASE64.fullmatch(raw):  # base64 decoding would skip such characters
            raise self._invalid_cursor()
        try:
            cursor = super().decode_cursor(request)
        except NotFound:
            raise self._invalid_cursor() from None
        if cursor is not None and cursor.position is not None:
            # A hand-made cursor could carry a position that is no timestamp.
            field = self.ordering[0].lstrip("-")
            try:
                position = ImageAction._meta.get_field(field).to_python(cursor.position)
            except (DjangoValidationError, FieldDoesNotExist):
                raise self._invalid_cursor() from None
            if position is None or timezone.is_naive(position):  # real cursors carry their UTC offset
                raise self._invalid_cursor()
        return cursor

    def _invalid_cursor(self) -> ValidationError:
        return ValidationError({"cursor": [self.invalid_cursor_message]})

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"] = {"type": "integer", "minimum": 1, "maximum": self.max_page_size}
        return parameters


class StreamedBodyParser(BaseParser):
    """Accepts any body without reading it: the view streams `request.stream` itself."""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):
        return {}


IDEMPOTENCY_KEY_PARAMETER = OpenApiParameter(
    idempotency.HEADER,
    {"type": "string", "pattern": f"^{idempotency.VALID_KEY.pattern}$"},
    OpenApiParameter.HEADER,
    required=False,
    description="Any unique string (e.g. a UUID), 1 to 255 printable ASCII characters. A retry with the "
    "same key and the same body within IMAGEACTIONS_IDEMPOTENCY_WINDOW (24 h) answers with the action "
    "the first one created (and `Idempotent-Replayed: true`) instead of creating another; the same key "
    "with a different body is a 409 naming the key.",
)


DRY_RUN_PARAMETER = OpenApiParameter(
    "dry_run",
    OpenApiTypes.BOOL,
    OpenApiParameter.QUERY,
    required=False,
    description="true: create nothing; check the request as far as possible (the input, and what the "
    "action type checks before it starts, e.g. an import's source: the URL policy, its answer, size, type, "
    "compression and disk format from its first bytes) and answer 200 with `checks`, or the 400 the "
    "request would get or the action would fail with.",
)


class ImageActionSchema(AutoSchema):
    """Builds the create body from the registry when the schema is generated, not at import time,
    so every installed action type appears, and an alias shows only its own type's input."""

    def get_request_serializer(self):
        if self.view.action == "create":
            return create_request_schema(self.view.fixed_action_type)
        return super().get_request_serializer()

    def get_response_serializers(self):
        if self.view.action == "create":
            reused = "The Idempotency-Key was sent with a different request within its window."
            dry_run = OpenApiResponse(
                OpenApiTypes.OBJECT,
                description="With dry_run=true: nothing was created; `action_type`, `input` and `labels` as the "
                "create would take them, and `checks`, what the action type found (e.g. `source`).",
            )
            return {
                201: ImageActionSerializer,
                200: dry_run,
                **error_responses(
                    400,
                    401,
                    403,
                    411,
                    413,
                    409,
                    415,
                    422,
                    words={
                        409: reused,
                        403: "Not allowed, or a quota of the project is used up (code quota_exceeded).",
                    },
                ),
            }
        return super().get_response_serializers()

    def get_override_parameters(self):
        if self.view.action == "create":
            return [IDEMPOTENCY_KEY_PARAMETER, DRY_RUN_PARAMETER]
        return super().get_override_parameters()

    def get_summary(self):
        if self.view.action == "create":
            fixed = self.view.fixed_action_type
            return f"Create an action of type {fixed!r}" if fixed else "Create an action"
        return super().get_summary()


@extend_schema_view(
    list=extend_schema(
        summary="List your actions",
        parameters=[
            OpenApiParameter(
                "all_projects",
                OpenApiTypes.BOOL,
                description="true: every project's actions (for callers the policy allows, e.g. admins).",
            )
        ],
        responses={
            200: ImageActionSerializer(many=True),
            **error_responses(
                400,
                401,
                403,
                words={
                    400: "A filter, `limit` or `cursor` is invalid, or a query parameter is unknown.",
                    403: "all_projects=true from a caller the policy does not allow it.",
                },
            ),
        },
    ),
    retrieve=extend_schema(
        summary="Show one action; with ?wait=N, once its status changes (or after N seconds)",
        responses={200: ImageActionSerializer, **error_responses(400, 401, 404)},
        parameters=[
            OpenApiParameter(
                "wait",
                OpenApiTypes.INT,
                description="Answer as soon as the action's status differs from `seen_status` (or from its "
                "status when the request came) or it has ended, at the latest after this many seconds "
                f"(1 to IMAGEACTIONS_MAX_WAIT, default {settings.MAX_WAIT:g}); 0 or absent: answer at once.",
            ),
            OpenApiParameter(
                "seen_status",
                OpenApiTypes.STR,
                description="With `wait`: the status the client last saw, so that a change in between is not missed.",
            ),
        ],
    ),
)
class ImageActionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Create, list, poll and cancel image actions; another owner's actions do not exist here."""

    schema = ImageActionSchema()
    serializer_class = ImageActionSerializer
    parser_classes = [BoundedJSONParser]
    pagination_class = NewestFirstCursorPagination
    filter_backends = [DjangoFilterBackend, OrderingFilter]
    filterset_class = ImageActionFilterSet
    ordering_fields = ["created_at", "updated_at"]
    ordering = ["-created_at"]
    fixed_action_type: str | None = None
    policy_rules = {"cancel": "cancel", "data": "upload"}
    # Any text, not only UUIDs, reaches the view: a malformed id gets the same JSON 404 as a
    # missing or foreign one, instead of Django's HTML page.
    lookup_value_regex = "[^/]+"

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        if self.action is not None:  # else a method the route does not have: its 405 comes next
            refuse_unknown_query_parameters(request, self.query_parameters())

    def query_parameters(self) -> tuple[set[str], set[str]]:
        """The query parameters this route takes: (all of them, those that may be repeated)."""
        if self.action == "retrieve":
            return {"wait", "seen_status"}, set()
        if self.action == "create":
            return {"dry_run"}, set()
        if self.action != "list":
            return set(), set()
        filters = set(self.filterset_class.base_filters)
        return {*filters, "ordering", "cursor", "limit", "all_projects"}, {
            "action_type",
            "status",
            "label",
            "error_code",
        }

    def get_queryset(self):
        actions = ImageAction.objects.all()
        if self.action == "list":
            queryset = listed_for(actions, self.request)
        else:
            queryset = visible_to(actions, self.request.user)
        if self.fixed_action_type:
            queryset = queryset.filter(action_type=self.fixed_action_type)
        return queryset

    def retrieve(self, request, *args, **kwargs):
        action = self.get_object()
        wait = _wait_seconds(request)
        seen = request.query_params.get("seen_status")
        if seen is not None and seen not in known_statuses():
            raise ValidationError(
                {"seen_status": [f"Unknown status {seen!r}. Use one of: {', '.join(known_statuses())}."]}
            )
        if wait and action.status not in TERMINAL_STATUSES:
            seen = seen or action.status
            _wait_for_change(action, seen, deadline=time.monotonic() + wait)
        return Response(self.get_serializer(action).data)

    def get_object(self):
        try:
            return super().get_object()
        except Http404:
            # The same words for a missing, a foreign and a malformed id: nothing leaks.
            raise NotFound(
                "No image action with this id exists in your project; ended actions are deleted "
                "when they expire (see their expires_at)."
            ) from None

    def create(self, request, *args, **kwargs):
        owner = owner_of(request.user)
        meta = request.META
        if "chunked" in meta.get("HTTP_TRANSFER_ENCODING", "").lower() and not meta.get("CONTENT_LENGTH"):
            # Django reads exactly Content-Length bytes; a chunked body would silently read as empty.
            raise LengthRequired()
        if request_body_is_empty(request._request):
            # An alias would read no body as an input of defaults: say what is missing instead.
            raise ValidationError({"body": ["Send the action as a JSON object in the request body."]})
        data = request.data
        if self.fixed_action_type and isinstance(data, dict) and not CREATE_FIELDS & set(data):
            # The alias's own dialect (the design this service comes from): the body is the input.
            data = {"input": data}
        serializer = ImageActionCreateSerializer(
            data=data, context=self.get_serializer_context(), fixed_action_type=self.fixed_action_type
        )
        dry_run = query_flag(request, "dry_run")
        key = idempotency.key_of(request)  # checked on a dry run too, though not remembered
        key = None if dry_run else key
        # The same request is the same body, whatever its key order or route (an alias names its
        # type); the earlier answer comes before any check of what is true now (a quota the
        # first request used up, an image deleted since).
        digest = (
            idempotency.request_digest(
                "create", {**data, "action_type": data.get("action_type", self.fixed_action_type)}
            )
            if isinstance(data, dict)
            else idempotency.request_digest("create", data)
        )
        if key and (earlier := self._earlier_answer(owner, key, digest)):
            return earlier
        serializer.is_valid(raise_exception=True)
        validated = serializer.validated_data
        if validated["notify_url"]:
            _check_notify_url(validated["notify_url"], resolve=dry_run)
        try:
            action_type = get_action_type(validated["action_type"])
            quotas.check_create(owner, makes_image=action_type.makes_images, stages_bytes=action_type.stages_bytes)
        except quotas.QuotaExceeded as error:
            raise QuotaExceededError(error) from None
        if dry_run:
            return self._dry_run(validated, owner)
        action_type = get_action_type(validated["action_type"])
        try:
            with transaction.atomic():
                action = runner.create_action(
                    action_type,
                    owner=owner,
                    input_data=validated["input"],
                    labels=validated["labels"],
                    notify_url=validated["notify_url"],
                )
                body = ImageActionSerializer(action, context=self.get_serializer_context()).data
                if key:
                    idempotency.remember(owner, key, digest, action, body)
        except IntegrityError:
            # A concurrent request with the same key made its action first (and this one is
            # rolled back, its task never sent): answer as it was answered.
            log.info("Idempotency-Key %r: a concurrent request created the action first", key)
            if key and (earlier := self._earlier_answer(owner, key, digest)):
                return earlier
            raise
        return self._created(action, body)

    def _dry_run(self, validated: dict, owner: str) -> Response:
        """What the create would do, checked as far as it can be without doing it: nothing is
        created or remembered; a check that fails answers 422 as the action would fail."""
        action_type = get_action_type(validated["action_type"])
        checks = {}
        if action_type.dry_run:
            try:
                checks = action_type.dry_run(validated["input"], owner)
            except StepError as error:
                raise DryRunRefused(error) from None
        return Response({"dry_run": True, **validated, "checks": checks}, status=status.HTTP_200_OK)

    def _earlier_answer(self, owner: str, key: str, digest: str) -> Response | None:
        try:
            earlier = idempotency.earlier_answer(owner, key, digest)
        except idempotency.KeyReused as error:
            raise KeyReusedError(str(error)) from None
        if earlier is None:
            return None
        action, body = earlier
        return self._created(action, body, replayed=True)

    def _created(self, action: ImageAction, body: dict, *, replayed: bool = False) -> Response:
        headers = {"Location": self.request.build_absolute_uri(f"/v2/image-actions/{action.pk}")}
        if replayed:
            headers["Idempotent-Replayed"] = "true"
        return Response(body, status=status.HTTP_201_CREATED, headers=headers)

    @extend_schema(
        request=LabelsUpdateSerializer,
        responses={200: ImageActionSerializer, **error_responses(400, 401, 404)},
        summary="Change an action's labels (replaced as a whole)",
    )
    def partial_update(self, request, pk=None):
        action = self.get_object()
        serializer = LabelsUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        unknown = unknown_fields(serializer, request.data)
        if unknown:
            raise ValidationError({name: ["Unknown field; only `labels` can be changed."] for name in unknown})
        if "labels" in serializer.validated_data:  # a PATCH without it changes nothing
            ImageAction.objects.filter(pk=action.pk).update(labels=serializer.validated_data["labels"])
            action.refresh_from_db()
        return Response(ImageActionSerializer(action, context=self.get_serializer_context()).data)

    @extend_schema(
        request=None,
        responses={200: WebhookDeliverySerializer(many=True), **error_responses(400, 401, 404)},
        summary="The webhook notifications of an action and the attempts at delivering each, oldest first",
        filters=False,  # every notification of the action, unfiltered and unpaginated
    )
    @route(detail=True, methods=["get"], pagination_class=None)
    def deliveries(self, request, pk=None):
        action = self.get_object()
        deliveries = WebhookDelivery.objects.filter(action=action).order_by("sequence")
        return Response(WebhookDeliverySerializer(deliveries, many=True).data)

    @extend_schema(
        request=None,
        responses={202: ImageActionSerializer, **error_responses(401, 404, 409)},
        summary="Cancel an action",
    )
    @route(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        action = self.get_object()
        if not runner.request_cancel(action):
            raise Conflict(f"The action has already ended with status {action.status!r}; nothing to cancel.")
        action.refresh_from_db()
        return Response(
            ImageActionSerializer(action, context={"request": request}).data, status=status.HTTP_202_ACCEPTED
        )

    @extend_schema(
        request={"application/octet-stream": {"type": "string", "format": "binary", "minLength": 1}},
        responses={200: ImageActionSerializer, **error_responses(400, 401, 404, 409, 413)},
        summary="Upload the data of an action that awaits it",
    )
    @route(detail=True, methods=["put"], parser_classes=[StreamedBodyParser])
    def data(self, request, pk=None):
        action = self.get_object()
        if request_body_is_empty(request._request):
            raise ValidationError(
                {
                    "body": [
                        "The upload has no data: send the bytes as the request body, with a Content-Length "
                        "or chunked transfer encoding. The action still waits for its data."
                    ]
                }
            )
        if not runner.receive_data(action, request.stream or request._request):
            raise Conflict(f"The action is not awaiting data (status {action.status!r}).")
        action.refresh_from_db()
        return Response(ImageActionSerializer(action, context={"request": request}).data)

    @extend_schema(
        responses={
            **download_responses("file"),
            **error_responses(401, 404),
            410: OpenApiResponse(ErrorSerializer, description="The file expired (see the action's expires_at)."),
            416: OpenApiResponse(ErrorSerializer, description="The range starts past the end of the file."),
            503: OpenApiResponse(ErrorSerializer, description="The store holding the file could not be used."),
        },
        parameters=download_parameters("file"),
        summary="Download the file a successful action produced (e.g. an export to a download link)",
    )
    @route(detail=True, methods=["get"], content_negotiation_class=IgnoreAcceptHeader)
    def file(self, request, pk=None):
        action = self.get_object()
        action_type = get_action_type(action.action_type)
        stored = None
        if action.status == ActionStatus.SUCCESS and action_type and action_type.result_file:
            stored = action_type.result_file(action)
        if stored is None:
            raise NotFound(
                f"Action {action.pk} has no file to download (status {action.status!r}); only a successful "
                f"action that offers one, such as an export to a download link, has it."
            )
        if action.expires_at and action.expires_at <= timezone.now():
            raise DownloadExpired(
                f"The file of action {action.pk} expired at {action.expires_at.isoformat()}; run the action again."
            )
        return stored_file_response(request, stored, what=f"the file of action {action.pk}")


def _check_notify_url(url: str, *, resolve: bool) -> None:
    """422 (url_not_allowed) for a notify_url the URL policy refuses; a dry run also resolves its host."""
    try:
        webhooks.check_notify_url(url, resolve=resolve)
    except UrlRefused as refusal:
        raise NotifyUrlRefused(f"The url '{url}' is not allowed: {refusal}.", url) from None
    except UnresolvableHost as error:
        raise ValidationError({"notify_url": [f"{error}."]}, code=ErrorCode.DESTINATION_UNREACHABLE) from None


def _wait_seconds(request) -> float:
    raw = request.query_params.get("wait")
    if raw is None:
        return 0
    seconds = whole_number(raw, max_digits=4)
    if seconds is None or seconds > settings.MAX_WAIT:
        raise ValidationError({"wait": [f"Whole seconds from 0 to {settings.MAX_WAIT:g}; got {raw!r}."]})
    return seconds


def _wait_for_change(action: ImageAction, seen: str, *, deadline: float) -> None:
    """Hold the request until the action's status is not `seen` or it ended, or the deadline.

    A cheap poll of one column (WAIT_POLL_INTERVAL), not a notification: it works the same on
    SQLite and PostgreSQL, and holds one of the API process's threads at most until `deadline`.
    """
    rows = ImageAction.objects.filter(pk=action.pk)
    while action.status == seen and action.status not in TERMINAL_STATUSES:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        time.sleep(min(settings.WAIT_POLL_INTERVAL, remaining))
        status = rows.values_list("status", flat=True).first()
        if status is None:
            return  # purged meanwhile: answer with what was read
        if status != action.status:
            action.refresh_from_db()


def refuse_unknown_query_parameters(request, parameters: tuple[set[str], set[str]]) -> None:
    """400 for a query parameter the route does not take, or that it takes once, given twice, or
    given empty: ignored, `?pending=true` would answer every action and look like a result."""
    known, repeatable = parameters
    errors = {}
    for name in request.query_params:
        values = request.query_params.getlist(name)
        if name not in known:
            takes = f"this route takes: {', '.join(sorted(known))}" if known else "this route takes none"
            errors[name] = [f"Unknown query parameter; {takes}."]
        elif name not in repeatable and len(values) > 1:
            errors[name] = ["Given more than once; it takes one value."]
        elif not all(value.strip(", ") for value in values):
            errors[name] = ["Empty; give a value, or leave the parameter out."]
    if errors:
        raise ValidationError(errors)


class AliasViewSetMixin:
    """An alias also speaks the dialect of the design it comes from: it takes the input as the
    whole body, and an ended action names its image as a path (`image_ref`) and says when it
    expires (`expires-by`), beside the resource's own fields."""

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "alias_dialect": True}


def alias_viewset(action_type: str):
    """/v2/image-imports etc.: the same resource, with the action type fixed."""
    viewset = type(
        f"{action_type.title()}ActionViewSet",
        (AliasViewSetMixin, ImageActionViewSet),
        {"fixed_action_type": action_type},
    )
    return extend_schema_view(
        list=extend_schema(summary=f"List your {action_type} actions"),
    )(viewset)


class OfflineRedocView(SpectacularRedocView):
    """Redoc from the sidecar's static files, without the web fonts drf-spectacular links to."""

    template_name = "imageactions/redoc.html"
