"""The wire format of the Glance Image API v2 that OpenStack's clients rely on: an image's JSON,
the schemas they validate against, the version documents they discover, JSON-patch bodies,
and Glance's error shape."""

from __future__ import annotations

from http import HTTPStatus

from django.http import JsonResponse
from rest_framework import status

from ..choices import ImageStatus, Visibility
from ..models import Image

GLANCE_TIME = "%Y-%m-%dT%H:%M:%SZ"
# The newest minor version whose features clients look for here (stores and import: 2.x
# without minor gates; 2.12 for an image's tasks).
CURRENT_VERSION = "v2.16"
SUPPORTED_VERSIONS = ("v2.15", "v2.12", "v2.9", "v2.7", "v2.6", "v2.5", "v2.4", "v2.3", "v2.2", "v2.1", "v2.0")
DISK_FORMATS = ["ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop"]
CONTAINER_FORMATS = ["ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed"]
PATCH_MEDIA_TYPE = "application/openstack-images-v2.1-json-patch"

# Properties clients may set, beside free-form string properties.
WRITABLE = {
    "name",
    "visibility",
    "protected",
    "os_hidden",
    "container_format",
    "disk_format",
    "min_disk",
    "min_ram",
    "tags",
}
# What the service decides; a client that tries to set them gets 403, as from Glance.
READ_ONLY = {
    "id",
    "status",
    "size",
    "virtual_size",
    "checksum",
    "os_hash_algo",
    "os_hash_value",
    "owner",
    "created_at",
    "updated_at",
    "self",
    "file",
    "schema",
    "stores",
    "locations",
    "direct_url",
}
RESERVED_PREFIX = "os_glance"


def image_body(image: Image, tags: list[str]) -> dict:
    """An image as Glance shows it: base fields, then its free-form properties at the top level."""
    has_bytes = bool(image.os_hash_value)
    body = {
        "id": str(image.pk),
        "name": image.name or None,
        "status": image.status,
        "visibility": image.visibility,
        "protected": image.protected,
        "os_hidden": image.os_hidden,
        "checksum": image.checksum or None,
        "os_hash_algo": image.os_hash_algo if has_bytes else None,
        "os_hash_value": image.os_hash_value or None,
        "owner": image.owner,
        "size": image.size,
        "virtual_size": image.virtual_size,
        "min_ram": image.min_ram,
        "min_disk": image.min_disk,
        "container_format": image.container_format or None,
        "disk_format": image.disk_format or None,
        "created_at": image.created_at.strftime(GLANCE_TIME),
        "updated_at": image.updated_at.strftime(GLANCE_TIME),
        "tags": tags,
        "self": f"/v2/images/{image.pk}",
        "file": f"/v2/images/{image.pk}/file",
        "schema": "/v2/schemas/image",
    }
    stores = image.stores
    if stores:
        body["stores"] = ",".join(stores)  # Glance's form: a comma-separated string
    return {**image.properties, **body}


def image_schema() -> dict:
    """GET /v2/schemas/image: glanceclient validates bodies and builds its options from it, so
    `file` and `stores` are in it and nothing is `required`."""
    nullable_string = {"type": ["null", "string"]}
    read_only = {"readOnly": True}
    return {
        "name": "image",
        "additionalProperties": {"type": "string"},
        "links": [
            {"rel": "self", "href": "{self}"},
            {"rel": "enclosure", "href": "{file}"},
            {"rel": "describedby", "href": "{schema}"},
        ],
        "properties": {
            "id": {
                "type": "string",
                "description": "An identifier for the image",
                "pattern": "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$",
            },
            "name": {**nullable_string, "maxLength": 255, "description": "Descriptive name for the image"},
            "status": {"type": "string", **read_only, "enum": [s.value for s in ImageStatus]},
            "visibility": {"type": "string", "enum": [v.value for v in Visibility]},
            "protected": {"type": "boolean", "description": "If true, the image will not be deletable."},
            "os_hidden": {"type": "boolean", "description": "If true, the image is left out of default lists."},
            "checksum": {**nullable_string, **read_only, "maxLength": 32},
            "os_hash_algo": {**nullable_string, **read_only, "maxLength": 64},
            "os_hash_value": {**nullable_string, **read_only, "maxLength": 128},
            "owner": {**nullable_string, "maxLength": 255},
            "size": {"type": ["null", "integer"], **read_only},
            "virtual_size": {"type": ["null", "integer"], **read_only},
            "container_format": {"type": ["null", "string"], "enum": [None, *CONTAINER_FORMATS]},
            "disk_format": {"type": ["null", "string"], "enum": [None, *DISK_FORMATS]},
            "created_at": {"type": "string", **read_only},
            "updated_at": {"type": "string", **read_only},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 255}},
            "direct_url": {"type": "string", **read_only},
            "min_ram": {"type": "integer", "description": "Amount of ram (in MB) required to boot image."},
            "min_disk": {"type": "integer", "description": "Amount of disk space (in GB) required to boot image."},
            "self": {"type": "string", **read_only},
            "file": {"type": "string", **read_only},
            "stores": {"type": "string", **read_only, "description": "Store in which image data resides."},
            "schema": {"type": "string", **read_only},
            "locations": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["url", "metadata"],
                    "properties": {"url": {"type": "string", "maxLength": 255}, "metadata": {"type": "object"}},
                },
            },
        },
    }


def images_schema() -> dict:
    return {
        "name": "images",
        "properties": {
            "images": {"type": "array", "items": image_schema()},
            "first": {"type": "string"},
            "next": {"type": "string"},
            "schema": {"type": "string"},
        },
        "links": [
            {"rel": "first", "href": "{first}"},
            {"rel": "next", "href": "{next}"},
            {"rel": "describedby", "href": "{schema}"},
        ],
    }


def versions_document(request) -> dict:
    href = request.build_absolute_uri("/v2/")
    entries = [(CURRENT_VERSION, "CURRENT"), *((version, "SUPPORTED") for version in SUPPORTED_VERSIONS)]
    return {
        "versions": [
            {"id": version, "status": state, "links": [{"rel": "self", "href": href}]} for version, state in entries
        ]
    }


def versions_response(request, code: int = status.HTTP_200_OK) -> JsonResponse:
    return JsonResponse(versions_document(request), status=code)


def error_body(status_code: int, message: str, errors: dict | None = None) -> dict:
    """Glance's error shape; glanceclient reads `message` out of every top-level value."""
    title = HTTPStatus(status_code).phrase if status_code in HTTPStatus._value2member_map_ else "Error"
    return {"error": {"code": status_code, "title": title, "message": message, "errors": errors or {}}}
