"""PROTOCOL.md encoded once: connect parameters, frames, close codes, reason names."""

import json
import logging
import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

# fullmatch below: "$" alone would also accept a trailing newline ("main\n").
SLUG_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
SEQ_RE = re.compile(r"[0-9]{1,18}")
EPOCH_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")
MAX_TEXT = 4000
MAX_CLIENT_ID = 64
DEFAULT_THREAD = "main"


class Close:
    """Close codes the server sends (PROTOCOL.md §2)."""

    NORMAL = 1000
    INVALID_PAYLOAD = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    SERVER_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_REQUEST = 4400
    UNAUTHENTICATED = 4401
    FORBIDDEN = 4403
    SLOW_CONSUMER = 4408
    TOO_MANY = 4429


# code -> (reason name, log level) for the ws_disconnect record (PROTOCOL.md §3).
REASONS: dict[int, tuple[str, int]] = {
    1000: ("normal_closure", logging.INFO),
    1001: ("going_away", logging.INFO),
    1005: ("no_status", logging.INFO),
    1006: ("abnormal_closure", logging.INFO),
    1007: ("invalid_payload", logging.WARNING),
    1008: ("policy_violation", logging.WARNING),
    1009: ("message_too_big", logging.WARNING),
    1011: ("server_error", logging.ERROR),
    1012: ("service_restart", logging.INFO),
    1013: ("try_again_later", logging.WARNING),
    4400: ("bad_request", logging.WARNING),
    4401: ("unauthenticated", logging.WARNING),
    4403: ("forbidden", logging.WARNING),
    4408: ("slow_consumer", logging.WARNING),
    4429: ("too_many", logging.WARNING),
}
ABNORMAL = 1006
# The one metric label every code outside REASONS folds into: close codes are
# chosen by clients, and each distinct label value is a new Prometheus series
# (https://prometheus.io/docs/practices/naming/#labels).
OTHER_LABEL = "other"


def reason_for(code: int | None) -> tuple[str, int]:
    """Reason name and log level for a close code; unknown codes are INFO."""
    if code is None:
        code = 1005
    return REASONS.get(code, (f"code_{code}", logging.INFO))


def metric_reason(code: int | None) -> str:
    """The bounded metric label for a close code: its reason name, or `other`."""
    if code is None:
        code = 1005
    return REASONS[code][0] if code in REASONS else OTHER_LABEL


def metric_outcome(code: int) -> str:
    """The bounded `outcome` label of a refused connect: the code, or `other`."""
    return str(code) if code in REASONS else OTHER_LABEL


class FrameError(Exception):
    """A client frame the server refuses with an `error` frame."""

    def __init__(self, code: str, detail: str, frame_id: str | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.frame_id = frame_id


class ConnectError(Exception):
    """Connect parameters the server refuses with a close code."""

    def __init__(self, close_code: int, detail: str) -> None:
        super().__init__(detail)
        self.close_code = close_code
        self.detail = detail


@dataclass(frozen=True)
class ConnectParams:
    """What the client asked for in the URL."""

    session_id: str
    thread_id: str
    last_seq: int | None
    epoch: str | None = None  # the thread's epoch as the client last saw it


def parse_connect(session_id: str, query_string: bytes | str) -> ConnectParams:
    """Validate the URL's session id and query; ConnectError(4400) when malformed."""
    if not SLUG_RE.fullmatch(session_id or ""):
        raise ConnectError(Close.BAD_REQUEST, "malformed session_id")
    if isinstance(query_string, bytes):
        query_string = query_string.decode("latin-1")
    try:
        query = parse_qs(query_string, keep_blank_values=True, strict_parsing=False)
    except ValueError as exc:
        raise ConnectError(Close.BAD_REQUEST, "malformed query string") from exc
    thread_values = query.get("thread_id", [DEFAULT_THREAD])
    seq_values = query.get("last_seq", [])
    if len(thread_values) != 1 or not SLUG_RE.fullmatch(thread_values[0]):
        raise ConnectError(Close.BAD_REQUEST, "malformed thread_id")
    last_seq = None
    if seq_values:
        if len(seq_values) != 1 or not SEQ_RE.fullmatch(seq_values[0]):
            raise ConnectError(Close.BAD_REQUEST, "malformed last_seq")
        last_seq = int(seq_values[0])
    epoch = _connect_epoch(query.get("epoch", []))
    return ConnectParams(session_id, thread_values[0], last_seq, epoch)


def _connect_epoch(values: list[str]) -> str | None:
    """The URL's `epoch`, None when absent; ConnectError(4400) when malformed."""
    if not values:
        return None
    if len(values) != 1 or not EPOCH_RE.fullmatch(values[0]):
        raise ConnectError(Close.BAD_REQUEST, "malformed epoch")
    return values[0]


@dataclass(frozen=True)
class ChatMessageFrame:
    """A client's chat.message."""

    id: str
    text: str


@dataclass(frozen=True)
class PingFrame:
    """A client's ping."""

    ts: int | float


@dataclass(frozen=True)
class ResumeFrame:
    """A client's resume."""

    last_seq: int
    epoch: str | None = None


@dataclass(frozen=True)
class TypingFrame:
    """A client's typing (forwarded to the thread's other users, never stored)."""


@dataclass(frozen=True)
class RefreshFrame:
    """A client's refresh: a new JWT for its socket (checked by chat.logins)."""

    token: str


Frame = ChatMessageFrame | PingFrame | ResumeFrame | TypingFrame | RefreshFrame


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _storable(value: str) -> bool:
    """Text PostgreSQL can store: no NUL character, no lone surrogate."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def too_big(text: str | None, data: bytes | None, limit: int) -> bool:
    """Whether a frame is over `limit` bytes (text encoded only when it may be)."""
    size = len(data) if text is None else len(text)
    if text is not None and size * 4 > limit:
        size = len(text.encode("utf-8", "surrogatepass"))
    return size > limit


def parse_frame(text: str) -> Frame:
    """Parse and validate one client text frame; FrameError names what is wrong."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise FrameError("bad_json", "frame is not valid JSON") from exc
    if not isinstance(data, dict):
        raise FrameError("bad_frame", "frame must be a JSON object")
    kind = data.get("type")
    if not isinstance(kind, str):
        raise FrameError("bad_frame", "field 'type' must be a string")
    if kind == "chat.message":
        return _parse_chat_message(data)
    if kind == "ping":
        ts = data.get("ts")
        if not (_is_int(ts) or (isinstance(ts, float) and math.isfinite(ts))):
            # json.loads admits NaN and Infinity, which are not JSON: never echo them.
            raise FrameError("bad_frame", "field 'ts' must be a number")
        return PingFrame(ts)
    if kind == "resume":
        last_seq = data.get("last_seq")
        if not _is_int(last_seq) or last_seq < 0:
            raise FrameError("bad_frame", "field 'last_seq' must be an integer >= 0")
        epoch = data.get("epoch")
        if epoch is not None and not (
            isinstance(epoch, str) and EPOCH_RE.fullmatch(epoch)
        ):
            raise FrameError("bad_frame", "field 'epoch' must be 1-32 of [A-Za-z0-9_-]")
        return ResumeFrame(last_seq, epoch)
    if kind == "typing":
        return TypingFrame()
    if kind == "refresh":
        token = data.get("token")
        if not isinstance(token, str) or not token:
            raise FrameError("bad_frame", "field 'token' must be a non-empty string")
        return RefreshFrame(token)
    raise FrameError("unknown_type", f"unknown frame type {kind[:64]!r}")


def _usable_id(client_id: Any) -> str | None:
    """A chat.message id the server can echo in an error frame, else None."""
    if isinstance(client_id, str) and 1 <= len(client_id) <= MAX_CLIENT_ID:
        return client_id if _storable(client_id) else None
    return None


def chat_message_id(text: str | None) -> str | None:
    """The usable id of a chat.message frame refused before parsing, else None."""
    if text is None:
        return None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or data.get("type") != "chat.message":
        return None
    return _usable_id(data.get("id"))


def _parse_chat_message(data: dict[str, Any]) -> ChatMessageFrame:
    client_id = _usable_id(data.get("id"))
    text = data.get("text")
    if client_id is None:
        # Refused here, not by PostgreSQL: a NUL or a lone surrogate would otherwise
        # reach the INSERT and end the socket with 1011 and an ERROR traceback.
        raise FrameError("bad_frame", "field 'id' must be 1-64 characters of text")
    if not isinstance(text, str) or not text:
        raise FrameError(
            "bad_frame", "field 'text' must be a non-empty string", client_id
        )
    if len(text) > MAX_TEXT:
        raise FrameError(
            "too_long", f"text is longer than {MAX_TEXT} characters", client_id
        )
    if not _storable(text):
        raise FrameError("bad_frame", "field 'text' must be valid text", client_id)
    return ChatMessageFrame(client_id, text)


def established_frame(socket: Any, opened: Any, instance: str) -> dict[str, Any]:
    """`ws:session_established` for a SocketContext and its SocketOpened."""
    replay = opened.replay
    return {
        "type": "ws:session_established",
        "session_id": socket.session_id,
        "thread_id": socket.thread_id,
        "user": socket.username,
        "resumed": opened.resumed,
        "last_seq": replay.last_seq,
        "epoch": replay.epoch,
        "replay": len(replay.messages),
        "recovered": replay.recovered,
        "reset": replay.reset,
        "instance": instance,
    }


def presence_frame(
    thread_id: str, joins: list[str], leaves: list[str]
) -> dict[str, Any]:
    """A `presence` frame."""
    return {
        "type": "presence",
        "thread_id": thread_id,
        "joins": joins,
        "leaves": leaves,
    }


def resumed_frame(replay: Any) -> dict[str, Any]:
    """The answer to a `resume`, before its replayed frames (`replay`: a Replay)."""
    return {
        "type": "resumed",
        "replay": len(replay.messages),
        "recovered": replay.recovered,
        "reset": replay.reset,
    }


def refreshed_frame(expires_at: datetime) -> dict[str, str]:
    """The answer to a `refresh` that replaced the socket's token."""
    return {"type": "refreshed", "expires_at": expires_at.isoformat()}


def error_frame(code: str, detail: str, frame_id: str | None = None) -> dict[str, str]:
    """An `error` frame; `frame_id` names the refused chat.message when usable."""
    frame = {"type": "error", "code": code, "detail": detail}
    if frame_id is not None:
        frame["id"] = frame_id
    return frame


def message_frame(message: Any) -> dict[str, Any]:
    """The `chat.message` frame for a Message row (or anything shaped like one)."""
    return {
        "type": "chat.message",
        "thread_id": message.thread_id,
        "seq": message.seq,
        "id": message.client_id,
        "user": message.user.get_username(),
        "text": message.text,
        "created_at": message.created_at.isoformat(),
    }


# A channel-layer event, never a client frame: chat.message frames of one thread
# stored by one commit, in seq order. Consumers deliver it as that many chat.message
# events (ChatConsumer.chat_messages).
MESSAGES_EVENT = "chat.messages"


def messages_event(thread_id: str, frames: list[dict[str, Any]]) -> dict[str, Any]:
    """The layer event carrying several `chat.message` frames of a thread."""
    return {"type": MESSAGES_EVENT, "thread_id": thread_id, "messages": frames}


def dumps(data: dict[str, Any]) -> str:
    """Serialize a server frame compactly."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)
