"""Admin for chat sessions and connection events: inspect and filter, read-only."""

from django.contrib import admin

from sessions_app.models import ChatSession, ConnectionEvent


class ConnectionEventInline(admin.TabularInline):
    """A session's newest connection events."""

    model = ConnectionEvent
    fields = ("created_at", "kind", "code", "reason", "duration_s", "instance")
    readonly_fields = fields
    ordering = ("-created_at",)
    extra = 0
    max_num = 0
    can_delete = False


@admin.register(ChatSession)
class ChatSessionAdmin(admin.ModelAdmin):
    """Sessions by status, owner and last seen; status is the one editable field."""

    list_display = (
        "id",
        "owner",
        "thread_key",
        "status",
        "connect_count",
        "resumed_count",
        "last_seen_at",
        "created_at",
    )
    list_filter = ("status", "last_seen_at", "created_at", "owner")
    search_fields = ("id", "owner__username", "thread_key")
    list_select_related = ("owner",)
    date_hierarchy = "last_seen_at"
    readonly_fields = (
        "id",
        "owner",
        "thread_key",
        "created_at",
        "last_seen_at",
        "connect_count",
        "resumed_count",
    )
    inlines = [ConnectionEventInline]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(ConnectionEvent)
class ConnectionEventAdmin(admin.ModelAdmin):
    """Connects and disconnects: filter by kind, close code, reason, instance, date."""

    list_display = (
        "created_at",
        "kind",
        "session_key",
        "user",
        "thread_key",
        "code",
        "reason",
        "duration_s",
        "instance",
    )
    list_filter = ("kind", "code", "reason", "instance", "created_at")
    search_fields = ("session_key", "user__username", "thread_key")
    list_select_related = ("user",)
    date_hierarchy = "created_at"

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
