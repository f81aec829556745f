"""The input of an `import` action: one source, the new image's properties, an optional checksum."""

import re

from django.conf import settings
from rest_framework import serializers

from imageactions.pipeline import (
    AWAITING_BYTES,
    FORBIDDEN,
    HEX_LENGTHS,
    MAX_IMAGE_NAME_LENGTH,
    MAX_IMAGE_PROPERTIES,
    MAX_IMAGE_TAGS,
    MAX_PROPERTY_KEY_LENGTH,
    MAX_PROPERTY_VALUE_LENGTH,
    MAX_STORED_INT,
    MAX_TAG_LENGTH,
    NOT_FOUND,
    ErrorCode,
    Image,
    UrlPolicy,
    UrlRefused,
    Visibility,
    allowed,
    needed_roles,
    refine_schema,
    validate_image_properties,
    validate_store_names,
    visible_to,
)

from .sources import parse_location

DISK_FORMATS = ["raw", "qcow2", "vmdk", "vpc", "vhd", "vhdx", "vdi", "iso"]
# ova/ovf wrap several files (a tar with a descriptor); importing them needs unpacking first.
CONTAINER_FORMATS = ["bare"]
UPLOAD = "upload"


class ImagePropertiesSerializer(serializers.Serializer):
    # The limits are the core's (as for PATCH /v2/images/{id}); the fields stay typed so that an
    # error names the offending item, e.g. `tags.0`.
    name = serializers.CharField(max_length=MAX_IMAGE_NAME_LENGTH, allow_blank=True)
    tags = serializers.ListField(
        child=serializers.CharField(max_length=MAX_TAG_LENGTH), max_length=MAX_IMAGE_TAGS, required=False, default=list
    )
    disk_format = serializers.ChoiceField(
        choices=DISK_FORMATS,
        required=False,
        help_text="What the bytes are; the import fails if the detected format differs. Omitted: any "
        "accepted format, as detected. vhd is another name of vpc.",
    )
    container_format = serializers.ChoiceField(choices=CONTAINER_FORMATS, default="bare")
    visibility = serializers.ChoiceField(choices=Visibility.choices, default=Visibility.PRIVATE)
    min_disk = serializers.IntegerField(min_value=0, max_value=MAX_STORED_INT, default=0, help_text="GiB")
    min_ram = serializers.IntegerField(min_value=0, max_value=MAX_STORED_INT, default=0, help_text="MiB")
    properties = serializers.DictField(child=serializers.CharField(allow_blank=True), required=False, default=dict)

    def validate_tags(self, tags):
        return list(dict.fromkeys(tags))  # a tag given twice is one tag

    def validate_visibility(self, visibility):
        request = self.context.get("request")
        if visibility == Visibility.PUBLIC and request is not None and not allowed(request.user, "publicize"):
            raise serializers.ValidationError(
                f"Making an image public needs one of the roles: {needed_roles('publicize')}.", code=FORBIDDEN
            )
        return visibility

    def validate_properties(self, properties):
        return validate_image_properties(properties)  # the same limits as PATCH /v2/images/{id}


class ChecksumSerializer(serializers.Serializer):
    algo = serializers.ChoiceField(choices=sorted(HEX_LENGTHS))
    value = serializers.CharField(max_length=128)

    def validate(self, attrs):
        value, algo = attrs["value"].lower(), attrs["algo"]
        expected = HEX_LENGTHS[algo]
        if not re.fullmatch(r"[0-9a-f]*", value) or len(value) != expected:
            raise serializers.ValidationError(
                {"value": [f"A {algo} checksum is {expected} hexadecimal digits; got {len(value)} characters."]}
            )
        return {"algo": algo, "value": value}


class ImportInputSerializer(serializers.Serializer):
    """Exactly one of `location` or `"source": "upload"`."""

    location = serializers.CharField(
        required=False,
        max_length=4096,
        help_text="http(s)://..., s3://BUCKET/KEY or swift://HOST[:PORT]/ACCOUNT/CONTAINER/OBJECT",
    )
    source = serializers.ChoiceField(
        choices=[UPLOAD], required=False, help_text="'upload': PUT the bytes to /v2/image-actions/{id}/data."
    )
    image_properties = ImagePropertiesSerializer()
    checksum = ChecksumSerializer(required=False)
    image_id = serializers.UUIDField(
        required=False,
        help_text="Import into this image record of your project (Glance's POST /v2/images), which must "
        "await its bytes; left out: a new image.",
    )
    hold_after_data = serializers.BooleanField(
        default=False, help_text="With an upload: wait after the data arrived until told to go on (Glance's stage)."
    )
    stores = serializers.ListField(
        child=serializers.CharField(max_length=64),
        min_length=1,
        max_length=32,
        required=False,
        help_text="The image stores that get a copy of the bytes (GET /v2/stores); left out: the default store.",
    )
    all_stores_must_succeed = serializers.BooleanField(
        default=True,
        help_text="false: the import succeeds when at least one of `stores` took the bytes; the others are "
        "listed in the result's `failed_stores`.",
    )

    def validate_stores(self, names):
        return validate_store_names(names)

    def validate_image_id(self, image_id):
        request = self.context.get("request")
        if request is None:
            return image_id
        if not self.context.get("glance_import"):
            # The Glance API moves the record's status with each import; an action made elsewhere would not.
            raise serializers.ValidationError(
                "Import into an existing image record with POST /v2/images/{id}/import, PUT .../stage or .../file."
            )
        images = visible_to(Image.objects.filter(pk=image_id, status__in=AWAITING_BYTES, locations=None), request.user)
        if not images.exists():
            raise serializers.ValidationError(
                f"There is no image {image_id} in your project that awaits its bytes.", code=NOT_FOUND
            )
        return image_id

    def validate_location(self, url):
        # Any text is a location by the schema; which ones this service reads is its policy.
        try:
            location = parse_location(url)
        except ValueError as error:
            raise serializers.ValidationError(str(error), code=ErrorCode.URL_NOT_ALLOWED) from None
        if location.kind == "http":
            try:
                UrlPolicy.from_settings().check_url(url)
            except UrlRefused as refusal:
                raise serializers.ValidationError(
                    f"The url '{url}' is not allowed: {refusal}.", code=ErrorCode.URL_NOT_ALLOWED
                ) from None
        elif location.kind == "s3" and not settings.S3_SOURCE:
            raise serializers.ValidationError(
                "s3:// locations are not enabled on this service.", code=ErrorCode.URL_NOT_ALLOWED
            )
        elif location.kind == "swift" and location.host not in (getattr(settings, "SWIFT_CREDENTIALS", None) or {}):
            raise serializers.ValidationError(
                f"No Swift credentials are configured for '{location.host}'; "
                f"ask the operators to add the host to IMAGEACTIONS_SWIFT_CREDENTIALS.",
                code=ErrorCode.URL_NOT_ALLOWED,
            )
        return url

    def validate(self, attrs):
        if not attrs["image_properties"]["name"] and "image_id" not in attrs:
            # A Glance record may have no name; a new image gets one.
            raise serializers.ValidationError({"image_properties": {"name": ["This field may not be blank."]}})
        has_location, has_upload = "location" in attrs, attrs.get("source") == UPLOAD
        if has_location == has_upload:
            raise serializers.ValidationError(
                {"location": ['Give exactly one source: a "location" URL, or "source": "upload".']}
            )
        return attrs


def _no_record(schema: dict, direction: str) -> dict:
    if direction == "request":
        # image_id is for the Glance API's own imports (POST /v2/images/{id}/import), never sent here.
        schema["properties"].pop("image_id", None)
    return schema


def _name_given(schema: dict, direction: str) -> dict:
    if direction == "request":
        schema["properties"]["name"]["minLength"] = 1  # only the Glance API imports into a record without one
        # validate_image_properties' limits
        schema["properties"]["properties"].update(
            maxProperties=MAX_IMAGE_PROPERTIES,
            propertyNames={"minLength": 1, "maxLength": MAX_PROPERTY_KEY_LENGTH},
            additionalProperties={"type": "string", "maxLength": MAX_PROPERTY_VALUE_LENGTH},
        )
    return schema


refine_schema(ImportInputSerializer, _no_record)
refine_schema(ImagePropertiesSerializer, _name_given)


def image_properties_of(data: dict) -> dict:
    """What the action shows as the properties of the image it will create."""
    return dict(data.get("image_properties", {}))


class ImportResultSerializer(serializers.Serializer):
    """The result of a successful import."""

    image_ref = serializers.UUIDField(help_text="The new Image (or the image record it filled).")
    stores = serializers.ListField(child=serializers.CharField(), help_text="The stores that hold the bytes.")
    failed_stores = serializers.ListField(
        child=serializers.CharField(),
        help_text="Stores asked for that could not take the bytes (only with all_stores_must_succeed false).",
    )
