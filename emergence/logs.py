"""Log formatting: a JSON object per line, or readable text, both with the instance."""

import logging
import logging.config
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from pythonjsonlogger.json import JsonFormatter as _BaseJsonFormatter


def _instance() -> str:
    return getattr(settings, "INSTANCE_ID", "-")


def configure(logging_settings: dict[str, Any]) -> None:
    """LOGGING_CONFIG: dictConfig, with Python warnings routed through logging too."""
    # Django no longer captures warnings: without this they reach stderr as raw
    # two-line text, the only lines of a JSON log that are not JSON.
    logging.captureWarnings(True)
    logging.config.dictConfig(logging_settings)


class InstanceFilter(logging.Filter):
    """Stamp every record with this process's instance id (PROTOCOL.md §3)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "instance", None):
            record.instance = _instance()
        return True


class JsonFormatter(_BaseJsonFormatter):
    """python-json-logger with the field names our log tooling reads."""

    # Every line: `timestamp` (ISO 8601, UTC, ms), `level`, `logger`, `message`,
    # `event` (the `event` extra, else the logger's name), `instance`, then the
    # record's extras (PROTOCOL.md §3: session_id, user, thread_id, code, reason,
    # duration_s ...); a traceback is the string field `exc_info`.

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("fmt", "%(levelname)s %(name)s %(message)s")
        kwargs.setdefault("rename_fields", {"levelname": "level", "name": "logger"})
        kwargs.setdefault("timestamp", False)
        super().__init__(*args, **kwargs)

    def add_fields(
        self,
        log_data: dict[str, Any],
        record: logging.LogRecord,
        message_dict: dict[str, Any],
    ) -> None:
        created = datetime.fromtimestamp(record.created, tz=UTC)
        log_data["timestamp"] = created.isoformat(timespec="milliseconds")
        super().add_fields(log_data, record, message_dict)
        # Records without an explicit event are named by their logger.
        if not log_data.get("event"):
            log_data["event"] = record.name
        # Present even when the handler's InstanceFilter is not attached.
        if not log_data.get("instance"):
            log_data["instance"] = _instance()


class RedisOutageFilter(logging.Filter):
    """Downgrade a library's ERROR-with-traceback for a Redis outage to a WARNING.

    channels_redis.pubsub logs every failed reconnect of its receive task at ERROR
    with a traceback while Redis is down: one outage, hundreds of ERRORs. The outage
    itself is reported by readiness and by our channel_layer_* events.
    """

    LIBRARIES = ("channels_redis",)

    def filter(self, record: logging.LogRecord) -> bool:
        from sessions_app.shared import REDIS_DOWN

        exc = record.exc_info[1] if record.exc_info else None
        if (
            record.name.startswith(self.LIBRARIES)
            and record.levelno >= logging.ERROR
            and isinstance(exc, REDIS_DOWN)
        ):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg = f"{record.getMessage()}: {exc}"
            record.args = ()
            record.exc_info = record.exc_text = None
            record.event = "channel_layer_unavailable"
        return True
