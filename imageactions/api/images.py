"""The /v2/images resource: list, show, change and delete images, and download their bytes."""

from django.db import transaction
from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field, extend_schema_view
from rest_framework import exceptions, mixins, serializers, status, viewsets
from rest_framework.decorators import action as route
from rest_framework.response import Response
from rest_framework.reverse import reverse

from ..choices import ImageRole, Visibility
from ..filtersets import ImageFilterSet
from ..models import Image, ImageAction, ImageTag
from ..pipeline import StoredFile, safe_filename
from ..projects import visible_to
from ..stores import StoreError, get_store
from ..validators import MAX_IMAGE_NAME_LENGTH, ImagePropertiesField, ImageTagsField
from .errors import Conflict
from .parsers import BoundedJSONParser
from .serializers import ErrorSerializer
from .streaming import (
    IgnoreAcceptHeader,
    StoreUnavailable,
    download_parameters,
    download_responses,
    stored_file_response,
)
from .views import NewestFirstCursorPagination, error_responses

# -- serializers -----------------------------------------------------------------------


class ImageStoreRefSerializer(serializers.Serializer):
    name = serializers.CharField()
    region = serializers.CharField(allow_null=True, help_text="Null when the store is no longer configured.")


# A named schema component: inline, generated clients name it ImageProperties, which clashes with
# the import input's ImageProperties component and makes them drop the Image model.
@extend_schema_field({"type": "object", "additionalProperties": {"type": "string"}}, component_name="ImagePropertyMap")
class ImagePropertyMapField(serializers.DictField):
    """An image's free-form properties: names to text values."""


class ImageSerializer(serializers.ModelSerializer):
    """An image as its project sees it (the owner is always the caller's own project, or any for staff)."""

    tags = serializers.SerializerMethodField()
    properties = ImagePropertyMapField(child=serializers.CharField(), read_only=True)
    store = serializers.SerializerMethodField()
    file = serializers.SerializerMethodField(help_text="Where to download the image's bytes.")

    class Meta:
        model = Image
        fields = [
            "id",
            "name",
            "status",
            "disk_format",
            "container_format",
            "size",
            "virtual_size",
            "checksum",
            "os_hash_algo",
            "os_hash_value",
            "tags",
            "properties",
            "owner",
            "visibility",
            "min_disk",
            "min_ram",
            "created_at",
            "updated_at",
            "store",
            "file",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_tags(self, image) -> list[str]:
        return sorted(tag.name for tag in image.tag_set.all())

    @extend_schema_field(ImageStoreRefSerializer)
    def get_store(self, image) -> dict:
        try:
            region = get_store(image.store).region
        except StoreError:
            region = None
        return {"name": image.store, "region": region}

    @extend_schema_field(OpenApiTypes.URI)
    def get_file(self, image) -> str:
        return reverse("image-file", kwargs={"pk": image.pk}, request=self.context.get("request"))


class ImageUpdateSerializer(serializers.Serializer):
    """The body of PATCH /v2/images/{id}: only the fields given change; tags and properties are replaced whole."""

    name = serializers.CharField(max_length=MAX_IMAGE_NAME_LENGTH, allow_blank=True, required=False)
    tags = ImageTagsField(required=False, help_text="Replaces all tags.")
    properties = ImagePropertiesField(required=False, help_text="Replaces all properties.")
    visibility = serializers.ChoiceField(choices=Visibility.choices, required=False)
    min_disk = serializers.IntegerField(min_value=0, max_value=2**31 - 1, required=False, help_text="GiB")
    min_ram = serializers.IntegerField(min_value=0, max_value=2**31 - 1, required=False, help_text="MiB")

    def to_internal_value(self, data):
        if isinstance(data, dict):
            self._refuse_other_fields(data)
        return super().to_internal_value(data)

    def _refuse_other_fields(self, data):
        # Silently ignoring e.g. {"size": ...} would let a client believe it changed what it cannot.
        changeable = ", ".join(self.fields)
        errors = {}
        for name in data:
            if name in self.fields:
                continue
            if name in ImageSerializer.Meta.fields:
                errors[name] = [f"'{name}' cannot be changed; the fields you can change are: {changeable}."]
            else:
                errors[name] = [f"Unknown field '{name}'; the fields you can change are: {changeable}."]
        if errors:
            raise serializers.ValidationError(errors)

    def update(self, image, validated_data):
        tags = validated_data.pop("tags", None)
        with transaction.atomic():
            for name, value in validated_data.items():
                setattr(image, name, value)
            image.save()  # also when only the tags change, so updated_at moves
            if tags is not None:
                image.tag_set.exclude(name__in=tags).delete()
                present = set(image.tag_set.values_list("name", flat=True))
                ImageTag.objects.bulk_create(ImageTag(image=image, name=tag) for tag in tags if tag not in present)
        return image


# -- downloads (the shared implementation is in .streaming) ------------------------------


def download_filename(image: Image) -> str:
    """A name that is safe on every file system and in a header: the image's name, else its id, plus the format."""
    return safe_filename(image.name, image.disk_format, str(image.pk))


# -- the viewset ---------------------------------------------------------------------


def image_error_responses(*codes: int) -> dict:
    """Schema entries for the error answers of an image operation (all in the shape of ErrorSerializer)."""
    return error_responses(
        *codes,
        words={
            404: "No such image (or it belongs to another project).",
            409: "A pending action reads the image.",
            416: "The range starts past the end of the image; the Content-Range header is `bytes */SIZE`.",
            503: "The image store could not be used; nothing was changed.",
        },
    )


@extend_schema_view(
    list=extend_schema(
        summary="List your images",
        responses={
            200: ImageSerializer(many=True),
            **image_error_responses(400, 401),
            404: OpenApiResponse(ErrorSerializer, description="The `cursor` is not one this list handed out."),
        },
    ),
    retrieve=extend_schema(
        summary="Show one image", responses={200: ImageSerializer, **image_error_responses(401, 404)}
    ),
    partial_update=extend_schema(
        request=ImageUpdateSerializer,
        responses={200: ImageSerializer, **image_error_responses(400, 401, 404, 413)},
        summary="Change an image's name, tags, properties, visibility or minimums",
    ),
    destroy=extend_schema(
        responses={204: None, **image_error_responses(401, 404, 409, 503)}, summary="Delete an image and its bytes"
    ),
)
class ImageViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Your project's images (staff: everyone's); another owner's image does not exist here."""

    serializer_class = ImageSerializer
    parser_classes = [BoundedJSONParser]
    pagination_class = NewestFirstCursorPagination
    filterset_class = ImageFilterSet
    # Any text reaches the view, so a malformed id gets the JSON 404 of a missing one.
    lookup_value_regex = "[^/]+"

    def get_queryset(self):
        return visible_to(Image.objects.all(), self.request.user).prefetch_related("tag_set")

    def get_object(self):
        try:
            return super().get_object()
        except Http404:
            # The same words for a foreign image as for a missing one: existence is not revealed.
            raise exceptions.NotFound(f"There is no image {self.kwargs['pk']!r} in your project.") from None

    def partial_update(self, request, pk=None):
        image = self.get_object()
        serializer = ImageUpdateSerializer(image, data=request.data, partial=True, context={"request": request})
        serializer.is_valid(raise_exception=True)
        serializer.save()
        image = self.get_queryset().get(pk=image.pk)  # fresh tags
        return Response(ImageSerializer(image, context={"request": request}).data)

    def destroy(self, request, pk=None):
        image = self.get_object()
        reader = (
            ImageAction.objects.pending()
            .filter(image_links__image_id=image.pk, image_links__role=ImageRole.READ)
            .first()
        )
        if reader is not None:
            raise Conflict(
                f"Image {image.pk} is being read by {reader.action_type} action {reader.pk} "
                f"(status {reader.status!r}); cancel it or wait for it to end, then delete the image."
            )
        # A clone within one store may share the object; the bytes go with the last image using them.
        shared = Image.objects.filter(store=image.store, store_key=image.store_key).exclude(pk=image.pk).exists()
        if not shared:
            try:
                get_store(image.store).delete(image.store_key)
            except StoreError as error:
                raise StoreUnavailable(
                    f"Image {image.pk} was not deleted because its bytes could not be removed: {error}. "
                    "Try again later; if it keeps failing, tell an operator."
                ) from error
        image.delete()
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        responses={**download_responses("image"), **image_error_responses(401, 404, 416, 503)},
        parameters=download_parameters("image"),
        summary="Download an image",
    )
    @route(detail=True, methods=["get"], content_negotiation_class=IgnoreAcceptHeader)
    def file(self, request, pk=None):
        image = self.get_object()
        stored = StoredFile(
            store=image.store,
            key=image.store_key,
            size=image.size,
            filename=download_filename(image),
            md5=image.checksum,
        )
        return stored_file_response(request, stored, what=f"image {image.pk}")
