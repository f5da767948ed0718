"""Prometheus collectors, per process: each Daphne exposes its own /metrics.

The apps that own a figure feed it; gauges read by a function are bound by their
owner (realtime.presence, sessions_app.cleanup), so this module imports no app.
"""

from prometheus_client import Counter, Gauge, Histogram

ACTIVE_SOCKETS = Gauge("emergence_ws_active_sockets", "Open WebSockets in this process")
CONNECTS = Counter(
    "emergence_ws_connects_total",
    "WebSocket connects by outcome (accepted, or the refusal close code)",
    ["outcome"],
)
DISCONNECTS = Counter(
    "emergence_ws_disconnects_total", "WebSocket closes by reason name", ["reason"]
)
DB_RECONNECTS = Counter(
    "emergence_db_reconnect_attempts_total",
    "Database retries by result (lost, reconnected, unavailable)",
    ["result"],
)
CLEANUPS = Counter(
    "emergence_detach_cleanups_total", "Grace-period cleanups by result", ["result"]
)
REPLAYED = Counter("emergence_replayed_messages_total", "chat.message frames replayed")
MESSAGE_LATENCY = Histogram(
    "emergence_message_handling_seconds",
    "Time from a client's chat.message to its ack",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
PENDING_CLEANUPS = Gauge(
    "emergence_detach_pending", "Grace-period cleanups pending in this process"
)
