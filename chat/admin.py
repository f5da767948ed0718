"""Admin for threads and messages: threads are edited, history only inspected.

A thread's page links to its messages, a paginated and searchable list, rather
than inlining every message it ever had; members and creator are picked by
typing a name (autocomplete), never from a list of every user.
"""

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.http import HttpRequest
from django.utils.safestring import SafeString

from chat.models import Message, Thread
from sessions_app.admin import (
    ReadOnlyAdmin,
    change_link,
    changelist_link,
    input_filter,
)

User = get_user_model()


@admin.register(Thread)
class ThreadAdmin(admin.ModelAdmin):
    """Threads: privacy and members are edited here; deleting erases history: no."""

    list_display = ("id", "private", "last_seq", "created_by", "messages", "created_at")
    list_filter = ("private", "created_at")
    search_fields = ("id", "members__username")
    autocomplete_fields = ("members", "created_by")
    # The epoch changes only through thread_epoch_bump (docs/OPERATIONS.md).
    readonly_fields = ("last_seq", "epoch", "created_at", "messages")
    show_full_result_count = False

    @admin.display(description="messages")
    def messages(self, obj: Thread) -> SafeString:
        # seq is gap-free from 1, so last_seq is the count: no COUNT(*) per row.
        return changelist_link(Message, f"{obj.last_seq} messages", thread__id=obj.pk)

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Message)
class MessageAdmin(ReadOnlyAdmin):
    """Messages: by thread and sender (typed), date and text search; read-only."""

    list_display = (
        "thread_link",
        "seq",
        "user_link",
        "client_id",
        "short_text",
        "created_at",
    )
    list_filter = (
        input_filter("thread__id", "thread", "thread id"),
        input_filter("user__username", "user", "username", lookup="iexact"),
        "created_at",
    )
    search_fields = ("text", "client_id", "user__username", "thread__id")
    list_select_related = ("user",)
    date_hierarchy = "created_at"
    # Newest first within a thread, on the unique (thread, seq) index.
    ordering = ("thread", "-seq")
    fields = ("thread_link", "seq", "user_link", "client_id", "text", "created_at")
    readonly_fields = fields

    @admin.display(description="thread", ordering="thread")
    def thread_link(self, obj: Message) -> str:
        return change_link(Thread, obj.thread_id, obj.thread_id)

    @admin.display(description="user", ordering="user__username")
    def user_link(self, obj: Message) -> str:
        return change_link(User, obj.user_id, obj.user.get_username())

    @admin.display(description="text")
    def short_text(self, obj: Message) -> str:
        return obj.text[:80]
