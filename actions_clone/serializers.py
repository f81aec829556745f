"""The input of a `clone` action: which image, to which stores (named, or all of some regions), and
whether the copies become new images or more locations of the same image (Glance's copy-image)."""

from rest_framework import serializers

from imageactions.pipeline import (
    CONFLICT,
    MAX_IMAGE_NAME_LENGTH,
    NOT_FOUND,
    ErrorCode,
    Image,
    ImageStatus,
    all_stores,
    validate_store_names,
    visible_to,
)


def _quoted(names) -> str:
    return ", ".join(f"'{name}'" for name in names) or "none"


class CloneInputSerializer(serializers.Serializer):
    """Exactly one of `stores` or `regions`; the resolved store names are kept as `stores`."""

    image_id = serializers.UUIDField(help_text="The active image of your project to copy.")
    stores = serializers.ListField(
        child=serializers.CharField(max_length=64),
        min_length=1,
        max_length=32,
        required=False,
        help_text="Names of the target stores (GET /v2/stores); not the image's own store.",
    )
    regions = serializers.ListField(
        child=serializers.CharField(max_length=64),
        min_length=1,
        max_length=32,
        required=False,
        help_text="Copy to every store of these regions (except the image's own store).",
    )
    name = serializers.CharField(
        max_length=MAX_IMAGE_NAME_LENGTH, required=False, help_text="Name of the new images; default: the source's."
    )
    same_image = serializers.BooleanField(
        default=False,
        help_text="true: each verified copy becomes another location of the image itself (Glance's "
        "copy-image), instead of a new image.",
    )
    all_stores_must_succeed = serializers.BooleanField(
        default=True,
        help_text="false: the clone succeeds when at least one store took a verified copy; the others are "
        "listed in the result's `failed_stores`.",
    )

    def validate_image_id(self, image_id):
        request = self.context.get("request")
        images = Image.objects.filter(pk=image_id, status=ImageStatus.ACTIVE)
        if request is not None:
            images = visible_to(images, request.user)
        image = images.prefetch_related("locations").first()
        if image is None:
            # The same words for a foreign image as for a missing one: existence is not revealed.
            raise serializers.ValidationError(
                f"There is no active image {image_id} in your project; check the id with GET /v2/images.",
                code=NOT_FOUND,
            )
        self._source = image
        return str(image_id)

    def validate_stores(self, names):
        return validate_store_names(names)

    def validate_regions(self, regions):
        known = list(dict.fromkeys(store.region for store in all_stores()))
        for region in regions:
            if region not in known:
                raise serializers.ValidationError(
                    f"There is no region named '{region}'; the regions are {_quoted(known)} (GET /v2/stores).",
                    code=NOT_FOUND,
                )
        return list(dict.fromkeys(regions))

    def validate(self, attrs):
        if ("stores" in attrs) == ("regions" in attrs):
            raise serializers.ValidationError(
                {"stores": ['Give the targets as exactly one of "stores" (store names) or "regions" (region names).']}
            )
        if attrs["same_image"] and "name" in attrs:
            raise serializers.ValidationError(
                {"name": ["With same_image no image is made: leave out the name."]}, code=CONFLICT
            )
        holding = self._source.stores
        if "stores" in attrs:
            already = [name for name in attrs["stores"] if name in holding]
            if already:
                raise serializers.ValidationError(
                    {"stores": [f"The image is already in store {_quoted(already)}; name only other stores."]},
                    code=CONFLICT,
                )
            return attrs
        targets = [
            store.name for store in all_stores() if store.region in attrs["regions"] and store.name not in holding
        ]
        if not targets:
            raise serializers.ValidationError(
                {
                    "regions": [
                        f"Every store of the regions {_quoted(attrs['regions'])} holds the image already "
                        f"({_quoted(holding)}); choose another region (GET /v2/stores)."
                    ]
                },
                code=CONFLICT,
            )
        return {**attrs, "stores": targets}


def image_properties_of(data: dict) -> dict:
    """What the action shows of the images it will create (none with same_image)."""
    if data.get("same_image"):
        return {}
    properties = {"cloned_from": data["image_id"]}
    if "name" in data:
        properties["name"] = data["name"]
    return properties


class ClonedImageSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    store = serializers.CharField()
    region = serializers.CharField(allow_null=True)


class TargetOutcomeSerializer(serializers.Serializer):
    store = serializers.CharField()
    outcome = serializers.ChoiceField(choices=["copied", "failed"])
    image_id = serializers.UUIDField(required=False, help_text="The image the copy belongs to (copied).")
    region = serializers.CharField(required=False, allow_null=True)
    message = serializers.CharField(required=False, help_text="Why the store got no copy (failed).")
    error_code = serializers.ChoiceField(
        choices=ErrorCode.choices,
        required=False,
        help_text="Why the store got no copy, for programs (failed): a code of the action's error_code vocabulary.",
    )
    error_details = serializers.DictField(
        required=False, help_text="The values checked for this store (failed), e.g. expected and actual sha512."
    )


class CloneResultSerializer(serializers.Serializer):
    """The result of a successful clone: a verified copy in each target store, as a new Image, or
    as a location of the image itself (`same_image`)."""

    image_refs = serializers.ListField(
        child=serializers.UUIDField(), help_text="The new Images (none with same_image)."
    )
    images = ClonedImageSerializer(many=True, help_text="Each copy: the image it belongs to and its store.")
    failed_stores = serializers.ListField(
        child=serializers.CharField(),
        help_text="Target stores that got no verified copy (only with all_stores_must_succeed false).",
    )
    # Not required: the results of clones made before targets existed lack it.
    targets = TargetOutcomeSerializer(
        many=True, required=False, help_text="Each target store's outcome, in the order asked."
    )
