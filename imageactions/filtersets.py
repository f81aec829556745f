"""Query filters (django-filter) for actions: type, status or `pending`, dates, the images they touch."""

import django_filters
from django.db.models import Exists, OuterRef, Q, TextField
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast
from rest_framework.exceptions import ValidationError

from .choices import PENDING, TERMINAL_STATUSES, ErrorCode
from .models import ActionImage, ImageAction
from .validators import LABEL_KEY

ORDERINGS = ("created_at", "-created_at", "updated_at", "-updated_at")


def _values(request, name) -> list[str]:
    return [item.strip() for raw in request.GET.getlist(name) for item in raw.split(",") if item.strip()]


class ImageActionFilterSet(django_filters.FilterSet):
    action_type = django_filters.CharFilter(
        method="filter_action_type", help_text="One or more action types, comma-separated or repeated."
    )
    status = django_filters.CharFilter(
        method="filter_status",
        help_text="One or more statuses, comma-separated or repeated; `pending` means not yet ended.",
    )
    created_after = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")
    updated_after = django_filters.IsoDateTimeFilter(field_name="updated_at", lookup_expr="gte")
    image_id = django_filters.UUIDFilter(method="filter_image_id", help_text="Actions that read or made this image.")
    error_code = django_filters.CharFilter(
        method="filter_error_code",
        help_text="Failed actions with one of these error codes (comma-separated or repeated).",
    )
    label = django_filters.CharFilter(
        method="filter_label",
        help_text="KEY=VALUE: actions with this label; KEY: actions with a label of that key. Repeat for all of several.",
    )

    class Meta:
        model = ImageAction
        fields = []

    def filter_action_type(self, queryset, name, value):
        from .pipeline import action_types

        wanted, known = _values(self.request, "action_type"), sorted(action_types())
        unknown = [kind for kind in wanted if kind not in known]
        # Actions of a type whose app was removed stay listable by its name.
        unknown = set(unknown) - set(queryset.filter(action_type__in=unknown).values_list("action_type", flat=True))
        if unknown:
            raise ValidationError(
                {"action_type": [f"Unknown action type {min(unknown)!r}. Use one or more of: {', '.join(known)}."]}
            )
        return queryset.filter(action_type__in=wanted)

    def filter_status(self, queryset, name, value):
        from .api.serializers import known_statuses

        statuses = _values(self.request, "status")
        allowed = [*known_statuses(), PENDING]
        unknown = [s for s in statuses if s not in allowed]
        if unknown:
            raise ValidationError(
                {"status": [f"Unknown status {unknown[0]!r}. Use one or more of: {', '.join(allowed)}."]}
            )
        wanted = Q()
        if PENDING in statuses:
            wanted |= ~Q(status__in=TERMINAL_STATUSES)
        others = [s for s in statuses if s != PENDING]
        if others:
            wanted |= Q(status__in=others)
        return queryset.filter(wanted)

    def filter_error_code(self, queryset, name, value):
        codes = _values(self.request, "error_code")
        unknown = [code for code in codes if code not in ErrorCode.values]
        if unknown:
            raise ValidationError(
                {"error_code": [f"Unknown error code {unknown[0]!r}. The codes: {', '.join(ErrorCode.values)}."]}
            )
        return queryset.filter(error_code__in=codes)

    def filter_label(self, queryset, name, value):
        for index, wanted in enumerate(self.request.GET.getlist("label")):
            key, has_value, label_value = wanted.partition("=")
            if not LABEL_KEY.fullmatch(key):
                raise ValidationError({"label": [f"{wanted!r}: expected KEY=VALUE or KEY, KEY as labels have it."]})
            if has_value:
                # The key as a value, never as part of a lookup name ("regex" is a key here).
                name = f"label_{index}"
                text = Cast(KeyTextTransform(key, "labels"), output_field=TextField())  # compared as text
                queryset = queryset.alias(**{name: text}).filter(**{name: label_value})
            else:
                queryset = queryset.filter(labels__has_key=key)
        return queryset

    def filter_image_id(self, queryset, name, value):
        return queryset.filter(Exists(ActionImage.objects.filter(action=OuterRef("pk"), image_id=value)))

    @property
    def qs(self):
        if "ordering" in self.request.GET:
            ordering = self.request.GET["ordering"]
            if ordering not in ORDERINGS:
                raise ValidationError(
                    {"ordering": [f"Unknown ordering {ordering!r}. Use one of: {', '.join(ORDERINGS)}."]}
                )
        return super().qs
