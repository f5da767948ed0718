"""ops.logs LOG_QUEUE mode: records written by a thread, fields intact."""

import contextlib
import io
import json
import logging
import sys
import threading
import time

from django.conf import settings

from ops import logs
from ops.logs import InstanceFilter, JsonFormatter

LOGGER = "tests.log_queue"


class Recording(logging.StreamHandler):
    """A JSON stream handler that notes its writer thread; `gate` holds it back."""

    def __init__(self, *, level: int = logging.NOTSET) -> None:
        super().__init__(io.StringIO())
        self.setLevel(level)
        self.setFormatter(JsonFormatter())
        self.addFilter(InstanceFilter())
        self.gate = threading.Event()
        self.gate.set()
        self.threads: list[int] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.gate.wait(10)
        self.threads.append(threading.get_ident())
        super().emit(record)

    def lines(self) -> list[dict]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]

    def wait_for(self, count: int, timeout: float = 5.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.lines()) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.lines()


@contextlib.contextmanager
def queued_root(*handlers: logging.Handler):
    """The root logger with only `handlers`, moved to the writer thread; restored."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    logger = logging.getLogger(LOGGER)
    saved_logger_level = logger.level
    before = set(threading.enumerate())
    for handler in saved_handlers:
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        logs._move_root_handlers_to_thread()
        yield logger
    finally:
        logs._stop_listener()
        for handler in handlers:
            handler.gate.set()
        # A listener the module lost track of still ends on its queue's sentinel.
        for handler in root.handlers:
            if isinstance(handler, logs._RecordQueueHandler):
                handler.queue.put_nowait(None)
        for thread in set(threading.enumerate()) - before:
            thread.join(5)
        for handler in root.handlers[:]:
            root.removeHandler(handler)
        for handler in saved_handlers:
            root.addHandler(handler)
        root.setLevel(saved_level)
        logger.setLevel(saved_logger_level)


def test_the_test_run_keeps_logging_synchronous():
    assert settings.LOG_QUEUE is False
    root = logging.getLogger()
    assert not [h for h in root.handlers if isinstance(h, logs._RecordQueueHandler)]


def test_root_handlers_are_replaced_by_the_queue_handler():
    handler = Recording()
    with queued_root(handler):
        root = logging.getLogger()
        assert handler not in root.handlers
        assert [type(h) for h in root.handlers] == [logs._RecordQueueHandler]


def test_records_are_written_by_a_thread_with_their_fields():
    handler = Recording()
    fields = {
        "event": "ws_disconnect",
        "session_id": "s1",
        "user": "alice",
        "thread_id": "main",
        "code": 1006,
        "reason": "abnormal_closure",
        "duration_s": 1.25,
    }
    with queued_root(handler) as logger:
        logger.warning("ws_disconnect session_id=%s code=%d", "s1", 1006, extra=fields)
        [line] = handler.wait_for(1)
    assert {k: line[k] for k in fields} == fields
    assert line["message"] == "ws_disconnect session_id=s1 code=1006"
    assert (line["level"], line["logger"]) == ("WARNING", LOGGER)
    assert line["instance"] == settings.INSTANCE_ID
    assert handler.threads and threading.get_ident() not in handler.threads


def test_a_stuck_writer_does_not_block_the_caller():
    handler = Recording()
    handler.gate.clear()
    with queued_root(handler) as logger:
        started = time.monotonic()
        for i in range(100):
            logger.info("line %d", i)
        elapsed = time.monotonic() - started
        assert elapsed < 1.0
        assert handler.lines() == []
        handler.gate.set()
        lines = handler.wait_for(100)
    assert [line["message"] for line in lines] == [f"line {i}" for i in range(100)]


def test_the_traceback_survives_the_queue():
    handler = Recording()
    with queued_root(handler) as logger:
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            logger.exception("cleanup failed", extra={"event": "cleanup_failed"})
        [line] = handler.wait_for(1)
    assert line["event"] == "cleanup_failed"
    assert line["level"] == "ERROR"
    assert line["exc_info"].startswith("Traceback (most recent call last):")
    assert "ValueError: boom\nsecond line" in line["exc_info"]
    assert "test_the_traceback_survives_the_queue" in line["exc_info"]


def test_exc_info_passed_explicitly_survives_too():
    handler = Recording()
    try:
        raise KeyError("gone")
    except KeyError:
        info = sys.exc_info()
    with queued_root(handler) as logger:
        logger.warning("lost key", exc_info=info)
        [line] = handler.wait_for(1)
    assert "KeyError: 'gone'" in line["exc_info"]


def test_arguments_are_rendered_when_logged():
    handler = Recording()
    handler.gate.clear()  # the writer formats only after the caller changed its args
    with queued_root(handler) as logger:
        items = ["a"]
        state = {"n": 1}
        logger.info("items=%s state=%s rate=%s", items, state, "100%s")
        items.append("b")
        state["n"] = 2
        handler.gate.set()
        [line] = handler.wait_for(1)
    assert line["message"] == "items=['a'] state={'n': 1} rate=100%s"


def test_handler_levels_are_respected_in_the_thread():
    everything, warnings_only = Recording(), Recording(level=logging.WARNING)
    with queued_root(everything, warnings_only) as logger:
        logger.info("chatty")
        logger.warning("important")
        everything.wait_for(2)
        warnings_only.wait_for(1)
        time.sleep(0.05)
    assert [line["message"] for line in everything.lines()] == ["chatty", "important"]
    assert [line["message"] for line in warnings_only.lines()] == ["important"]


def test_without_root_handlers_nothing_is_moved():
    root = logging.getLogger()
    saved = root.handlers[:]
    for handler in saved:
        root.removeHandler(handler)
    try:
        logs._move_root_handlers_to_thread()
        assert root.handlers == []
    finally:
        for handler in saved:
            root.addHandler(handler)


def test_moving_twice_keeps_records_flowing():
    handler = Recording()
    with queued_root(handler) as logger:
        logs._move_root_handlers_to_thread()
        logger.info("after the second move")
        lines = handler.wait_for(1)
        queue_handlers = [
            h
            for h in logging.getLogger().handlers
            if isinstance(h, logs._RecordQueueHandler)
        ]
    assert [line["message"] for line in lines] == ["after the second move"]
    assert len(queue_handlers) == 1


def test_stopping_the_listener_writes_out_everything_queued():
    handler = Recording()
    handler.gate.clear()
    with queued_root(handler) as logger:
        for i in range(500):
            logger.info("record %d", i, extra={"event": "burst", "n": i})
        assert logs._listener is not None
        handler.gate.set()
        logs._stop_listener()
        # No waiting: stop() returns once the thread has written the whole queue.
        lines = handler.lines()
        assert logs._listener is None
    assert [line["n"] for line in lines] == list(range(500))


def test_configure_never_moves_the_handlers(settings, monkeypatch):
    moved, configured = [], []
    monkeypatch.setattr(logs, "_move_root_handlers_to_thread", lambda: moved.append(1))
    monkeypatch.setattr(logging.config, "dictConfig", configured.append)
    config = {"version": 1}
    settings.LOG_QUEUE = True
    logs.configure(config)
    assert (configured, moved) == ([config], [])


def test_the_server_starts_the_queue_only_with_log_queue(settings, monkeypatch):
    moved = []
    monkeypatch.setattr(logs, "_move_root_handlers_to_thread", lambda: moved.append(1))
    settings.LOG_QUEUE = False
    logs.start_log_queue()
    assert moved == []
    settings.LOG_QUEUE = True
    logs.start_log_queue()
    assert moved == [1]
