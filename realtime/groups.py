"""Channel-layer group names: the one place they are made."""


def thread_group(thread_id: str) -> str:
    """The channel-layer group of a thread's sockets, on every instance."""
    return f"thread.{thread_id}"
