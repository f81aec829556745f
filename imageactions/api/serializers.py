"""Serializers of the ImageAction resource; each action type's input comes from its registration."""

import json

from django.utils.functional import lazy
from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema_field
from rest_framework import serializers

from ..choices import ActionStatus
from ..models import ImageAction
from ..pipeline import action_types, get_action_type, step_statuses


def _status_choices():
    return [ActionStatus.WAITING, *step_statuses(), *(s for s in ActionStatus if s != ActionStatus.WAITING)]


class ProgressSerializer(serializers.Serializer):
    step = serializers.CharField(allow_null=True, help_text="The step now running or last run.")
    bytes_done = serializers.IntegerField()
    bytes_total = serializers.IntegerField(allow_null=True)
    percent = serializers.FloatField(allow_null=True)


@extend_schema_field({"type": "object", "additionalProperties": True, "description": "The validated input."})
class InputField(serializers.JSONField):
    pass


class ImageActionSerializer(serializers.ModelSerializer):
    """An action as users see it; `owner` only for staff."""

    status = serializers.ChoiceField(choices=lazy(_status_choices, list)(), read_only=True)
    input = InputField(read_only=True)
    image_properties = serializers.DictField(read_only=True)
    result = serializers.DictField(read_only=True)
    progress = ProgressSerializer(read_only=True)
    owner = serializers.CharField(read_only=True, required=False, help_text="Shown to staff only.")

    class Meta:
        model = ImageAction
        fields = [
            "id", "action_type", "status", "owner", "input", "image_properties", "result", "message",
            "progress", "created_at", "updated_at", "started_at", "finished_at", "expires_at",
        ]
        read_only_fields = fields

    def to_representation(self, instance):
        data = super().to_representation(instance)
        request = self.context.get("request")
        if not (request and request.user.is_staff):
            data.pop("owner", None)
        return data


class ImageActionCreateSerializer(serializers.Serializer):
    """`{"action_type": ..., "input": {...}}`; the input is validated by the type's serializer."""

    action_type = serializers.CharField()
    input = serializers.JSONField()

    def __init__(self, *args, fixed_action_type: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fixed_action_type = fixed_action_type
        if fixed_action_type:
            self.fields["action_type"].required = False

    def validate_action_type(self, value):
        if self.fixed_action_type and value != self.fixed_action_type:
            raise serializers.ValidationError(
                f"This endpoint creates {self.fixed_action_type!r} actions; got {value!r}."
            )
        if get_action_type(value) is None:
            known = ", ".join(sorted(action_types())) or "none"
            raise serializers.ValidationError(f"Unknown action_type {value!r}. Known action types: {known}.")
        return value

    def validate(self, attrs):
        name = attrs.get("action_type", self.fixed_action_type)
        if not isinstance(attrs["input"], dict):
            raise serializers.ValidationError({"input": ["Expected a JSON object."]})
        input_serializer = get_action_type(name).input_serializer(data=attrs["input"], context=self.context)
        if not input_serializer.is_valid():
            raise serializers.ValidationError({"input": input_serializer.errors})
        return {"action_type": name, "input": _jsonable(input_serializer.validated_data)}


def _jsonable(data):
    """Validated data back to plain JSON types (UUIDs, dates and decimals as strings)."""
    return json.loads(json.dumps(data, default=str))


def create_request_schema(fixed_action_type: str | None = None):
    """The create body, discriminated on action_type, with each registered type's input schema."""
    components = {}
    for name, action_type in sorted(action_types().items()):
        if fixed_action_type and name != fixed_action_type:
            continue
        components[name] = type(
            f"{name.title().replace('_', '')}ActionCreateSerializer",
            (serializers.Serializer,),
            {
                "action_type": serializers.ChoiceField(choices=[name], required=fixed_action_type is None),
                "input": action_type.input_serializer(),
                "__doc__": action_type.description or f"Create a {name} action.",
            },
        )
    if fixed_action_type:
        return next(iter(components.values()), ImageActionCreateSerializer)
    return PolymorphicProxySerializer(
        component_name="ImageActionCreate", serializers=components, resource_type_field_name="action_type"
    )
