"""The input of an `export` action: which image, in which disk format, to which destination."""

from django.conf import settings
from rest_framework import serializers

from imageactions.pipeline import (
    CONFLICT,
    CONVERSION_FORMATS,
    NOT_FOUND,
    ErrorCode,
    Image,
    ImageStatus,
    InvalidKey,
    UrlPolicy,
    UrlRefused,
    owner_of,
    refine_schema,
    validate_key,
)

DOWNLOAD, STORE, URL = "download", "store", "url"
# Keys the service writes itself in its stores; an export must never overwrite an image's bytes.
RESERVED_KEY_PREFIXES = ("images/", "exports/")


class DestinationSerializer(serializers.Serializer):
    """`{"type": "download"}`, `{"type": "store", "store": NAME, "key": KEY}` or `{"type": "url", "url": URL}`."""

    type = serializers.ChoiceField(
        choices=[DOWNLOAD, STORE, URL],
        help_text="download: a link under this API until the action expires; store: an object in an "
        "operator-configured image store; url: an http(s) PUT target such as a presigned URL.",
    )
    store = serializers.CharField(
        required=False, max_length=64, help_text="type store: the store's name (GET /v2/stores)."
    )
    key = serializers.CharField(
        required=False, max_length=512, help_text="type store: the object's key, e.g. 'backups/web.qcow2'."
    )
    url = serializers.CharField(required=False, max_length=4096, help_text="type url: where to PUT the bytes.")

    FIELDS_OF = {DOWNLOAD: set(), STORE: {"store", "key"}, URL: {"url"}}

    def validate(self, attrs):
        kind = attrs["type"]
        wanted = self.FIELDS_OF[kind]
        errors = {}
        for name in sorted(wanted - set(attrs)):
            errors[name] = [f"A {kind} destination needs '{name}'."]
        for name in sorted(set(attrs) - wanted - {"type"}):
            errors[name] = [f"A {kind} destination has no '{name}'; remove it."]
        if errors:
            raise serializers.ValidationError(errors)
        if kind == STORE:
            self._check_store(attrs)
        elif kind == URL:
            self._check_url(attrs["url"])
        return attrs

    def _check_store(self, attrs):
        name, key = attrs["store"], attrs["key"]
        if name not in settings.IMAGE_STORES:
            known = ", ".join(f"'{known}'" for known in settings.IMAGE_STORES)
            raise serializers.ValidationError(
                {"store": [f"There is no image store named '{name}'; the stores are: {known}."]}, code=NOT_FOUND
            )
        try:
            validate_key(key)
        except InvalidKey as error:
            raise serializers.ValidationError({"key": [f"{error}."]}) from None
        if key.startswith(RESERVED_KEY_PREFIXES):
            reserved = ", ".join(f"'{prefix}'" for prefix in RESERVED_KEY_PREFIXES)
            raise serializers.ValidationError(
                {"key": [f"Keys under {reserved} are the service's own; choose another key than '{key}'."]},
                code=CONFLICT,
            )

    def _check_url(self, url):
        try:
            UrlPolicy.from_settings().check_url(url)
        except UrlRefused as refusal:
            raise serializers.ValidationError(
                {"url": [f"The url '{without_query(url)}' is not allowed: {refusal}."]}, code=ErrorCode.URL_NOT_ALLOWED
            ) from None


# validate_key's rule: a relative path whose components are not empty and do not start with ".".
_KEY_PATTERN = r"^[^./\x00][^/\x00]*(/[^./\x00][^/\x00]*)*$"


def _key_pattern(schema: dict, direction: str) -> dict:
    if direction != "request":
        return schema
    fields = schema["properties"]
    fields["key"]["pattern"] = _KEY_PATTERN
    return schema


refine_schema(DestinationSerializer, _key_pattern)


class ExportInputSerializer(serializers.Serializer):
    """Export one of your active images, optionally converted, to a download link, a store or a URL."""

    image_id = serializers.UUIDField()
    disk_format = serializers.ChoiceField(
        choices=CONVERSION_FORMATS,
        required=False,
        help_text="Convert to this format first; left out: the image's own format, byte for byte.",
    )
    destination = DestinationSerializer()

    def validate_image_id(self, image_id):
        request = self.context.get("request")
        if request is None:
            return image_id  # only the schema builds this serializer without a request
        try:
            exportable_image(image_id, owner_of(request.user))
        except ImageNotExportable as error:
            raise serializers.ValidationError(f"{error}.", code=error.code) from None
        return image_id


class ImageNotExportable(Exception):
    """The image is missing, another project's or not active; the text is for the user."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.code = code


def exportable_image(image_id, owner: str) -> Image:
    """The image `owner` may export: checked when the action is created and again when it runs."""
    image = Image.objects.filter(pk=image_id, owner=owner).first()
    # The same words for a foreign image as for a missing one: existence is not revealed.
    if image is None:
        raise ImageNotExportable(f"Image {image_id} was not found in your project", NOT_FOUND)
    if image.status != ImageStatus.ACTIVE:
        raise ImageNotExportable(f"Image {image_id} is not active (its status is '{image.status}')", CONFLICT)
    return image


def without_query(url: str) -> str:
    """`url` without its query string and fragment: a presigned URL's signature is a secret."""
    return url.split("?", 1)[0].split("#", 1)[0]


class ExportResultSerializer(serializers.Serializer):
    """The result of a successful export: where the bytes went and what they are."""

    location = serializers.CharField(help_text="The download link, store object or URL the bytes were written to.")
    expires_at = serializers.DateTimeField(required=False, help_text="download: when the link stops working.")
    size = serializers.IntegerField(help_text="Bytes written.")
    disk_format = serializers.CharField(help_text="The format written.")
    checksum = serializers.CharField(help_text="md5 of the bytes written.")
    os_hash_algo = serializers.CharField()
    os_hash_value = serializers.CharField()
