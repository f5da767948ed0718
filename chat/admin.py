"""Admin for threads and messages: inspect and filter; history is read-only."""

from django.contrib import admin

from chat.models import Message, Thread


class MessageInline(admin.TabularInline):
    """A thread's messages, newest last; messages are history, not editable."""

    model = Message
    fields = ("seq", "user", "client_id", "text", "created_at")
    readonly_fields = fields
    ordering = ("-seq",)
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = True


@admin.register(Thread)
class ThreadAdmin(admin.ModelAdmin):
    """Threads with their members and messages."""

    list_display = ("id", "private", "last_seq", "created_by", "created_at")
    list_filter = ("private", "created_at")
    search_fields = ("id", "members__username")
    filter_horizontal = ("members",)
    readonly_fields = ("last_seq", "created_at")
    inlines = [MessageInline]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    """Messages: filter by thread, user and date; read-only."""

    list_display = ("thread", "seq", "user", "client_id", "short_text", "created_at")
    list_filter = ("created_at", "thread", "user")
    search_fields = ("text", "client_id", "user__username", "thread__id")
    list_select_related = ("user", "thread")
    date_hierarchy = "created_at"
    readonly_fields = ("thread", "seq", "client_id", "user", "text", "created_at")

    @admin.display(description="text")
    def short_text(self, obj: Message) -> str:
        return obj.text[:80]

    def has_add_permission(self, request) -> bool:
        return False
