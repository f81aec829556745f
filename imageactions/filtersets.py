"""Query filters for actions (django-filter): by type, status (or `pending`), dates, image."""

import django_filters
from django.db.models import Q
from rest_framework.exceptions import ValidationError

from .choices import PENDING, TERMINAL_STATUSES
from .models import ImageAction




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

    class Meta:
        model = ImageAction
        fields = []

    def filter_action_type(self, queryset, name, value):
        return queryset.filter(action_type__in=_values(self.request, "action_type"))

    def filter_status(self, queryset, name, value):
        statuses = _values(self.request, "status")
        wanted = Q()
        if PENDING in statuses:
            wanted |= ~Q(status__in=TERMINAL_STATUSES)
        others = [s for s in statuses if s != PENDING]
        if others:
            wanted |= Q(status__in=others)
        return queryset.filter(wanted)

    def filter_image_id(self, queryset, name, value):
        text = str(value)
        return queryset.filter(Q(input__image_id=text) | Q(result__image_ref=text))

    @property
    def qs(self):
        if "ordering" in self.request.GET:
            allowed = {"created_at", "-created_at", "updated_at", "-updated_at"}
            if self.request.GET["ordering"] not in allowed:
                raise ValidationError({"ordering": [f"Must be one of: {', '.join(sorted(allowed))}."]})
        return super().qs
