"""When a login ends everywhere: a user deactivated through Django, a logout.

`login_revoked` is sent with `user_id` (the user was deactivated: all of their
sockets) or `session_key` (that browser session logged out: its sockets). The
layer above (chat.logins) closes the sockets it names on every instance. A change
made behind Django's back (SQL) sends nothing: it takes effect at the next connect.
"""

from typing import Any

from django.dispatch import Signal

login_revoked = Signal()

# The is_active a user instance was loaded or last saved with.
_LOADED_ACTIVE = "_emergence_loaded_active"


def user_loaded(sender: Any, instance: Any, **kwargs: Any) -> None:
    """post_init: remember is_active as loaded (no query: a deferred field is None)."""
    setattr(instance, _LOADED_ACTIVE, instance.__dict__.get("is_active"))


def user_saved(
    sender: Any, instance: Any, created: bool, update_fields: Any, **kwargs: Any
) -> None:
    """post_save: a user turned inactive revokes their logins; else nothing is done."""
    now = instance.__dict__.get("is_active")
    was = getattr(instance, _LOADED_ACTIVE, None)
    setattr(instance, _LOADED_ACTIVE, now)
    if created or now is not False or was is False:
        return  # unchanged, or still active: the common save costs nothing more
    if update_fields is not None and "is_active" not in update_fields:
        return
    login_revoked.send(sender=sender, user_id=instance.pk)


def user_logged_out(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    """user_logged_out (sent before the session is flushed): revoke that session."""
    session = getattr(request, "session", None)
    key = getattr(session, "session_key", None)
    if key:
        login_revoked.send(sender=sender, session_key=key)
