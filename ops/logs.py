"""Log formatting: a JSON object per line, or readable text, both with the instance."""

import asyncio
import atexit
import logging
import logging.config
import logging.handlers
import queue
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


def start_log_queue() -> None:
    """With LOG_QUEUE, have a thread format and write the records from now on."""
    # Called by the server before it serves (emergence/server.py), never at setup:
    # a command has no event loop to protect, and a record queued at its exit was
    # written after Django's own last words (a CommandError's message).
    if settings.LOG_QUEUE:
        _move_root_handlers_to_thread()


class _RecordQueueHandler(logging.handlers.QueueHandler):
    """Hand records to the writer thread as they are: only the message is fixed."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # The stdlib version formats here, on the caller's thread, and drops
        # exc_info; the JSON formatter needs the record's fields and traceback.
        # Arguments are rendered now, before the caller can change them.
        record.msg = record.getMessage()
        record.args = None
        return record


_listener: logging.handlers.QueueListener | None = None


def _move_root_handlers_to_thread() -> None:
    """Format and write log records in one thread instead of on the event loop."""
    # A disconnect storm logs a few records per socket (ws_disconnect, the detach
    # events, the access log): formatting them as JSON and writing them to a pipe on
    # the loop delayed everything else, liveness included; a stuck log reader would
    # have stopped the loop. Unbounded: records are never dropped, and the thread
    # drains the queue at exit.
    global _listener
    root = logging.getLogger()
    # Called again without a new dictConfig in between, the handlers to keep are the
    # running listener's (root holds only its queue handler then).
    previous = list(_listener.handlers) if _listener is not None else []
    _stop_listener()
    queued = [h for h in root.handlers if isinstance(h, _RecordQueueHandler)]
    handlers = [h for h in root.handlers if h not in queued] or previous
    for handler in queued:
        root.removeHandler(handler)
    if not handlers:
        return
    records: queue.SimpleQueue = queue.SimpleQueue()
    for handler in handlers:
        root.removeHandler(handler)
    root.addHandler(_RecordQueueHandler(records))
    _listener = logging.handlers.QueueListener(
        records, *handlers, respect_handler_level=True
    )
    _listener.start()


@atexit.register
def _stop_listener() -> None:
    """Write out every queued record before the process ends."""
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None


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
        from ops.redis_client import REDIS_DOWN

        exc = record.exc_info[1] if record.exc_info else None
        if record.name.startswith(self.LIBRARIES) and record.levelno >= logging.ERROR:
            if isinstance(exc, REDIS_DOWN):
                self._downgrade(record, exc, "channel_layer_unavailable")
            elif isinstance(exc, asyncio.CancelledError):
                # channels_redis.pubsub unsubscribes a consumer's channel when its
                # receive is cancelled, and logs "Unexpected exception while
                # cleaning-up channel" if that is cancelled too: the app was killed
                # (Daphne's close timeout, shutdown) after its client had gone.
                # A client leaving is never an ERROR (PROTOCOL.md §3); what is left
                # is one stale subscription until the layer's connection closes.
                self._downgrade(record, "cancelled", "channel_cleanup_cancelled")
        return True

    @staticmethod
    def _downgrade(record: logging.LogRecord, why: object, event: str) -> None:
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.msg = f"{record.getMessage()}: {why}"
        record.args = ()
        record.exc_info = record.exc_text = None
        record.event = event


class ClientErrorFilter(logging.Filter):
    """Log what a client's bad request makes Django say at WARNING, no traceback.

    Django logs every SuspiciousOperation (a foreign Host: DisallowedHost; a body
    over DATA_UPLOAD_MAX_MEMORY_SIZE: RequestDataTooBig; too many fields ...) on
    `django.security.<name>` at ERROR with a traceback, for an answer that is a
    400; its ASGI handler logs an undecodable query string at WARNING, also with a
    traceback. A client is never an ERROR (PROTOCOL.md §3). A 5xx is untouched.
    https://docs.djangoproject.com/en/5.2/ref/logging/#django-security
    """

    def filter(self, record: logging.LogRecord) -> bool:
        status = getattr(record, "status_code", None)
        client_error = isinstance(status, int) and 400 <= status < 500
        if record.name.startswith("django.security.") and client_error:
            if record.levelno >= logging.ERROR:
                record.levelno, record.levelname = logging.WARNING, "WARNING"
                record.event = "suspicious_request"
                record.kind = record.name.rpartition(".")[2]
            record.exc_info = record.exc_text = None
        elif record.name == "django.request" and record.levelno < logging.ERROR:
            record.exc_info = record.exc_text = None
        return True
