"""The input of a `convert` action: which image, into which disk format, stored where, named how."""

from django.conf import settings
from rest_framework import serializers

from imageactions.pipeline import (
    CONFLICT,
    CONVERSION_FORMATS,
    MAX_IMAGE_NAME_LENGTH,
    NOT_FOUND,
    Image,
    ImageStatus,
    owner_of,
    qemu_format_name,
)


class ConvertInputSerializer(serializers.Serializer):
    """Convert one of your active images; the original stays as it is."""

    image_id = serializers.UUIDField(help_text="The active image of your project to convert.")
    disk_format = serializers.ChoiceField(choices=CONVERSION_FORMATS, help_text="The new image's disk format.")
    store = serializers.CharField(
        max_length=64,
        required=False,
        help_text="Where the new image is stored (GET /v2/stores); default: the original's store.",
    )
    name = serializers.CharField(
        max_length=MAX_IMAGE_NAME_LENGTH, required=False, help_text="The new image's name; default: the original's."
    )

    def validate_store(self, name):
        if name not in settings.IMAGE_STORES:
            known = ", ".join(f"'{known}'" for known in settings.IMAGE_STORES)
            raise serializers.ValidationError(
                f"There is no image store named '{name}'; the stores are: {known}.", code=NOT_FOUND
            )
        return name

    def validate(self, attrs):
        request = self.context.get("request")
        if request is None:
            return attrs  # only the schema builds this serializer without a request
        image = convertible_image(attrs["image_id"], owner_of(request.user))
        if qemu_format_name(attrs["disk_format"], target=True) == qemu_format_name(image.disk_format):
            raise serializers.ValidationError(
                {"disk_format": [f"Image {image.pk} is already a {image.disk_format} image; choose another format."]},
                code=CONFLICT,
            )
        return {**attrs, "store": attrs.get("store", image.location.store)}


class ImageNotConvertible(serializers.ValidationError):
    """The image is missing, another project's, or not active."""


def convertible_image(image_id, owner: str) -> Image:
    """The image `owner` may convert: checked when the action is created and again when it runs."""
    image = Image.objects.filter(pk=image_id, owner=owner).first()
    # The same words for a foreign image as for a missing one: existence is not revealed.
    if image is None:
        raise ImageNotConvertible({"image_id": [f"Image {image_id} was not found in your project."]}, code=NOT_FOUND)
    if image.status != ImageStatus.ACTIVE:
        raise ImageNotConvertible(
            {"image_id": [f"Image {image_id} is not active (its status is '{image.status}')."]}, code=CONFLICT
        )
    return image


def image_properties_of(data: dict) -> dict:
    """What the action shows of the image it will create."""
    properties = {"disk_format": data["disk_format"], "converted_from": data["image_id"]}
    if "name" in data:
        properties["name"] = data["name"]
    return properties


class ConvertResultSerializer(serializers.Serializer):
    """The result of a successful conversion."""

    image_ref = serializers.UUIDField(help_text="The new Image, with the property converted_from.")
