"""Admin for chat sessions and connection events: inspect, filter, follow; read-only.

Both are records of what happened: nothing is added, changed or deleted here (the
purge commands delete them, in batches). An event links to its session and its
user; a session links to its events. Users are filtered by typing a name, never
picked from a list of every user.
"""

from typing import Any
from urllib.parse import urlencode

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from sessions_app.models import ChatSession, ConnectionEvent

User = get_user_model()


def change_link(model: type[Model], pk: Any, text: str) -> str:
    """A link to the admin page of `model` `pk` labelled `text` ("-" without pk)."""
    if pk is None:
        return text or "-"
    opts = model._meta
    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[pk])
    return format_html('<a href="{}">{}</a>', url, text)


def changelist_link(model: type[Model], text: str, **lookups: Any) -> SafeString:
    """A link to `model`'s admin list filtered by `lookups`."""
    opts = model._meta
    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
    return format_html('<a href="{}?{}">{}</a>', url, urlencode(lookups), text)


def links(*pairs: SafeString) -> SafeString:
    """Several links on one line."""
    return format_html_join(" · ", "{}", ((link,) for link in pairs))


class InputFilter(admin.SimpleListFilter):
    """A list filter typed into a box, not picked from a list: one lookup.

    A SimpleListFilter because ModelAdmin.lookup_allowed accepts its parameter
    even across a relation (`owner__username`) when it names a field path.
    Subclasses (input_filter) set `parameter_name`, `lookup` and `title`.
    """

    template = "sessions_app/admin/input_filter.html"
    lookup = ""
    placeholder = ""

    def lookups(self, request: HttpRequest, model_admin: Any) -> list:
        return []

    def has_output(self) -> bool:
        return True

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = (self.value() or "").strip()
        return queryset.filter(**{self.lookup: value}) if value else queryset

    def choices(self, changelist: Any):
        # Every other parameter of the list rides along, so typing a name keeps
        # the search and the other filters.
        yield {
            "selected": bool(self.value()),
            "parameter": self.parameter_name,
            "value": self.value() or "",
            "placeholder": self.placeholder,
            "hidden": [
                (name, value)
                for name, value in changelist.params.items()
                if name != self.parameter_name
            ],
            "query_string": changelist.get_query_string(remove=[self.parameter_name]),
        }


def input_filter(
    field: str, title: str, placeholder: str = "", lookup: str = "exact"
) -> type[InputFilter]:
    """An InputFilter on a field path, e.g. ("user__username", "user", lookup=...)."""
    attributes = {
        "parameter_name": field,
        "lookup": f"{field}__{lookup}",
        "title": title,
        "placeholder": placeholder,
    }
    return type(f"InputFilter[{field}]", (InputFilter,), attributes)


class ReadOnlyAdmin(admin.ModelAdmin):
    """View only: no add, change or delete, in lists and on pages."""

    show_full_result_count = False  # no COUNT(*) of a whole table per page

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ChatSession)
class ChatSessionAdmin(ReadOnlyAdmin):
    """Sessions by status, owner and last seen, each with a link to its events."""

    list_display = (
        "id",
        "owner_link",
        "thread_key",
        "status",
        "connect_count",
        "resumed_count",
        "events",
        "last_seen_at",
        "created_at",
    )
    list_filter = (
        "status",
        input_filter("owner__username", "owner", "username", lookup="iexact"),
        "last_seen_at",
        "created_at",
    )
    search_fields = ("id", "owner__username", "thread_key")
    list_select_related = ("owner",)
    date_hierarchy = "last_seen_at"
    fields = (
        "id",
        "owner_link",
        "thread_key",
        "status",
        "connect_count",
        "resumed_count",
        "created_at",
        "last_seen_at",
        "events",
    )
    readonly_fields = fields

    @admin.display(description="owner", ordering="owner__username")
    def owner_link(self, obj: ChatSession) -> str:
        return change_link(User, obj.owner_id, obj.owner.get_username())

    @admin.display(description="events")
    def events(self, obj: ChatSession) -> SafeString:
        return links(
            changelist_link(ConnectionEvent, "this session's", session_key=obj.pk),
            changelist_link(
                ConnectionEvent,
                "the owner's",
                user__username=obj.owner.get_username(),
            ),
        )


@admin.register(ConnectionEvent)
class ConnectionEventAdmin(ReadOnlyAdmin):
    """Connects and disconnects by kind, close code, reason, session, user, date."""

    list_display = (
        "created_at",
        "kind",
        "session_link",
        "user_link",
        "thread_key",
        "code",
        "reason",
        "duration_s",
        "instance",
    )
    list_filter = (
        "kind",
        "code",
        "reason",
        input_filter("session_key", "session", "session id"),
        input_filter("user__username", "user", "username", lookup="iexact"),
        input_filter("instance", "instance", "instance id"),
        "created_at",
    )
    search_fields = ("session_key", "user__username", "thread_key")
    list_select_related = ("user",)
    date_hierarchy = "created_at"
    fields = (*list_display, "related")
    readonly_fields = fields

    @admin.display(description="session", ordering="session_key")
    def session_link(self, obj: ConnectionEvent) -> str:
        # A refused socket may name a session that is not its user's: no link.
        return change_link(ChatSession, obj.session_id, obj.session_key)

    @admin.display(description="user", ordering="user__username")
    def user_link(self, obj: ConnectionEvent) -> str:
        username = obj.user.get_username() if obj.user else ""
        return change_link(User, obj.user_id, username)

    @admin.display(description="other events")
    def related(self, obj: ConnectionEvent) -> SafeString:
        mine = changelist_link(
            ConnectionEvent, "this session's", session_key=obj.session_key
        )
        found = [mine]
        if obj.user is not None:
            username = obj.user.get_username()
            found.append(
                changelist_link(ConnectionEvent, "this user's", user__username=username)
            )
        return links(*found)
