"""Log formatting: one JSON object per line, or readable text, both with the instance."""

import logging

from django.conf import settings
from pythonjsonlogger.json import JsonFormatter as _BaseJsonFormatter


class InstanceFilter(logging.Filter):
    """Stamp every record with this process's instance id (PROTOCOL.md §3)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "instance"):
            record.instance = getattr(settings, "INSTANCE_ID", "-")
        return True


class JsonFormatter(_BaseJsonFormatter):
    """python-json-logger with the field names our log tooling reads."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("fmt", "%(asctime)s %(levelname)s %(name)s %(message)s")
        kwargs.setdefault(
            "rename_fields",
            {"asctime": "timestamp", "levelname": "level", "name": "logger"},
        )
        kwargs.setdefault("timestamp", False)
        super().__init__(*args, **kwargs)

    def add_fields(self, log_record, record, message_dict) -> None:
        super().add_fields(log_record, record, message_dict)
        # Records without an explicit event are named by their logger.
        log_record.setdefault("event", getattr(record, "event", None) or record.name)
