"""Channel-layer group names: the one place they are made."""

import hashlib


def thread_group(thread_id: str) -> str:
    """The channel-layer group of a thread's sockets, on every instance."""
    return f"thread.{thread_id}"


def user_group(user_id: int | str) -> str:
    """The channel-layer group of every socket of one user, on every instance."""
    return f"user.{user_id}"


def session_group(session_key: str) -> str:
    """The group of every socket of one browser session (cookie), on every instance."""
    # A digest, not the key: group names end up in Redis keys and channel names,
    # and a session key is a credential.
    digest = hashlib.sha256(session_key.encode()).hexdigest()[:32]
    return f"browser.{digest}"
