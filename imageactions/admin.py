"""The operators' console: every action with its step timeline, and the images."""

from django.contrib import admin, messages
from django.utils import timezone

from . import runner
from .dashboard import store_location
from .models import (
    ActionEvent,
    Image,
    ImageAction,
    ImageLocation,
    ImageTag,
    ProjectMember,
    ProjectQuota,
    WebhookDelivery,
    WebhookSecret,
)
from .pipeline import action_types

# The index links to the dashboard (imageactions/urls.py serves it at /admin/dashboard/).
admin.site.index_template = "admin/imageactions/index.html"


class ActionEventInline(admin.TabularInline):
    model = ActionEvent
    extra = 0
    can_delete = False
    fields = ["step", "status", "attempt", "worker", "started_at", "finished_at", "outcome", "message", "traceback"]
    readonly_fields = fields
    verbose_name = "step run"
    verbose_name_plural = "step timeline"

    def has_add_permission(self, request, obj=None):
        return False


class WebhookDeliveryInline(admin.TabularInline):
    model = WebhookDelivery
    extra = 0
    can_delete = False
    fields = ["sequence", "event_type", "event_id", "url", "state", "attempts", "next_attempt_at", "finished_at"]
    readonly_fields = fields
    verbose_name = "webhook notification"
    verbose_name_plural = "webhook notifications"

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(ImageAction)
class ImageActionAdmin(admin.ModelAdmin):
    list_display = ["id", "action_type", "status", "owner", "percent_done", "created_at", "updated_at", "short_message"]
    list_filter = ["action_type", "status", "error_code", "owner", "created_at", "finished_at"]
    # Ids of the images an action read or made (as its type declares), plus what each type adds.
    search_fields = ["id", "owner", "message", "request_id", "image_links__image_id"]
    date_hierarchy = "created_at"
    inlines = [ActionEventInline, WebhookDeliveryInline]

    def get_search_fields(self, request):
        added = (field for action_type in action_types().values() for field in action_type.admin_search_fields)
        return [*self.search_fields, *dict.fromkeys(added)]

    def get_search_results(self, request, queryset, search_term):
        queryset, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        return queryset, True  # image_links is a join: an action may match once per link

    actions = ["cancel_actions", "retry_failed_actions", "purge_expired_actions"]
    readonly_fields = [f.name for f in ImageAction._meta.get_fields() if f.concrete]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "id",
                    "action_type",
                    "status",
                    "owner",
                    "message",
                    "error_code",
                    "error_details",
                    "labels",
                    "notify_url",
                    "request_id",
                ]
            },
        ),
        ("Request and result", {"fields": ["input", "image_properties", "result"]}),
        ("Progress", {"fields": ["progress_step", "progress_done", "progress_total"]}),
        ("Times", {"fields": ["created_at", "updated_at", "started_at", "finished_at", "expires_at"]}),
        (
            "Runner",
            {
                "classes": ["collapse"],
                "fields": [
                    "step_index",
                    "step_state",
                    "attempt",
                    "restarts",
                    "worker",
                    "run_token",
                    "queued_at",
                    "heartbeat_at",
                    "cancel_requested",
                    "state",
                ],
            },
        ),
    ]

    def has_add_permission(self, request):
        return False

    @admin.display(description="done")
    def percent_done(self, action):
        percent = action.progress["percent"]
        return "" if percent is None else f"{percent:.0f}%"

    @admin.display(description="message")
    def short_message(self, action):
        return action.message[:80]

    @admin.action(description="Cancel selected actions")
    def cancel_actions(self, request, queryset):
        cancelled = sum(runner.request_cancel(action) for action in queryset)
        self.message_user(request, f"Cancel requested for {cancelled} action(s).", messages.SUCCESS)

    @admin.action(description="Retry selected failed actions")
    def retry_failed_actions(self, request, queryset):
        retried = sum(runner.retry_failed(action) for action in queryset)
        self.message_user(request, f"{retried} failed action(s) queued again.", messages.SUCCESS)

    @admin.action(description="Purge all expired actions")
    def purge_expired_actions(self, request, queryset):
        purged = runner.purge()
        self.message_user(request, f"Purged {purged} expired action(s) (as of {timezone.now():%H:%M:%S}).")


class ImageTagInline(admin.TabularInline):
    model = ImageTag
    extra = 0


class ImageLocationInline(admin.TabularInline):
    """The copies of an image's bytes, read-only: actions write them, deletes remove them."""

    model = ImageLocation
    extra = 0
    can_delete = False
    fields = ["store", "key", "where", "created_by_action", "created_at"]
    readonly_fields = fields

    @admin.display(description="where")
    def where(self, location):
        return store_location(location.store, location.key)

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "name",
        "status",
        "disk_format",
        "size",
        "owner",
        "visibility",
        "stores",
        "created_at",
    ]
    list_filter = ["status", "disk_format", "visibility", "locations__store", "owner", "created_at"]
    search_fields = ["id", "name", "owner", "os_hash_value", "locations__key"]
    readonly_fields = [
        "id",
        "size",
        "virtual_size",
        "checksum",
        "os_hash_algo",
        "os_hash_value",
        "created_by_action",
        "created_at",
        "updated_at",
    ]
    inlines = [ImageLocationInline, ImageTagInline]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("locations")

    @admin.display(description="stores")
    def stores(self, image):
        return ", ".join(image.stores)

    def has_add_permission(self, request):
        # An Image exists only once an action has verified and stored its bytes;
        # a hand-made record would point at no data.
        return False


@admin.register(ProjectMember)
class ProjectMemberAdmin(admin.ModelAdmin):
    list_display = ["user", "project"]
    list_filter = ["project"]
    search_fields = ["user__username", "project"]
    # A select of every user would not scale; the raw id widget looks users up on demand.
    raw_id_fields = ["user"]


@admin.register(ProjectQuota)
class ProjectQuotaAdmin(admin.ModelAdmin):
    """A project's quotas where they differ from the defaults (IMAGEACTIONS_QUOTA_*)."""

    list_display = ["project", "pending_actions", "image_count_total", "image_size_total", "image_stage_total"]
    search_fields = ["project"]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    """Every project's webhook notifications: which are late, which were given up, and why."""

    list_display = ["action", "sequence", "event_type", "state", "attempt_count", "next_attempt_at", "created_at"]
    list_filter = ["state", "event_type", "created_at"]
    search_fields = ["action__id", "action__owner", "event_id", "url"]
    readonly_fields = [f.name for f in WebhookDelivery._meta.get_fields() if f.concrete]

    @admin.display(description="attempts")
    def attempt_count(self, delivery):
        return len(delivery.attempts)

    def has_add_permission(self, request):
        return False


@admin.register(WebhookSecret)
class WebhookSecretAdmin(admin.ModelAdmin):
    """The projects' webhook signing secrets (a project reads and rotates its own through the API)."""

    list_display = ["project", "created_at", "rotated_at"]
    search_fields = ["project"]
    readonly_fields = ["project", "secret", "created_at", "rotated_at"]

    def has_add_permission(self, request):
        return False
