"""Threads (rooms) and their messages, with a gap-free per-thread sequence."""

import secrets

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models

SLUG_VALIDATOR = RegexValidator(r"^[A-Za-z0-9_-]{1,64}$")
EPOCH_VALIDATOR = RegexValidator(r"^[A-Za-z0-9_-]{1,32}$")


def new_epoch() -> str:
    """A fresh thread epoch: 16 random characters of [A-Za-z0-9_-]."""
    return secrets.token_urlsafe(12)


class Thread(models.Model):
    """A room: the unit of broadcast and of message ordering."""

    id = models.CharField(primary_key=True, max_length=64, validators=[SLUG_VALIDATOR])
    private = models.BooleanField(default=False)
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, related_name="chat_threads", blank=True
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    # Highest seq handed out; bumped under a row lock by message_create.
    last_seq = models.PositiveBigIntegerField(default=0)
    # Changes whenever the history may not continue what clients hold (a thread
    # made again, a restore): clients holding another epoch reload (PROTOCOL.md).
    epoch = models.CharField(
        max_length=32, default=new_epoch, validators=[EPOCH_VALIDATOR]
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.id


class Message(models.Model):
    """One chat message; seq is gap-free per thread, client_id idempotent per user."""

    thread = models.ForeignKey(
        Thread, on_delete=models.CASCADE, related_name="messages"
    )
    seq = models.PositiveBigIntegerField()
    client_id = models.CharField(max_length=64)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_messages"
    )
    text = models.TextField(max_length=4000)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["thread", "seq"]
        constraints = [
            models.UniqueConstraint(
                fields=["thread", "seq"], name="message_thread_seq"
            ),
            models.UniqueConstraint(
                fields=["thread", "user", "client_id"], name="message_client_id"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.thread_id}#{self.seq}"
