"""/v2/images: the Glance Image API v2 (records, JSON-patch, tags, (de)activation, file up- and
download) and its interoperable import (stage, import, tasks), built on image actions."""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from urllib.parse import urlencode

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q, Value
from django.db.models.functions import Coalesce
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers, status, viewsets
from rest_framework.decorators import action as route
from rest_framework.response import Response
from rest_framework.views import APIView

from .. import quotas, runner
from ..choices import TERMINAL_STATUSES, ActionStatus, ImageRole, ImageStatus, Visibility
from ..images import AWAITING_BYTES, import_started, in_use
from ..models import Image, ImageAction, ImageLocation, ImageTag
from ..pipeline import ImportMethod, ImportRequest, StoredFile, action_types, safe_filename
from ..policy import allowed, needed_roles
from ..projects import owner_of, visible_to
from ..stores import StoreError, get_store
from ..validators import (
    MAX_STORED_INT,
    validate_image_properties,
    validate_image_tags,
    validate_store_names,
    whole_number,
)
from . import glance
from .errors import Conflict, QuotaExceededError, flatten_errors
from .parsers import BoundedJSONParser, ImageDataParser, JsonPatchParser
from .serializers import ErrorSerializer, jsonable
from .streaming import (
    IgnoreAcceptHeader,
    StoreUnavailable,
    download_parameters,
    download_responses,
    stored_file_response,
)

LIMIT_DEFAULT, LIMIT_MAX = 25, 1000
SORT_KEYS = ("name", "status", "container_format", "disk_format", "size", "id", "created_at", "updated_at")
# Null-able sort keys sort as these, so a marker can always be compared.
SORT_NULLS = {"name": Value(""), "container_format": Value(""), "disk_format": Value(""), "size": Value(-1)}
LIST_PARAMETERS = {"limit", "marker", "sort", "sort_key", "sort_dir", "member_status"}
EXACT_FILTERS = ("name", "status", "owner", "checksum", "os_hash_value", "disk_format", "container_format", "id")
TIME_OPERATORS = {"gt": "gt", "gte": "gte", "lt": "lt", "lte": "lte", "eq": "exact"}
GLANCE_DIRECT, STAGE = "glance-direct", "stage"


class Forbidden(exceptions.PermissionDenied):
    pass


class UnsupportedMediaType(exceptions.UnsupportedMediaType):
    pass


def _bad_request(message: str) -> exceptions.ValidationError:
    return exceptions.ValidationError({"non_field_errors": [message]})


# -- reading -------------------------------------------------------------------------


def readable_images(user):
    """What the user may see: the project's own images (admins: all, as in Glance), and public and
    community ones."""
    own = visible_to(Image.objects.all(), user)
    if allowed(user, "all_projects"):
        return own
    return Image.objects.filter(
        Q(pk__in=own.values("pk")) | Q(visibility__in=[Visibility.PUBLIC, Visibility.COMMUNITY])
    )


def find_image(request, pk) -> Image:
    """The image `pk` if the user may see it; else 404 (malformed ids too)."""
    try:
        image = readable_images(request.user).filter(pk=uuid.UUID(str(pk))).first()
    except ValueError:
        image = None
    if image is None:
        # The same words for a foreign image as for a missing one: existence is not revealed.
        raise exceptions.NotFound(f"No image found with ID {pk}")
    return image


def tags_by_image(images) -> dict:
    tags: dict = {}
    for image_id, name in ImageTag.objects.filter(image__in=images).order_by("id").values_list("image_id", "name"):
        tags.setdefault(image_id, []).append(name)
    return tags


def render(image: Image) -> dict:
    return glance.image_body(image, tags_by_image([image]).get(image.pk, []))


def _truth(value: str, name: str) -> bool:
    lowered = value.strip().lower()
    if lowered not in ("true", "false"):
        raise _bad_request(f"'{name}' takes true or false, not {value!r}.")
    return lowered == "true"


def _sort_spec(query) -> list[tuple[str, bool]]:
    """[(key, descending)], from `sort=name:asc,size` or `sort_key`/`sort_dir` (repeatable)."""
    if "sort" in query:
        spec = []
        for item in filter(None, (part.strip() for part in query["sort"].split(","))):
            key, _, direction = item.partition(":")
            spec.append((key, (direction or "desc") == "desc"))
            if direction not in ("", "asc", "desc"):
                raise _bad_request(f"Unknown sort direction {direction!r}; use asc or desc.")
    else:
        keys = query.getlist("sort_key") or ["created_at"]
        dirs = query.getlist("sort_dir") or ["desc"]
        if any(d not in ("asc", "desc") for d in dirs):
            raise _bad_request("sort_dir takes asc or desc.")
        dirs += [dirs[-1]] * (len(keys) - len(dirs))
        spec = [(key, direction == "desc") for key, direction in zip(keys, dirs)]
    for key, _ in spec:
        if key not in SORT_KEYS:
            raise _bad_request(f"Unknown sort key {key!r}; use one of: {', '.join(SORT_KEYS)}.")
    if "id" not in (key for key, _ in spec):
        spec.append(("id", spec[-1][1] if spec else True))  # a total order, so markers are exact
    return spec


def _filtered(queryset, query):
    for name in EXACT_FILTERS:
        if name in query:
            value = query[name]
            if name == "id":
                try:
                    value = uuid.UUID(value)
                except ValueError:
                    return queryset.none()
            queryset = queryset.filter(**{name: value})
    visibility = query.get("visibility")
    if visibility and visibility != "all":
        if visibility not in Visibility.values:
            raise _bad_request(f"Unknown visibility {visibility!r}; use one of: {', '.join(Visibility.values)}, all.")
        queryset = queryset.filter(visibility=visibility)
    elif not visibility:
        queryset = queryset.exclude(visibility=Visibility.COMMUNITY)  # listed only when asked for
    queryset = queryset.filter(os_hidden=_truth(query["os_hidden"], "os_hidden") if "os_hidden" in query else False)
    if "protected" in query:
        queryset = queryset.filter(protected=_truth(query["protected"], "protected"))
    for bound, lookup in (("size_min", "size__gte"), ("size_max", "size__lte")):
        if bound in query:
            if (number := whole_number(query[bound])) is None:
                raise _bad_request(f"'{bound}' takes a number of bytes, not {query[bound]!r}.")
            queryset = queryset.filter(**{lookup: number})
    for tag in query.getlist("tag"):
        queryset = queryset.filter(Exists(ImageTag.objects.filter(image=OuterRef("pk"), name=tag)))
    for name in ("created_at", "updated_at"):
        if name in query:
            operator, _, moment = query[name].partition(":")
            try:
                when = datetime.fromisoformat(moment.replace("Z", "+00:00"))
            except ValueError:
                raise _bad_request(f"'{name}' takes OPERATOR:TIME, e.g. gte:2026-01-01T00:00:00Z.") from None
            if operator not in TIME_OPERATORS:
                raise _bad_request(
                    f"Unknown operator {operator!r} in '{name}'; use one of: {', '.join(TIME_OPERATORS)}."
                )
            queryset = queryset.filter(**{f"{name}__{TIME_OPERATORS[operator]}": when})
    known = {*LIST_PARAMETERS, *EXACT_FILTERS, "visibility", "os_hidden", "protected", "size_min", "size_max", "tag"}
    for name in set(query) - known - {"created_at", "updated_at", "format"}:
        if "__" in name or not name.strip():
            raise _bad_request(f"Unknown filter {name!r}.")
        queryset = queryset.filter(**{f"properties__{name}": query[name]})  # a free-form property
    return queryset


def _sorted(images, spec: list[tuple[str, bool]]):
    """`images` with the values they sort by (nulls as comparable values)."""
    return images.annotate(
        **{f"sort_{key}": Coalesce(key, SORT_NULLS[key]) if key in SORT_NULLS else F(key) for key, _ in spec}
    )


def _after(marker: Image, spec: list[tuple[str, bool]]) -> Q:
    """Rows strictly after `marker` in the order `spec`: the keyset condition."""
    values = _sorted(Image.objects.filter(pk=marker.pk), spec).values(*(f"sort_{key}" for key, _ in spec)).get()
    condition, equal = Q(), Q()
    for key, descending in spec:
        field, value = f"sort_{key}", values[f"sort_{key}"]
        condition |= equal & Q(**{f"{field}__{'lt' if descending else 'gt'}": value})
        equal &= Q(**{field: value})
    return condition


def list_page(request) -> dict:
    query = request.query_params
    limit_text = query.get("limit", str(LIMIT_DEFAULT))
    if (limit := whole_number(limit_text)) is None:
        raise _bad_request(f"'limit' takes a whole number, not {limit_text!r}.")
    limit = max(1, min(limit, LIMIT_MAX))
    spec = _sort_spec(query)
    images = _sorted(_filtered(readable_images(request.user), query), spec)
    if "marker" in query:
        marker = None
        try:
            marker = readable_images(request.user).filter(pk=uuid.UUID(query["marker"])).first()
        except ValueError:
            pass
        if marker is None:
            raise _bad_request(f"The marker {query['marker']!r} is no image you can see.")
        images = images.filter(_after(marker, spec))
    ordering = [f"-sort_{key}" if descending else f"sort_{key}" for key, descending in spec]
    page = list(images.order_by(*ordering).prefetch_related("locations")[: limit + 1])
    more, page = len(page) > limit, page[:limit]
    tags = tags_by_image(page)
    params = [(name, value) for name, values in query.lists() if name != "marker" for value in values]
    first = "/v2/images" + ("?" + urlencode(params) if params else "")
    body = {"images": [glance.image_body(image, tags.get(image.pk, [])) for image in page], "first": first}
    body["schema"] = "/v2/schemas/images"
    if more:
        # glanceclient rewrites `limit=N` in this text and follows it as it is: keep it literal.
        with_limit = params if "limit" in query else [*params, ("limit", str(limit))]
        body["next"] = "/v2/images?" + urlencode([*with_limit, ("marker", str(page[-1].pk))])
    return body


# -- writing -------------------------------------------------------------------------


def _check_value(name: str, value):
    """A base attribute's new value, as Glance's schema allows it; 400 otherwise."""
    if name == "name":
        if value is not None and (not isinstance(value, str) or len(value) > 255):
            raise _bad_request("'name' is text of at most 255 characters, or null.")
        return value or ""
    if name == "visibility":
        if value not in Visibility.values:
            raise _bad_request(f"'visibility' is one of: {', '.join(Visibility.values)}.")
        return value
    if name in ("protected", "os_hidden"):
        if not isinstance(value, bool):
            raise _bad_request(f"'{name}' is true or false.")
        return value
    if name in ("disk_format", "container_format"):
        allowed = glance.DISK_FORMATS if name == "disk_format" else glance.CONTAINER_FORMATS
        if value is not None and value not in allowed:
            raise _bad_request(f"'{name}' is one of: {', '.join(allowed)}, or null.")
        return value
    if name in ("min_disk", "min_ram"):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_STORED_INT:
            raise _bad_request(f"'{name}' is a whole number from 0 to {MAX_STORED_INT}.")
        return value
    if name == "tags":
        try:
            return validate_image_tags(value)
        except exceptions.ValidationError as error:
            raise _bad_request(f"'tags': {error.detail[0]}") from None
    raise AssertionError(name)


def _check_writable(name: str, image: Image | None) -> None:
    if name.startswith(glance.RESERVED_PREFIX):
        raise Forbidden(f"Attribute '{name}' is reserved.")
    if name in glance.READ_ONLY:
        raise Forbidden(f"Attribute '{name}' is read-only.")
    if name in ("disk_format", "container_format") and image is not None and image.status != ImageStatus.QUEUED:
        raise Forbidden(f"Attribute '{name}' can be only replaced for a queued image.")


def _with_properties(properties: dict) -> dict:
    try:
        return validate_image_properties(properties)
    except exceptions.ValidationError as error:
        raise _bad_request(str(error.detail[0])) from None


def _save(user, image: Image, fields: set[str], tags: list[str] | None) -> None:
    """Write only the `fields` a request changed: an import may be moving the same row's status
    and bytes meanwhile, and a whole-row save would put their old values back."""
    made_public = image.visibility == Visibility.PUBLIC and (image._state.adding or "visibility" in fields)
    if made_public and not allowed(user, "publicize"):
        raise Forbidden(f"Making an image public ('publicize') needs one of the roles: {needed_roles('publicize')}.")
    with transaction.atomic():
        if image._state.adding:
            image.save()
        else:
            image.save(update_fields=[*fields, "updated_at"])
        if tags is not None:
            image.tag_set.exclude(name__in=tags).delete()
            present = set(image.tag_set.values_list("name", flat=True))
            ImageTag.objects.bulk_create(ImageTag(image=image, name=tag) for tag in tags if tag not in present)


def create_record(request) -> Image:
    body = request.data
    if not isinstance(body, dict):
        raise _bad_request("Send the image's properties as a JSON object.")
    try:
        quotas.check_image_record(owner_of(request.user))
    except quotas.QuotaExceeded as error:
        raise QuotaExceededError(error, glance=True) from None
    image = Image(
        owner=owner_of(request.user),
        status=ImageStatus.QUEUED,
        visibility=Visibility.SHARED,
        container_format=None,
        os_hash_algo=None,
    )
    properties, tags = {}, []
    for name, value in body.items():
        if name == "id":
            try:
                image.id = uuid.UUID(str(value))
            except ValueError:
                raise _bad_request(f"'id' must be a UUID, not {value!r}.") from None
            if Image.objects.filter(pk=image.id).exists():
                raise Conflict(f"An image with id {image.id} exists already.")
            continue
        _check_writable(name, None)
        if name == "tags":
            tags = _check_value(name, value)
        elif name in glance.WRITABLE:
            setattr(image, name, _check_value(name, value))
        else:
            properties[name] = value
    image.properties = _with_properties(properties)
    _save(request.user, image, set(), tags)
    return image


def apply_patch(user, image: Image, operations) -> None:
    """Glance's JSON-patch (op add, replace or remove on one top-level attribute or property)."""
    if not isinstance(operations, list):
        raise _bad_request('Send a JSON list of operations, e.g. [{"op": "replace", "path": "/name", ...}].')
    properties, tags, changed = dict(image.properties), None, set()
    for operation in operations:
        if not isinstance(operation, dict) or operation.get("op") not in ("add", "replace", "remove"):
            raise _bad_request("Each operation is an object with 'op' add, replace or remove, and a 'path'.")
        op, path = operation["op"], operation.get("path")
        if not isinstance(path, str) or not path.startswith("/") or path.count("/") != 1 or len(path) < 2:
            raise _bad_request(f"Invalid path {path!r}: paths name one attribute, e.g. '/name'.")
        if op != "remove" and "value" not in operation:
            raise _bad_request(f"The {op} operation on {path} needs a 'value'.")
        name = path[1:].replace("~1", "/").replace("~0", "~")
        _check_writable(name, image)
        if name in glance.WRITABLE:
            if op == "remove":
                raise Forbidden(f"Attribute '{name}' cannot be removed.")
            value = _check_value(name, operation["value"])
            if name == "tags":
                tags = value
            else:
                setattr(image, name, value)
                changed.add(name)
        elif op == "add":
            properties[name] = operation["value"]
        elif name not in properties:
            raise Conflict(f"Property '{name}' does not exist.")
        elif op == "remove":
            del properties[name]
        else:
            properties[name] = operation["value"]
    if properties != image.properties:
        image.properties = _with_properties(properties)
        changed.add("properties")
    _save(user, image, changed, tags)


def _owned(image: Image, request) -> Image:
    """Only the owner (or an admin) changes an image; others see a public one but get 403."""
    if not allowed(request.user, "all_projects") and image.owner != owner_of(request.user):
        raise Forbidden(f"You may not change image {image.pk}: it belongs to another project.")
    return image


# -- imports -------------------------------------------------------------------------


def import_methods() -> dict:
    """Glance's import methods the installed action types carry out: name -> (type, ImportMethod)."""
    return {
        name: (action_type, make_input)
        for action_type in action_types().values()
        for name, make_input in action_type.import_methods.items()
    }


def _import_input(request, image: Image, body: dict) -> tuple:
    """The action type and validated input that carry out the import `body` asks for (400 when
    the method, the stores or the input are refused)."""
    methods = import_methods()
    name = (body.get("method") or {}).get("name")
    if not isinstance(name, str) or name not in methods:
        raise _bad_request(f"Unknown import method {name!r}; this service offers: {', '.join(sorted(methods))}.")
    action_type, method = methods[name]
    wanted = import_request(request, image, method, body)
    context = {"request": request, "glance_import": True}  # only this layer imports into a record
    serializer = action_type.input_serializer(data=method.make_input(wanted), context=context)
    if not serializer.is_valid():
        raise exceptions.ValidationError(flatten_errors(serializer.errors))
    return action_type, jsonable(serializer.validated_data), wanted.stores


def start_import(request, image: Image, body: dict) -> ImageAction:
    """Create the action that carries out the import `body` asks for into `image`."""
    action_type, input_data, stores = _import_input(request, image, body)
    with transaction.atomic():
        import_started(image.pk, stores)
        return runner.create_action(action_type, owner=image.owner, input_data=input_data)


def _move(image: Image, source, target) -> bool:
    """Change the image's status from one of `source` to `target`, if no one else did first."""
    sources = [source] if isinstance(source, str) else list(source)
    return bool(Image.objects.filter(pk=image.pk, status__in=sources).update(status=target))


def _pending_reader(image: Image, *, importing_only: bool = False) -> ImageAction | None:
    """The latest pending action reading this image (`importing_only`: of a type that carries out
    Glance imports, e.g. an import filling it or a copy-image)."""
    actions = ImageAction.objects.pending().filter(image_links__image_id=image.pk, image_links__role=ImageRole.READ)
    if importing_only:
        actions = actions.filter(action_type__in={action_type.name for action_type, _ in import_methods().values()})
    return actions.order_by("-created_at").first()


def import_request(request, image: Image, method: ImportMethod, body: dict) -> ImportRequest:
    """The request's import with its target stores, as Glance picks them: `all_stores`, or
    `stores`, or the X-Image-Meta-Store header, or the default store; copy-image leaves out the
    stores that hold the image already."""
    header = request.headers.get("X-Image-Meta-Store")
    must_succeed = body.get("all_stores_must_succeed", True)
    if not isinstance(must_succeed, bool):
        raise _bad_request("'all_stores_must_succeed' is true or false.")
    known = list(settings.IMAGE_STORES)
    holding = image.stores
    if body.get("all_stores"):
        if "stores" in body or header:
            raise _bad_request("'all_stores' cannot be used with 'stores' or the X-Image-Meta-Store header.")
        stores = [name for name in known if not (method.copies_active_image and name in holding)]
    elif "stores" in body:
        if header:
            raise _bad_request("Send the stores in 'stores' or in the X-Image-Meta-Store header, not both.")
        stores = body["stores"]
        if not isinstance(stores, list) or not stores or not all(isinstance(name, str) for name in stores):
            raise _bad_request("'stores' is a list of store names.")
    else:
        stores = [header or settings.DEFAULT_IMAGE_STORE]
    try:
        stores = validate_store_names(stores)
    except exceptions.ValidationError as error:
        raise _bad_request(str(error.detail[0])) from None
    for name in stores:
        if method.copies_active_image and name in holding:
            raise _bad_request(f"Image {image.pk} is already present in store {name!r}.")
    fields = {"id": str(image.pk), "name": image.name, "disk_format": image.disk_format}
    return ImportRequest(image=fields, method=body["method"], stores=stores, all_stores_must_succeed=must_succeed)


def _remove_location(image: Image, location: ImageLocation, refusal: str) -> None:
    """Remove a copy of the image's bytes: its location, and its object unless another image's
    location still holds it. `refusal` starts the 503's message when the store cannot remove it
    (the location then stays)."""
    with transaction.atomic():
        location.delete()
        if in_use(location.store, location.key):
            return
        try:
            get_store(location.store).delete(location.key)
        except StoreError as error:
            raise StoreUnavailable(
                f"{refusal.format(image=image.pk)} because its bytes could not be removed from store "
                f"{location.store!r}: {error}. Try again later; if it keeps failing, tell an operator."
            ) from error


def _require_formats(image: Image, error=exceptions.ValidationError) -> None:
    """Glance's rule: an image's formats are set before it takes data (400) or is imported (409)."""
    if not image.disk_format or not image.container_format:
        message = f"Image {image.pk} needs a disk_format and a container_format before it takes data."
        raise error({"non_field_errors": [message]} if error is exceptions.ValidationError else message)


def _require_octet_stream(request) -> None:
    if request.content_type.split(";")[0].strip() != "application/octet-stream":
        raise UnsupportedMediaType(request.content_type, detail="Send image data as application/octet-stream.")


def _wait_for_end(action: ImageAction, timeout: float) -> ImageAction:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        action.refresh_from_db(fields=["status", "message", "progress_step"])
        if action.status in TERMINAL_STATUSES:
            break
        time.sleep(0.05)
    return action


# An action's status as a Glance task's: the running steps' statuses are all "processing".
TASK_STATUSES = {"waiting": "pending", "success": "success", "failure": "failure", "cancelled": "failure"}


def task_body(action: ImageAction, image_id) -> dict:
    """An image action in the shape of Glance's tasks (GET /v2/images/{id}/tasks)."""
    return {
        "id": str(action.pk),
        "type": "api_image_import",
        "status": TASK_STATUSES.get(action.status, "processing"),
        "owner": action.owner,
        "message": action.message,
        "image_id": str(image_id),
        "input": action.input,
        "result": action.result or None,
        "created_at": action.created_at.strftime(glance.GLANCE_TIME),
        "updated_at": action.updated_at.strftime(glance.GLANCE_TIME),
        "expires_at": action.expires_at.strftime(glance.GLANCE_TIME) if action.expires_at else None,
        "image_action": f"/v2/image-actions/{action.pk}",
    }


# -- the viewset ---------------------------------------------------------------------


def _nullable(field_class, **kwargs):
    return field_class(allow_null=True, **kwargs)


# An image in Glance's shape, typed for the OpenAPI schema and the clients generated from it
# (free-form properties come beside these fields, as strings). Built with type(), since Glance
# names fields `self`, `file` and `schema`.
GlanceImageSerializer = type(
    "GlanceImageSerializer",
    (serializers.Serializer,),
    {
        "__doc__": "An image as Glance shows it; its free-form properties (strings) stand beside these fields.",
        "__module__": __name__,
        "id": serializers.UUIDField(),
        "name": _nullable(serializers.CharField),
        "status": serializers.ChoiceField(choices=ImageStatus.choices),
        "visibility": serializers.ChoiceField(choices=Visibility.choices),
        "protected": serializers.BooleanField(),
        "os_hidden": serializers.BooleanField(),
        "checksum": _nullable(serializers.CharField, help_text="md5 of the bytes."),
        "os_hash_algo": _nullable(serializers.CharField),
        "os_hash_value": _nullable(serializers.CharField),
        "owner": _nullable(serializers.CharField),
        "size": _nullable(serializers.IntegerField),
        "virtual_size": _nullable(serializers.IntegerField),
        "min_ram": serializers.IntegerField(help_text="MiB"),
        "min_disk": serializers.IntegerField(help_text="GiB"),
        "container_format": _nullable(serializers.CharField),
        "disk_format": _nullable(serializers.CharField),
        "created_at": serializers.CharField(),
        "updated_at": serializers.CharField(),
        "tags": serializers.ListField(child=serializers.CharField()),
        "self": serializers.CharField(),
        "file": serializers.CharField(),
        "schema": serializers.CharField(),
        "stores": serializers.CharField(
            required=False, help_text="The stores holding its bytes (comma-separated), once it has them."
        ),
    },
)


class GlanceImageListSerializer(serializers.Serializer):
    images = GlanceImageSerializer(many=True)
    first = serializers.CharField()
    next = serializers.CharField(required=False, help_text="The next page; absent on the last one.")
    schema = serializers.CharField()


GLANCE_IMAGE = OpenApiResponse(GlanceImageSerializer, description="An image in Glance's shape.")


class GlanceErrorDetailSerializer(serializers.Serializer):
    code = serializers.IntegerField(help_text="The HTTP status.")
    title = serializers.CharField()
    message = serializers.CharField(help_text="What went wrong, in words.")
    errors = serializers.DictField(child=serializers.ListField(child=serializers.CharField()))


class GlanceErrorSerializer(serializers.Serializer):
    """Glance's error shape, which OpenStack's clients parse."""

    error = GlanceErrorDetailSerializer()


def glance_error_responses(*codes: int) -> dict:
    """Every error an image operation can answer: the request's own (400, 413, 415), credentials
    (401), ownership and protection (403), a missing or foreign image (404), its state (409)."""
    return {code: OpenApiResponse(GlanceErrorSerializer) for code in (401, 403, 404, *codes)}


# Glance's JSON-patch: a list of operations on one top-level attribute or property each.
JSON_PATCH = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {
            "op": {"type": "string", "enum": ["add", "replace", "remove"]},
            "path": {"type": "string", "description": "/NAME: an attribute or a property; /tags/-: a new tag"},
            "value": {
                "type": ["string", "integer", "boolean", "array", "null"],
                "items": {"type": "string"},
                "description": "The new value (add, replace): text, a number (min_disk), a flag (protected), tags.",
            },
        },
        "required": ["op", "path"],
    },
}


class GlanceListSchema(AutoSchema):
    """Glance's list is one object ({"images": [...], ...}), not a bare array of its items."""

    def _is_list_view(self, serializer=None) -> bool:
        return False


class ImageViewSet(viewsets.ViewSet):
    """Glance's images: your project's, plus public and community ones for reading."""

    glance_errors = True
    schema = GlanceListSchema()
    policy_rules = {
        "file:PUT": "upload",
        "stage": "upload",
        "import_image": "create",
        "tags": "change",
        "deactivate": "change",
        "reactivate": "change",
    }
    parser_classes = [BoundedJSONParser, JsonPatchParser]
    # Any text reaches the view, so a malformed id gets the 404 of a missing one.
    lookup_value_regex = "[^/]+"

    def get_object(self, pk) -> Image:
        return find_image(self.request, pk)

    @extend_schema(
        summary="List images (Glance): filters, sort, marker and limit",
        operation_id="images_list",
        responses={200: GlanceImageListSerializer, **glance_error_responses(400)},
    )
    def list(self, request):
        return Response(list_page(request))

    @extend_schema(
        summary="Create an image record (Glance)",
        request={"application/json": OpenApiTypes.OBJECT},
        responses={201: GLANCE_IMAGE, **glance_error_responses(400, 409, 413, 415)},
    )
    def create(self, request):
        image = create_record(request)
        headers = {
            "Location": request.build_absolute_uri(f"/v2/images/{image.pk}"),
            "OpenStack-image-import-methods": ",".join(sorted(import_methods())),
            "OpenStack-image-store-ids": ",".join(settings.IMAGE_STORES),
        }
        return Response(render(image), status=status.HTTP_201_CREATED, headers=headers)

    @extend_schema(summary="Show an image (Glance)", responses={200: GLANCE_IMAGE, **glance_error_responses()})
    def retrieve(self, request, pk=None):
        return Response(render(self.get_object(pk)))

    @extend_schema(
        summary="Change an image with JSON-patch (Glance)",
        request={glance.PATCH_MEDIA_TYPE: JSON_PATCH},
        responses={200: GLANCE_IMAGE, **glance_error_responses(400, 409, 413, 415)},
    )
    def partial_update(self, request, pk=None):
        if request.content_type.split(";")[0].strip() != glance.PATCH_MEDIA_TYPE:
            raise UnsupportedMediaType(request.content_type, detail=f"Send the changes as {glance.PATCH_MEDIA_TYPE}.")
        image = _owned(self.get_object(pk), request)
        apply_patch(request.user, image, request.data)
        return Response(render(Image.objects.get(pk=image.pk)))

    @extend_schema(
        summary="Delete an image and its bytes (Glance)",
        responses={204: None, **glance_error_responses(409), 503: OpenApiResponse(GlanceErrorSerializer)},
    )
    def destroy(self, request, pk=None):
        image = _owned(self.get_object(pk), request)
        if image.protected:
            raise Forbidden(f"Image {image.pk} is protected and cannot be deleted.")
        reader = _pending_reader(image)
        if reader is not None:
            raise Conflict(
                f"Image {image.pk} is being read by {reader.action_type} action {reader.pk} "
                f"(status {reader.status!r}); cancel it or wait for it to end, then delete the image."
            )
        for location in image.locations.all():
            _remove_location(image, location, "Image {image} was not deleted")
        image.delete()
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        summary="Add or remove a tag (Glance)", request=None, responses={204: None, **glance_error_responses(400)}
    )
    @route(detail=True, methods=["put", "delete"], url_path=r"tags/(?P<tag>[^/]+)")
    def tags(self, request, pk=None, tag=None):
        image = _owned(self.get_object(pk), request)
        if request.method == "DELETE":
            if not image.tag_set.filter(name=tag).delete()[0]:
                raise exceptions.NotFound(f"Image {image.pk} has no tag {tag!r}.")
        else:
            present = [*image.tag_set.values_list("name", flat=True), tag]
            _save(request.user, image, set(), _check_value("tags", present))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        summary="Deactivate an image: its bytes stay, downloads stop (Glance)",
        request=None,
        responses={204: None, **glance_error_responses()},
    )
    @route(detail=True, methods=["post"], url_path="actions/deactivate")
    def deactivate(self, request, pk=None):
        return self._set_active(pk, ImageStatus.ACTIVE, ImageStatus.DEACTIVATED)

    @extend_schema(
        summary="Reactivate a deactivated image (Glance)",
        request=None,
        responses={204: None, **glance_error_responses()},
    )
    @route(detail=True, methods=["post"], url_path="actions/reactivate")
    def reactivate(self, request, pk=None):
        return self._set_active(pk, ImageStatus.DEACTIVATED, ImageStatus.ACTIVE)

    def _set_active(self, pk, source, target):
        image = _owned(self.get_object(pk), self.request)
        if image.status != target and not _move(image, source, target):
            raise Forbidden(f"Not allowed to change image {image.pk} to {target} while it is {image.status}.")
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        methods=["GET"],
        summary="Download an image's bytes (Glance)",
        parameters=download_parameters("image"),
        responses={
            **download_responses("image"),
            204: OpenApiResponse(description="The image has no data yet."),
            416: OpenApiResponse(ErrorSerializer, description="The range starts past the end of the image."),
            503: OpenApiResponse(GlanceErrorSerializer, description="The image store could not be used."),
            **glance_error_responses(),
        },
    )
    @extend_schema(
        methods=["PUT"],
        summary="Upload an image's bytes; verified like an import (Glance)",
        request={"application/octet-stream": OpenApiTypes.BINARY},
        responses={204: None, **glance_error_responses(400, 409, 415)},
    )
    @route(
        detail=True,
        methods=["get", "put"],
        content_negotiation_class=IgnoreAcceptHeader,
        parser_classes=[ImageDataParser],
    )
    def file(self, request, pk=None):
        image = self.get_object(pk)
        if request.method == "PUT":
            return self._upload(_owned(image, request))
        if image.status == ImageStatus.DEACTIVATED and not allowed(request.user, "operator_detail"):
            raise Forbidden("The requested image has been deactivated. Image data download is prohibited.")
        location = image.location
        if location is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        stored = StoredFile(
            store=location.store,
            key=location.key,
            size=image.size,
            filename=safe_filename(image.name, image.disk_format or "img", str(image.pk)),
            md5=image.checksum,
        )
        return stored_file_response(request, stored, what=f"image {image.pk}")

    def _upload(self, image: Image):
        """PUT .../file: the bytes go through an import action at once; answers when it ended."""
        _require_octet_stream(self.request)
        _require_formats(image)
        if not _move(image, ImageStatus.QUEUED, ImageStatus.SAVING):
            raise Conflict(f"Image {image.pk} has status {image.status!r}; only a queued image takes data.")
        action = self._stage_into(image, {"method": {"name": GLANCE_DIRECT}})
        action = _wait_for_end(action, settings.IMAGE_UPLOAD_WAIT)
        if action.status == ActionStatus.FAILURE:
            code = (
                status.HTTP_415_UNSUPPORTED_MEDIA_TYPE
                if action.progress_step == "verify"
                else status.HTTP_400_BAD_REQUEST
            )
            return Response(glance.error_body(code, f"Image failed to upload: {action.message}"), status=code)
        if action.status == ActionStatus.CANCELLED:
            raise Conflict(f"The upload into image {image.pk} was cancelled; the image is queued again.")
        # Success, or still going after IMAGE_UPLOAD_WAIT: the image's status tells the rest.
        return Response(status=status.HTTP_204_NO_CONTENT)

    def _stage_into(self, image: Image, body: dict) -> ImageAction:
        try:
            action = start_import(self.request, image, body)
        except Exception:
            _move(image, AWAITING_BYTES, ImageStatus.QUEUED)
            raise
        if not runner.receive_data(action, self.request._request):
            runner.request_cancel(action)  # its clean-up queues the image again
            raise Conflict(f"Image {image.pk} does not take data now.")
        action.refresh_from_db()
        if action.status == ActionStatus.FAILURE:
            raise _bad_request(f"The data could not be staged: {action.message}")
        return action

    @extend_schema(
        summary="Stage an image's bytes for a glance-direct import (Glance)",
        request={"application/octet-stream": OpenApiTypes.BINARY},
        responses={204: None, **glance_error_responses(400, 409, 415)},
    )
    @route(detail=True, methods=["put"], content_negotiation_class=IgnoreAcceptHeader, parser_classes=[ImageDataParser])
    def stage(self, request, pk=None):
        image = _owned(self.get_object(pk), request)
        _require_octet_stream(request)
        _require_formats(image)
        if not _move(image, ImageStatus.QUEUED, ImageStatus.UPLOADING):
            raise Conflict(f"Image {image.pk} has status {image.status!r}; only a queued image can be staged.")
        self._stage_into(image, {"method": {"name": GLANCE_DIRECT, STAGE: True}})
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        summary="Import an image's bytes (Glance interoperable import)",
        request={"application/json": OpenApiTypes.OBJECT},
        responses={202: None, **glance_error_responses(400, 409, 413, 415)},
    )
    @route(detail=True, methods=["post"], url_path="import")
    def import_image(self, request, pk=None):
        image = _owned(self.get_object(pk), request)
        body = request.data if isinstance(request.data, dict) else {}
        if not isinstance(body.get("method"), dict):
            raise _bad_request('Send {"method": {"name": "web-download", "uri": "..."}} or another method.')
        name = body["method"].get("name")
        if name == GLANCE_DIRECT:
            self._import_staged(image, body)
        elif isinstance(name, str) and name in (methods := import_methods()) and methods[name][1].copies_active_image:
            self._copy(image, body)
        else:
            if image.status != ImageStatus.QUEUED:
                raise Conflict(f"Image {image.pk} has status {image.status!r}; only a queued image can be imported.")
            _require_formats(image, Conflict)
            if not _move(image, ImageStatus.QUEUED, ImageStatus.IMPORTING):
                raise Conflict(f"Image {image.pk} is being imported already.")
            try:
                start_import(request, image, body)
            except Exception:
                _move(image, ImageStatus.IMPORTING, ImageStatus.QUEUED)
                raise
        return Response(status=status.HTTP_202_ACCEPTED)

    def _import_staged(self, image: Image, body: dict) -> None:
        """glance-direct: the staged action goes on, to the stores this request names."""
        action = _pending_reader(image)
        if image.status != ImageStatus.UPLOADING or action is None:
            raise Conflict(f"Image {image.pk} has status {image.status!r}; stage its data first.")
        body = {**body, "method": {**body["method"], STAGE: True}}
        _, input_data, stores = _import_input(self.request, image, body)
        import_started(image.pk, stores)
        if not runner.release_held(action, input_data=input_data):
            raise Conflict(f"Image {image.pk} has status {image.status!r}; stage its data first.")
        _move(image, ImageStatus.UPLOADING, ImageStatus.IMPORTING)

    def _copy(self, image: Image, body: dict) -> None:
        """copy-image: the active image gets verified copies in more stores; it stays active."""
        if image.status != ImageStatus.ACTIVE:
            raise Conflict(f"Only an active image can be copied; image {image.pk} is {image.status!r}.")
        busy = _pending_reader(image, importing_only=True)
        if busy is not None:
            raise Conflict(
                f"Image {image.pk} is being imported or copied by action {busy.pk}; wait for it to end or "
                "cancel it (/v2/image-actions)."
            )
        if body.get("all_stores") and not [name for name in settings.IMAGE_STORES if name not in image.stores]:
            return  # as in Glance: every store holds it already, so there is nothing to do
        start_import(self.request, image, body)

    @extend_schema(
        summary="The image actions that imported or read an image, as Glance tasks",
        responses={
            200: OpenApiResponse(OpenApiTypes.OBJECT, description='{"tasks": [...]}'),
            **glance_error_responses(),
        },
    )
    @route(detail=True, methods=["get"])
    def tasks(self, request, pk=None):
        # The actions' inputs may carry URLs with credentials: only the owner sees them.
        image = _owned(self.get_object(pk), request)
        actions = (
            ImageAction.objects.filter(owner=image.owner, image_links__image_id=image.pk)
            .distinct()
            .order_by("-created_at")
        )
        return Response({"tasks": [task_body(action, image.pk) for action in actions]})


class ImageLocationView(APIView):
    """DELETE /v2/stores/{store}/{image_id}: Glance's "delete from store": the image loses its copy
    in one store and keeps the others."""

    glance_errors = True

    @extend_schema(
        summary="Remove an image's copy from one store (Glance)",
        responses={204: None, **glance_error_responses(409), 503: OpenApiResponse(GlanceErrorSerializer)},
    )
    def delete(self, request, store, image_id):
        if store not in settings.IMAGE_STORES:
            raise Conflict(f"There is no store {store!r}; the stores are: {', '.join(settings.IMAGE_STORES)}.")
        image = _owned(find_image(request, image_id), request)
        if image.status != ImageStatus.ACTIVE:
            raise Conflict(f"Image {image.pk} is {image.status!r}; only an active image's copies can be removed.")
        with transaction.atomic():
            locations = list(ImageLocation.objects.select_for_update().filter(image=image))
            location = next((location for location in locations if location.store == store), None)
            if location is None:
                raise exceptions.NotFound(f"Image {image.pk} is not stored in store {store!r}.")
            if len(locations) == 1:
                raise Forbidden(
                    "Cannot delete image data from the only store containing it. Consider deleting the image instead."
                )
            reader = _pending_reader(image)
            if reader is not None:
                raise Conflict(
                    f"Image {image.pk} is being read by {reader.action_type} action {reader.pk}; "
                    "wait for it to end, then remove the copy."
                )
            _remove_location(image, location, "The copy of image {image} was not removed")
        return Response(status=status.HTTP_204_NO_CONTENT)
