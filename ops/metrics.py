"""Prometheus collectors, per process: each Daphne exposes its own /metrics.

The apps that own a figure feed it; gauges read by a function are bound by their
owner (realtime.presence, sessions_app.cleanup), so this module imports no app.
"""

from functools import partial

from django.db import transaction
from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

# No `<name>_created` series beside every counter and histogram: a start time per
# label set that doubles the series scraped and that no dashboard or alert reads.
disable_created_metrics()

ACTIVE_SOCKETS = Gauge("emergence_ws_active_sockets", "Open WebSockets in this process")
CONNECTS = Counter(
    "emergence_ws_connects_total",
    "WebSocket connects by outcome (accepted, or the refusal close code)",
    ["outcome"],
)
DISCONNECTS = Counter(
    "emergence_ws_disconnects_total", "WebSocket closes by reason name", ["reason"]
)
DB_RETRY_OUTCOMES = Counter(
    "emergence_db_retry_outcomes_total",
    "Outcomes of the database retry helper: a connection lost (one per failed "
    "attempt), reconnected (the retry worked), unavailable (every retry failed)",
    ["result"],
)
CLEANUPS = Counter(
    "emergence_detach_cleanups_total", "Grace-period cleanups by result", ["result"]
)
REPLAYED = Counter("emergence_replayed_messages_total", "chat.message frames replayed")
REPLAYS = Counter(
    "emergence_replays_total",
    "Replays that sent a socket stored messages (a connect with last_seq, a resume)",
)
MESSAGES_STORED = Counter(
    "emergence_messages_stored_total",
    "Chat messages committed to the database by this process (resends not counted)",
)
MESSAGE_LATENCY = Histogram(
    "emergence_message_handling_seconds",
    "Time from a client's chat.message to its ack",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
PENDING_CLEANUPS = Gauge(
    "emergence_detach_pending", "Grace-period cleanups pending in this process"
)
WS_CONNECTING = Gauge(
    "emergence_ws_connecting",
    "WebSocket connects in progress in this process (admission control's count)",
)


def replay_sent(messages: int) -> None:
    """Count one replay to a socket and the messages it carried (none: no replay)."""
    if messages:
        REPLAYS.inc()
        REPLAYED.inc(messages)


def messages_stored(count: int) -> None:
    """Count `count` new messages once the transaction storing them commits."""
    if count:
        transaction.on_commit(partial(MESSAGES_STORED.inc, count))
