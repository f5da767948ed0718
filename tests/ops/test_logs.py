"""ops.logs (the JSON formatter) and emergence.server (Daphne's access log)."""

import asyncio
import json
import logging
import sys
from datetime import UTC, datetime

import pytest
from django.conf import settings

from emergence.server import AccessLog, LoggingCommandLineInterface, LoggingServer
from ops.logs import (
    ClientErrorFilter,
    InstanceFilter,
    JsonFormatter,
    RedisOutageFilter,
)


def make_record(msg="hello %s", args=("world",), level=logging.INFO, **extra):
    record = logging.LogRecord("chat.consumers", level, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    return record


def formatted(record) -> dict:
    line = JsonFormatter().format(record)
    assert "\n" not in line
    return json.loads(line)


def test_base_fields_and_instance_without_the_filter():
    out = formatted(make_record())
    assert out["level"] == "INFO"
    assert out["logger"] == "chat.consumers"
    assert out["message"] == "hello world"
    assert out["event"] == "chat.consumers"
    assert out["instance"] == settings.INSTANCE_ID
    stamp = datetime.fromisoformat(out["timestamp"])
    assert stamp.tzinfo == UTC
    assert abs((datetime.now(tz=UTC) - stamp).total_seconds()) < 60


def test_structured_fields_of_the_disconnect_record():
    fields = {
        "event": "ws_disconnect",
        "session_id": "s1",
        "user": "alice",
        "thread_id": "main",
        "code": 1006,
        "reason": "abnormal_closure",
        "duration_s": 1.25,
        "instance": "a",
    }
    out = formatted(make_record("ws_disconnect", (), **fields))
    assert {k: out[k] for k in fields} == fields


def test_filter_stamps_the_instance_and_keeps_an_explicit_one():
    record = make_record()
    assert InstanceFilter().filter(record)
    assert record.instance == settings.INSTANCE_ID
    other = make_record(instance="b")
    InstanceFilter().filter(other)
    assert formatted(other)["instance"] == "b"


def test_exception_is_a_string_field_and_multiline_stays_one_line():
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        record = make_record("failed\ntwice", (), level=logging.ERROR)
        record.exc_info = sys.exc_info()
    out = formatted(record)
    assert isinstance(out["exc_info"], str)
    assert out["exc_info"].startswith("Traceback (most recent call last):")
    assert "ValueError: bad\nthing" in out["exc_info"]
    assert out["message"] == "failed\ntwice"


def test_unserialisable_extras_do_not_break_the_line():
    out = formatted(
        make_record(request=object(), when=datetime(2025, 1, 1, tzinfo=UTC))
    )
    assert out["request"].startswith("<object object")
    assert out["when"].startswith("2025-01-01")


# --- Daphne's access log -----------------------------------------------------------


@pytest.fixture
def access(caplog):
    caplog.set_level(logging.INFO, logger="daphne.access")

    def records():
        return [r for r in caplog.records if r.name == "daphne.access"]

    return records


def test_http_access_record(access):
    AccessLog()(
        "http",
        "complete",
        {
            "path": "/health/liveness",
            "status": 200,
            "method": "GET",
            "client": "127.0.0.1:5000",
            "time_taken": 0.0123,
            "size": 52,
        },
    )
    [record] = access()
    assert record.getMessage() == '127.0.0.1:5000 "GET /health/liveness" 200 52 0.012s'
    assert record.levelname == "INFO"
    assert (record.event, record.status, record.path, record.method) == (
        "http_access",
        200,
        "/health/liveness",
        "GET",
    )
    assert record.duration_s == 0.0123 and record.size == 52


@pytest.mark.parametrize(
    "action", ["connecting", "connected", "rejected", "disconnected"]
)
def test_websocket_access_records(access, action):
    AccessLog()("websocket", action, {"path": "/ws/s1/", "client": None})
    [record] = access()
    assert record.getMessage() == f'- "WS{action.upper()} /ws/s1/"'
    assert (record.event, record.action, record.client) == ("ws_access", action, "-")


def test_the_cli_serves_with_the_logging_server():
    assert LoggingCommandLineInterface.server_class is LoggingServer


ENDPOINTS = ["tcp:port=0:interface=127.0.0.1"]  # never listened on: not run()


def test_logging_server_replaces_the_stream_logger():
    with_log = LoggingServer(application=None, endpoints=ENDPOINTS, action_logger=print)
    assert isinstance(with_log.action_logger, AccessLog)
    without = LoggingServer(application=None, endpoints=ENDPOINTS, action_logger=None)
    assert without.action_logger is None


def test_access_log_setting(settings):
    assert settings.LOGGING["loggers"]["daphne.access"] == {"level": "INFO"}


def _exc_record(name: str, exc: BaseException) -> logging.LogRecord:
    try:
        raise exc
    except BaseException:
        return logging.getLogger(name).makeRecord(
            name,
            logging.ERROR,
            __file__,
            1,
            "Unexpected exception while cleaning-up channel:",
            (),
            sys.exc_info(),
        )


def test_a_cancelled_channel_cleanup_is_a_warning_without_traceback():
    record = _exc_record("channels_redis.pubsub", asyncio.CancelledError())
    assert RedisOutageFilter().filter(record) is True
    assert (record.levelname, record.event, record.exc_info) == (
        "WARNING",
        "channel_cleanup_cancelled",
        None,
    )


def test_other_library_errors_stay_errors():
    record = _exc_record("channels_redis.pubsub", ValueError("bug"))
    RedisOutageFilter().filter(record)
    assert record.levelname == "ERROR" and record.exc_info is not None
    cancelled_elsewhere = _exc_record("chat.consumers", asyncio.CancelledError())
    RedisOutageFilter().filter(cancelled_elsewhere)
    assert cancelled_elsewhere.levelname == "ERROR"


def _django_record(name, exc, level=logging.ERROR, status=400):
    try:
        raise exc
    except type(exc):
        record = logging.LogRecord(
            name, level, __file__, 1, str(exc), (), sys.exc_info()
        )
    record.status_code = status
    return record


def test_a_suspicious_request_is_a_warning_without_traceback():
    from django.core.exceptions import DisallowedHost

    exc = DisallowedHost("Invalid HTTP_HOST header: 'evil.example'.")
    record = _django_record("django.security.DisallowedHost", exc)
    assert ClientErrorFilter().filter(record) is True
    out = formatted(record)
    assert (out["level"], out["event"], out["kind"]) == (
        "WARNING",
        "suspicious_request",
        "DisallowedHost",
    )
    assert "exc_info" not in out
    assert out["message"] == "Invalid HTTP_HOST header: 'evil.example'."


def test_a_client_warning_loses_its_traceback_only():
    record = _django_record(
        "django.request",
        UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"),
        logging.WARNING,
    )
    ClientErrorFilter().filter(record)
    assert (record.levelname, record.exc_info) == ("WARNING", None)


def test_a_server_error_stays_an_error_with_its_traceback():
    record = _django_record("django.request", RuntimeError("bug"), status=500)
    ClientErrorFilter().filter(record)
    assert record.levelname == "ERROR" and record.exc_info is not None
    security = _django_record("django.security.Odd", RuntimeError("x"), status=500)
    ClientErrorFilter().filter(security)
    assert security.levelname == "ERROR" and security.exc_info is not None
