"""Limits on what users may attach to an image (tags, free-form properties) or an action (labels)
and the store names they may give, checked in one place.

PATCH /v2/images/{id} validates through these functions; action types reach them (and the limits,
for inputs that name each offending item) through imageactions.pipeline.
"""

import re

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import ValidationError

# Below Glance's defaults (128 of each): every property and tag is copied into each action and
# clone that touches the image.
MAX_IMAGE_PROPERTIES = 64
MAX_PROPERTY_KEY_LENGTH = 255
MAX_PROPERTY_VALUE_LENGTH = 4096
MAX_IMAGE_TAGS = 50
MAX_TAG_LENGTH = 255  # ImageTag.name's column
MAX_IMAGE_NAME_LENGTH = 255  # Image.name's column
MAX_STORED_INT = 2**31 - 1  # the largest value of an integer column (Image.min_disk, min_ram)
# Labels on actions: few and short, so that they stay usable as filters (like GCE's labels).
MAX_LABELS = 32
MAX_LABEL_VALUE_LENGTH = 255
# No "__" in a key: it would read as a path where a key is looked up.
LABEL_KEY = re.compile(r"(?!.*__)[a-z][a-z0-9_.\-/]{0,62}")
# Label values: no control characters (they would forge lines wherever labels are printed).
LABEL_VALUE = re.compile(r"[^\x00-\x1f\x7f-\x9f]*")

# The codes of a request that has the shape the schema describes but that the service cannot
# carry out as asked, because of what it names: a 422 with the code, not a 400 (which says the
# schema was not followed). Raise `ValidationError(message, code=...)` with one of these (or an
# ErrorCode, e.g. url_not_allowed, when a dry run finds what the action would fail on).
NOT_FOUND = "not_found"  # an image, store or region that does not exist in the caller's project
CONFLICT = "conflict"  # what it names is not in a state that allows it (not active, already there)
FORBIDDEN = "forbidden"  # the caller's roles do not allow what the input asks (e.g. a public image)


def validate_store_names(names) -> list[str]:
    """`names` without repeats, each a configured image store."""
    known = list(settings.IMAGE_STORES)
    for name in names:
        if name not in known:
            raise ValidationError(
                f"There is no image store named {name!r}; the stores are: {', '.join(known)} (GET /v2/stores).",
                code=NOT_FOUND,
            )
    return list(dict.fromkeys(names))


def validate_image_properties(value) -> dict[str, str]:
    """`value` if it is an object of at most MAX_IMAGE_PROPERTIES string properties within the lengths."""
    if not isinstance(value, dict):
        raise ValidationError(f"Expected an object of string properties, got {type(value).__name__}.")
    if len(value) > MAX_IMAGE_PROPERTIES:
        raise ValidationError(f"{len(value)} properties given; an image may have at most {MAX_IMAGE_PROPERTIES}.")
    for key, item in value.items():
        if not key or len(key) > MAX_PROPERTY_KEY_LENGTH:
            raise ValidationError(
                f"Property name {key[:40]!r} must have 1 to {MAX_PROPERTY_KEY_LENGTH} characters, it has {len(key)}."
            )
        if not isinstance(item, str):
            raise ValidationError(
                f"Property {key!r} must be a string, got {type(item).__name__}; send numbers and flags as text."
            )
        if len(item) > MAX_PROPERTY_VALUE_LENGTH:
            raise ValidationError(
                f"Property {key!r} has a value of {len(item)} characters; at most {MAX_PROPERTY_VALUE_LENGTH} are allowed."
            )
    return value


def validate_image_tags(value) -> list[str]:
    """`value` as a list of distinct tags in their first order, if each is a short non-empty string."""
    if not isinstance(value, list):
        raise ValidationError(f"Expected a list of tags, got {type(value).__name__}.")
    tags = {}  # a dict keeps the first order and checks repeats in constant time
    for tag in value:
        if not isinstance(tag, str) or not tag.strip():
            raise ValidationError(f"Each tag must be a non-empty string, got {tag!r}.")
        if len(tag) > MAX_TAG_LENGTH:
            raise ValidationError(
                f"Tag {tag[:40]!r}... has {len(tag)} characters; at most {MAX_TAG_LENGTH} are allowed."
            )
        tags[tag] = None
    if len(tags) > MAX_IMAGE_TAGS:
        raise ValidationError(f"{len(tags)} tags given; an image may have at most {MAX_IMAGE_TAGS}.")
    return list(tags)


@extend_schema_field(
    {
        "type": "object",
        "additionalProperties": {"type": "string", "maxLength": MAX_PROPERTY_VALUE_LENGTH},
        "propertyNames": {"minLength": 1, "maxLength": MAX_PROPERTY_KEY_LENGTH},
        "maxProperties": MAX_IMAGE_PROPERTIES,
    }
)
class ImagePropertiesField(serializers.JSONField):
    """Free-form string properties within the limits above; 1 is refused rather than turned into "1"."""

    def to_internal_value(self, data):
        return validate_image_properties(super().to_internal_value(data))


@extend_schema_field(
    {"type": "array", "items": {"type": "string", "maxLength": MAX_TAG_LENGTH}, "maxItems": MAX_IMAGE_TAGS}
)
class ImageTagsField(serializers.JSONField):
    """A list of tags within the limits above; repeated tags are kept once."""

    def to_internal_value(self, data):
        return validate_image_tags(super().to_internal_value(data))


def validate_labels(value) -> dict[str, str]:
    """`value` if it is an object of at most MAX_LABELS labels: each key a lower-case letter then up
    to 62 of lower-case letters, digits and `_.-/`; each value a string of printable characters."""
    if not isinstance(value, dict):
        raise ValidationError(f'Expected an object of labels, e.g. {{"team": "ci"}}; got {type(value).__name__}.')
    if len(value) > MAX_LABELS:
        raise ValidationError(f"{len(value)} labels given; an action may have at most {MAX_LABELS}.")
    for key, item in value.items():
        if not LABEL_KEY.fullmatch(key):
            raise ValidationError(
                f"Label key {key[:70]!r}: a lower-case letter, then up to 62 lower-case letters, digits, "
                "'_' (not two in a row), '.', '-' or '/'."
            )
        if not isinstance(item, str):
            raise ValidationError(f"Label {key!r} must be a string, got {type(item).__name__}.")
        if len(item) > MAX_LABEL_VALUE_LENGTH or not LABEL_VALUE.fullmatch(item):
            raise ValidationError(
                f"Label {key!r}: a value of at most {MAX_LABEL_VALUE_LENGTH} characters, none of them a control "
                f"character (it has {len(item)})."
            )
    return value


def query_flag(request, name: str) -> bool:
    """A true/false query parameter (true, 1, yes, on / false, 0, no, off, or absent)."""
    value = request.query_params.get(name, "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value not in ("", "0", "false", "no", "off"):
        raise ValidationError({name: [f"Give true or false; got {value!r}."]})
    return False


def whole_number(text, *, max_digits: int = 18) -> int | None:
    """`text` as a non-negative whole number of ASCII digits, or None; at most `max_digits`
    digits, so that it fits a 64-bit column (str.isdigit() also takes '²', which int() refuses)."""
    if isinstance(text, str) and re.fullmatch(rf"[0-9]{{1,{max_digits}}}", text):
        return int(text)
    return None
