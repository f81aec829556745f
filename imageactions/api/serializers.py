"""Serializers of the ImageAction resource; each action type's input comes from its registration."""

import json
from functools import cache

from django.utils.functional import lazy
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema_field
from rest_framework import serializers

from ..choices import ActionStatus, AttemptOutcome, DeliveryState, ErrorCode, Visibility, WebhookEvent
from ..models import ImageAction
from ..pipeline import ActionType, action_types, get_action_type, step_statuses
from ..policy import allowed
from ..validators import LABEL_KEY, MAX_LABEL_VALUE_LENGTH, MAX_LABELS, validate_labels


def _status_choices():
    return [ActionStatus.WAITING, *step_statuses(), *(s for s in ActionStatus if s != ActionStatus.WAITING)]


def known_statuses() -> list[str]:
    return [str(status) for status in _status_choices()]


def _known_types_text() -> str:
    return ", ".join(sorted(action_types())) or "none (no action type is installed)"


class TargetProgressSerializer(serializers.Serializer):
    status = serializers.CharField(
        help_text="Where this target is; for a clone: waiting, copying, written (not yet read back), verifying, "
        "copied (a verified copy, as in result.targets) or failed (result.targets and the message say why)."
    )
    bytes_done = serializers.IntegerField(help_text="Bytes of this target done in its current status.")
    bytes_total = serializers.IntegerField(allow_null=True)
    percent = serializers.FloatField(allow_null=True)


class ProgressSerializer(serializers.Serializer):
    step = serializers.CharField(allow_null=True, help_text="The step now running or last run.")
    bytes_done = serializers.IntegerField()
    bytes_total = serializers.IntegerField(allow_null=True)
    percent = serializers.FloatField(allow_null=True)
    targets = serializers.DictField(
        child=TargetProgressSerializer(),
        required=False,
        help_text="Only for actions that write to several places (a clone: its target stores, by name): "
        "each one's progress; absent for other actions.",
    )


class InputField(serializers.JSONField):
    """The validated input; the schema offers each installed action type's input (InputFieldSchema)."""


class InputFieldSchema(OpenApiSerializerFieldExtension):
    """`input` as one of the registered types' inputs, built from the registry when the schema is
    generated, so generated clients get a typed model per action type instead of a bare dict."""

    target_class = InputField

    def map_serializer_field(self, auto_schema, direction):
        inputs = [
            auto_schema.resolve_serializer(action_type.input_serializer, direction).ref
            for _, action_type in sorted(action_types().items())
        ]
        description = "The validated input of the action's type (see `action_type`), defaults filled in."
        if not inputs:
            return {"type": "object", "additionalProperties": True, "description": description}
        # anyOf, not oneOf: the inputs' schemas overlap (optional fields, extra keys allowed), so
        # one valid input can match several of them, which oneOf forbids.
        return {"anyOf": inputs, "description": description}


class NewImagePropertiesSerializer(serializers.Serializer):
    """What the Image an action creates will get; empty for action types that create none."""

    name = serializers.CharField(required=False)
    tags = serializers.ListField(child=serializers.CharField(), required=False)
    disk_format = serializers.CharField(required=False)
    container_format = serializers.CharField(required=False)
    visibility = serializers.ChoiceField(choices=Visibility.choices, required=False)
    min_disk = serializers.IntegerField(required=False, help_text="GiB")
    min_ram = serializers.IntegerField(required=False, help_text="MiB")
    properties = serializers.DictField(child=serializers.CharField(allow_blank=True), required=False)


# Rendered as the stored dicts are (keys an action type adds are kept); typed in the schema only.
@extend_schema_field(NewImagePropertiesSerializer)
class NewImagePropertiesField(serializers.DictField):
    pass


class ActionResultField(serializers.DictField):
    """What a successful action produced (empty until then); typed per action type in the schema."""


class ActionResultFieldSchema(OpenApiSerializerFieldExtension):
    """`result` as one of the registered types' results, like `input`."""

    target_class = ActionResultField

    def map_serializer_field(self, auto_schema, direction):
        results = [
            auto_schema.resolve_serializer(action_type.result_serializer, direction).ref
            for _, action_type in sorted(action_types().items())
            if action_type.result_serializer
        ]
        description = "What the action produced, per its `action_type`; empty until it succeeds."
        if not results:
            return {"type": "object", "additionalProperties": True, "description": description}
        undescribed = any(action_type.result_serializer is None for action_type in action_types().values())
        # Until success the result is empty; a type that describes no result may store anything.
        rest = (
            {"type": "object", "additionalProperties": True} if undescribed else {"type": "object", "maxProperties": 0}
        )
        return {"anyOf": [*results, rest], "description": description}


@extend_schema_field(
    {
        "type": "object",
        "additionalProperties": {
            "type": "string",
            "maxLength": MAX_LABEL_VALUE_LENGTH,
            "pattern": "^[^\\x00-\\x1f\\x7f-\\x9f]*$",
        },
        "propertyNames": {"pattern": f"^{LABEL_KEY.pattern}$"},
        "maxProperties": MAX_LABELS,
    }
)
class LabelsField(serializers.DictField):
    """The user's labels of an action: `{"team": "ci", "build": "4711"}`."""

    def __init__(self, **kwargs):
        kwargs.setdefault(
            "help_text",
            f"Your own key/value labels, at most {MAX_LABELS}: each key a lower-case letter then up to 62 "
            f"lower-case letters, digits, '_', '.', '-' or '/'; each value up to {MAX_LABEL_VALUE_LENGTH} "
            "printable characters. Filter with ?label=KEY=VALUE or ?label=KEY.",
        )
        super().__init__(child=serializers.CharField(allow_blank=True, trim_whitespace=False), **kwargs)

    def to_internal_value(self, data):
        return validate_labels(data)  # as sent: a number is refused, not turned into text


class NotifyUrlField(serializers.CharField):
    """Where the action's status changes are POSTed; the URL policy is checked by the view, which
    answers its own error code (url_not_allowed)."""

    def __init__(self, **kwargs):
        kwargs.setdefault(
            "help_text",
            "An http(s) URL that gets a signed POST for each change of the action's status (see the README, "
            "'Webhooks'); under the same URL policy as import locations.",
        )
        super().__init__(max_length=2048, **kwargs)


class ImageActionSerializer(serializers.ModelSerializer):
    """An action as users see it; `owner` only for staff."""

    status = serializers.ChoiceField(choices=lazy(_status_choices, list)(), read_only=True)
    input = InputField(read_only=True)
    image_properties = NewImagePropertiesField(read_only=True)
    result = ActionResultField(read_only=True)
    progress = ProgressSerializer(read_only=True)
    labels = LabelsField(read_only=True)
    error_code = serializers.ChoiceField(
        choices=ErrorCode.choices,
        allow_null=True,
        read_only=True,
        help_text="Why a failed action failed, for programs (null unless the status is failure); the README lists the codes.",
    )
    error_details = serializers.DictField(
        read_only=True, help_text="For a failure: the values checked (e.g. expected and actual checksums)."
    )
    notify_url = serializers.CharField(
        read_only=True, allow_null=True, help_text="Where its status changes are POSTed; null: nowhere."
    )
    # Not read_only on purpose: the schema marks read-only fields as always present, and
    # `owner` is absent for non-staff. This serializer only ever renders, so nothing is written.
    owner = serializers.CharField(required=False, help_text="The owning project; shown to staff only.")

    class Meta:
        model = ImageAction
        fields = [
            "id",
            "action_type",
            "status",
            "owner",
            "input",
            "image_properties",
            "result",
            "message",
            "error_code",
            "error_details",
            "progress",
            "labels",
            "notify_url",
            "created_at",
            "updated_at",
            "started_at",
            "finished_at",
            "expires_at",
        ]
        read_only_fields = [name for name in fields if name != "owner"]

    def to_representation(self, instance):
        data = super().to_representation(instance)
        data["error_code"] = data["error_code"] or None
        data["notify_url"] = data["notify_url"] or None
        request = self.context.get("request")
        if not (request and allowed(request.user, "operator_detail")):
            data.pop("owner", None)
        action_type = get_action_type(instance.action_type)
        if request and action_type and action_type.present_result and data.get("result"):
            data["result"] = action_type.present_result(data["result"], request.build_absolute_uri)
        if self.context.get("alias_dialect") and action_type and instance.finished_at:
            made = list(action_type.images_made(instance.result)) if instance.result else []
            if made:
                data["image_ref"] = f"/v2/images/{made[0]}"
            data["expires-by"] = data["expires_at"]
        return data


class ErrorSerializer(serializers.Serializer):
    """The shape of every error answer."""

    code = serializers.CharField(help_text="Machine-readable: invalid, not_found, not_authenticated, ...")
    detail = serializers.CharField(help_text="What went wrong, in words.")
    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        help_text="Per field path (e.g. `input.work.kind`), the problems found; empty unless invalid.",
    )


class WebhookAttemptSerializer(serializers.Serializer):
    number = serializers.IntegerField()
    at = serializers.DateTimeField(help_text="When the attempt started.")
    duration_ms = serializers.IntegerField()
    status_code = serializers.IntegerField(allow_null=True, help_text="The receiver's answer; null: none came.")
    outcome = serializers.ChoiceField(
        choices=AttemptOutcome.choices,
        help_text="delivered: a 2xx answer; url_not_allowed: the URL policy refused the address, nothing was sent.",
    )
    error = serializers.CharField(allow_blank=True, help_text="Why the attempt failed; empty when delivered.")


class WebhookDeliverySerializer(serializers.Serializer):
    """One notification of a status change to the action's notify_url, with its attempts."""

    event_id = serializers.UUIDField(help_text="The event's `id`, also in the X-ImageActions-Event-Id header.")
    event_type = serializers.ChoiceField(choices=WebhookEvent.choices)
    sequence = serializers.IntegerField(help_text="1, 2, ...: the order of the action's status changes.")
    url = serializers.CharField()
    state = serializers.ChoiceField(
        choices=DeliveryState.choices,
        help_text="pending: not yet answered with a 2xx, tried again at next_attempt_at; given_up: every attempt failed.",
    )
    attempts = WebhookAttemptSerializer(many=True)
    next_attempt_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    payload = serializers.DictField(help_text="The JSON body that is POSTed.")


class WebhookSecretSerializer(serializers.Serializer):
    """The key of the project's webhook signatures (HMAC-SHA256)."""

    secret = serializers.CharField()
    created_at = serializers.DateTimeField()
    rotated_at = serializers.DateTimeField(allow_null=True, help_text="When it was last replaced; null: never.")


class LabelsUpdateSerializer(serializers.Serializer):
    """PATCH /v2/image-actions/{id}: the labels, replaced as a whole (send the ones to keep)."""

    labels = LabelsField(required=False)


class ImageActionCreateSerializer(serializers.Serializer):
    """`{"action_type": ..., "input": {...}, "labels": {...}}`; the input is validated by the type's serializer."""

    action_type = serializers.CharField()
    input = serializers.JSONField()
    labels = LabelsField(required=False, default=dict)
    notify_url = NotifyUrlField(required=False, default="")

    def __init__(self, *args, fixed_action_type: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fixed_action_type = fixed_action_type
        if fixed_action_type:
            self.fields["action_type"].required = False
        self.fields["action_type"].error_messages["required"] = (
            f"This field is required. Known action types: {_known_types_text()}."
        )
        self.fields["input"].error_messages["required"] = (
            'This field is required: send the action type\'s input as a JSON object, e.g. "input": {{}}.'
        )

    def to_internal_value(self, data):
        # Before the fields read their values: 12345 is not a URL of another kind, it is no string.
        mistyped = mistyped_fields(self, data)
        if mistyped:
            raise serializers.ValidationError({name: [words] for name, words in mistyped.items()})
        return super().to_internal_value(data)

    def validate_action_type(self, value):
        if self.fixed_action_type and value != self.fixed_action_type:
            raise serializers.ValidationError(
                f"This endpoint creates {self.fixed_action_type!r} actions; got {value!r}. "
                f"Leave action_type out, or POST to /v2/image-actions."
            )
        if get_action_type(value) is None:
            raise serializers.ValidationError(
                f"Unknown action_type {value!r}. Known action types: {_known_types_text()}."
            )
        return value

    def validate(self, attrs):
        name = attrs.get("action_type", self.fixed_action_type)
        if not isinstance(attrs["input"], dict):
            raise serializers.ValidationError(
                {"input": [f"Expected a JSON object, got {type(attrs['input']).__name__}."]}
            )
        input_serializer = get_action_type(name).input_serializer(data=attrs["input"], context=self.context)
        # A field the service does not know is refused, not dropped: a misspelt option that
        # was silently ignored would run the action differently from what the caller meant.
        unknown = unknown_fields(self, self.initial_data) + unknown_fields(input_serializer, attrs["input"], "input.")
        if unknown:
            raise serializers.ValidationError(
                {name: ["Unknown field; see the action type's input in the API schema (/v2/docs)."] for name in unknown}
            )
        mistyped = mistyped_fields(input_serializer, attrs["input"], "input.")
        if mistyped:
            raise serializers.ValidationError({name: [words] for name, words in mistyped.items()})
        if not input_serializer.is_valid():
            raise serializers.ValidationError({"input": input_serializer.errors})
        return {
            "action_type": name,
            "input": jsonable(input_serializer.validated_data),
            "labels": attrs["labels"],
            "notify_url": attrs["notify_url"],
        }


# The JSON type each kind of field takes, as the schema states it. DRF would also take 5 for
# "5", 1 for true and 5.0 for 5: values the schema refuses must not pass.
_JSON_TYPES = [
    (serializers.BooleanField, (bool,), "true or false"),
    (serializers.IntegerField, (int,), "a whole number"),
    ((serializers.FloatField, serializers.DecimalField), (int, float), "a number"),
    (
        (serializers.CharField, serializers.ChoiceField, serializers.UUIDField, serializers.DateTimeField),
        (str,),
        "a string",
    ),
    ((serializers.ListField, serializers.ListSerializer), (list,), "a list"),
    ((serializers.DictField, serializers.Serializer), (dict,), "an object"),
]


def mistyped_fields(serializer: serializers.Serializer, data, prefix: str = "") -> dict[str, str]:
    """The dotted names of the values in `data` whose JSON type is not the one their field takes,
    at every depth the fields describe, each with what was expected."""
    found = {}
    if not isinstance(data, dict):
        return found
    for key, value in data.items():
        field = serializer.fields.get(key)
        if field is not None:
            found.update(_mistyped(field, value, f"{prefix}{key}"))
    return found


def _mistyped(field, value, name: str) -> dict[str, str]:
    if value is None:
        return {}  # a null is the field's own business (allow_null, or its "may not be null")
    for kinds, types, words in _JSON_TYPES:
        if isinstance(field, kinds):
            if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                return {name: f"Expected {words}, got {_json_type(value)}."}
            break
    if isinstance(field, serializers.Serializer):
        return mistyped_fields(field, value, f"{name}.")
    child = getattr(field, "child", None)
    if isinstance(field, (serializers.ListField, serializers.ListSerializer)) and child is not None:
        return {k: v for index, item in enumerate(value) for k, v in _mistyped(child, item, f"{name}.{index}").items()}
    if isinstance(field, serializers.DictField) and child is not None:
        return {k: v for key, item in value.items() for k, v in _mistyped(child, item, f"{name}.{key}").items()}
    return {}


def _json_type(value) -> str:
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }.get(type(value), type(value).__name__)


def unknown_fields(serializer: serializers.Serializer, data, prefix: str = "") -> list[str]:
    """The dotted names of the keys of `data` that `serializer` has no writable field for, at
    every depth its fields describe (a free-form object, like an image's properties, takes any key)."""
    if not isinstance(data, dict):
        return []
    found = []
    for key, value in data.items():
        field, name = serializer.fields.get(key), f"{prefix}{key}"
        if field is None or field.read_only:
            found.append(name)
        elif isinstance(field, serializers.ListSerializer) or (
            isinstance(field, serializers.ListField) and isinstance(field.child, serializers.Serializer)
        ):
            for index, item in enumerate(value if isinstance(value, list) else []):
                found += unknown_fields(field.child, item, f"{name}.{index}.")
        elif isinstance(field, serializers.Serializer):
            found += unknown_fields(field, value, f"{name}.")
    return found


def jsonable(data):
    """Validated data back to plain JSON types (UUIDs, dates and decimals as strings)."""
    return json.loads(json.dumps(data, default=str))


def _camel(name: str) -> str:
    return "".join(part.title() for part in name.replace("-", "_").split("_"))


@cache
def type_create_serializer(action_type: ActionType, *, alias: bool) -> type:
    """The create body of one action type on /v2/image-actions, or on its alias (`input` only:
    the endpoint fixes the type; an `action_type` sent there must name it).

    Cached so that each schema component has exactly one class behind it.
    """
    name = action_type.name
    fields = {
        "input": action_type.input_serializer(),
        "labels": LabelsField(required=False),
        "notify_url": NotifyUrlField(required=False),
    }
    if not alias:
        fields["action_type"] = serializers.ChoiceField(choices=[name])
    description = action_type.description or f"Create a {name} action."
    return type(
        f"{_camel(name)}AliasCreate" if alias else f"{_camel(name)}ActionCreate",
        (serializers.Serializer,),
        {**fields, "__doc__": description, "__module__": __name__},
    )


def create_request_schema(fixed_action_type: str | None = None):
    """The create body, discriminated on action_type, with each registered type's input schema."""
    if fixed_action_type:
        action_type = get_action_type(fixed_action_type)
        return type_create_serializer(action_type, alias=True) if action_type else ImageActionCreateSerializer
    components = {name: type_create_serializer(at, alias=False) for name, at in sorted(action_types().items())}
    if not components:
        return ImageActionCreateSerializer
    return PolymorphicProxySerializer(
        component_name="ImageActionCreate", serializers=components, resource_type_field_name="action_type"
    )
