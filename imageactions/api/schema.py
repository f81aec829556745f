"""Hooks that shape the OpenAPI document drf-spectacular generates, so that it states every rule
the service enforces on its own routes (schema-driven clients and tests rely on it)."""

from django.conf import settings

from ..choices import ErrorCode
from ..filtersets import ORDERINGS
from ..pipeline import action_types
from ..validators import LABEL_KEY

# The Glance Image API keeps Glance's own shapes and codes.
GLANCE_PREFIXES = ("/v2/images", "/v2/schemas", "/v2/info/import", "/v2/info/stores")
# A label filter: KEY=VALUE or KEY, the key as labels have it.
# (Django refuses NUL in any query value.)
LABEL_FILTER_PATTERN = rf"^{LABEL_KEY.pattern.replace('.*__', '[^=]*__')}(=[^\x00]*)?$"
BODY_OPTIONAL = {"images_create"}
# The create operations and what their answer's id leads to, for clients that follow links.
ACTION_LINKS = {
    "retrieve": "GetAction",
    "partial_update": "UpdateLabels",
    "cancel_create": "CancelAction",
    "data_update": "UploadData",
    "file_retrieve": "DownloadFile",
    "deliveries_list": "ListDeliveries",
}


def document_paths_without_trailing_slash(endpoints):
    """The router answers with and without a trailing slash; the design's paths have none."""
    return [
        (path.rstrip("/") if len(path) > 1 else path, path_regex, method, callback)
        for path, path_regex, method, callback in endpoints
    ]


def state_every_rule(result, generator, request, public):
    """Postprocessing: query parameters with their real domains, request bodies that take no
    unknown field, and links from each create to what its answer's `id` leads to."""
    from .serializers import known_statuses

    repeatable = {
        "action_type": sorted(action_types()),
        "status": [*known_statuses(), "pending"],
        "error_code": list(ErrorCode.values),
    }
    for path, operations in result["paths"].items():
        for method, operation in operations.items():
            if "requestBody" in operation:
                # An empty body is refused, except by Glance's create (a record with nothing set).
                operation["requestBody"]["required"] = operation["operationId"] not in BODY_OPTIONAL
            if path.startswith(GLANCE_PREFIXES):
                continue
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "query":
                    _state_query_parameter(parameter, repeatable)
            _link_create_to_action(path, method, operation, result["paths"])
    for name, component in result["components"]["schemas"].items():
        if name.endswith("Request") and component.get("type") == "object":
            component.setdefault("additionalProperties", False)
    return result


def _state_query_parameter(parameter: dict, repeatable: dict) -> None:
    name, schema = parameter["name"], parameter["schema"]
    if name in repeatable:
        parameter["schema"] = {"type": "array", "items": {"type": "string", "enum": repeatable[name]}, "minItems": 1}
        parameter["style"], parameter["explode"] = "form", True
    elif name == "label":
        items = {"type": "string", "pattern": LABEL_FILTER_PATTERN}
        parameter["schema"] = {"type": "array", "items": items, "minItems": 1}
        parameter["style"], parameter["explode"] = "form", True
    elif name == "ordering":
        parameter["schema"] = {"type": "string", "enum": list(ORDERINGS)}
    elif name == "seen_status":
        parameter["schema"] = {"type": "string", "enum": repeatable["status"][:-1]}
    elif name == "wait":
        parameter["schema"] = {"type": "integer", "minimum": 0, "maximum": int(settings.MAX_WAIT)}
    elif schema.get("type") == "string" and "enum" not in schema and "format" not in schema:
        schema["minLength"] = 1  # an empty value is refused, not read as "no filter"


def _link_create_to_action(path: str, method: str, operation: dict, paths: dict) -> None:
    if method != "post" or "{" in path or "201" not in operation["responses"]:
        return
    prefix = operation["operationId"].removesuffix("_create")
    links = {}
    for suffix, link in ACTION_LINKS.items():
        target = f"{prefix}_{suffix}"
        if any(op.get("operationId") == target for ops in paths.values() for op in ops.values()):
            links[link] = {"operationId": target, "parameters": {"id": "$response.body#/id"}}
    if links:
        operation["responses"]["201"]["links"] = links
