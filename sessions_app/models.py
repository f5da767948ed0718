"""Chat sessions (a client-chosen id reused across reconnects) and connection events."""

from django.conf import settings
from django.db import models


class ChatSession(models.Model):
    """A client session: owned by its first user, reused across reconnects and tabs."""

    class Status(models.TextChoices):
        ACTIVE = "active"
        IDLE = "idle"
        CLOSED = "closed"

    id = models.CharField(primary_key=True, max_length=64)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_sessions"
    )
    # The thread of the newest connect, by id: sessions know no chat models.
    thread_key = models.CharField(max_length=64, blank=True)
    status = models.CharField(
        max_length=8, choices=Status.choices, default=Status.ACTIVE, db_index=True
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(db_index=True)
    connect_count = models.PositiveIntegerField(default=0)
    resumed_count = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-last_seen_at"]

    def __str__(self) -> str:
        return self.id


class ConnectionEvent(models.Model):
    """One socket opening or closing, for audit and the admin."""

    class Kind(models.TextChoices):
        CONNECT = "connect"
        DISCONNECT = "disconnect"

    session = models.ForeignKey(
        ChatSession,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="events",
    )
    # Kept apart from the FK: a refused socket may name a session that is not ours.
    session_key = models.CharField(max_length=64, blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="connection_events",
    )
    thread_key = models.CharField(max_length=64, blank=True)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    code = models.PositiveIntegerField(null=True, blank=True, db_index=True)
    reason = models.CharField(max_length=32, blank=True)
    duration_s = models.FloatField(null=True, blank=True)
    instance = models.CharField(max_length=128, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.kind} {self.session_key} {self.code or ''}".strip()
