"""Query filters (django-filter) for actions (type, status or `pending`, dates, image) and for images."""

import django_filters
from django.db.models import Exists, OuterRef, Q
from rest_framework.exceptions import ValidationError

from .choices import PENDING, TERMINAL_STATUSES, ImageStatus, Visibility
from .models import ActionImage, Image, ImageAction, ImageTag

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

    class Meta:
        model = ImageAction
        fields = []

    def filter_action_type(self, queryset, name, value):
        return queryset.filter(action_type__in=_values(self.request, "action_type"))

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


class ImageFilterSet(django_filters.FilterSet):
    """Filters of GET /v2/images; list-valued ones take repeated or comma-separated values."""

    name = django_filters.CharFilter(field_name="name", help_text="Images with exactly this name.")
    q = django_filters.CharFilter(field_name="name", lookup_expr="icontains", help_text="Name contains (any case).")
    status = django_filters.CharFilter(method="filter_status", help_text="One or more statuses.")
    disk_format = django_filters.CharFilter(method="filter_disk_format", help_text="One or more disk formats.")
    visibility = django_filters.CharFilter(method="filter_visibility", help_text="private or shared.")
    tag = django_filters.CharFilter(method="filter_tag", help_text="Repeatable: images that have all these tags.")
    created_after = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Image
        fields = []

    def filter_status(self, queryset, name, value):
        return queryset.filter(status__in=self._choices("status", ImageStatus))

    def filter_visibility(self, queryset, name, value):
        return queryset.filter(visibility__in=self._choices("visibility", Visibility))

    def filter_disk_format(self, queryset, name, value):
        return queryset.filter(disk_format__in=_values(self.request, "disk_format"))

    def filter_tag(self, queryset, name, value):
        # Tags may contain commas, so each repetition of `tag` is one whole tag.
        for tag in {t for t in self.request.GET.getlist("tag") if t}:
            queryset = queryset.filter(Exists(ImageTag.objects.filter(image=OuterRef("pk"), name=tag)))
        return queryset

    def _choices(self, name, choices) -> list[str]:
        values = _values(self.request, name)
        unknown = [v for v in values if v not in choices.values]
        if unknown:
            raise ValidationError({name: [f"Unknown {name} {unknown[0]!r}; use one of: {', '.join(choices.values)}."]})
        return values
