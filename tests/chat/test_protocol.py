"""chat.protocol: connect parameters, client frames and the close-reason table."""

import json
import logging

import pytest

from chat import protocol
from chat.protocol import (
    ChatMessageFrame,
    ConnectError,
    ConnectParams,
    FrameError,
    PingFrame,
    ResumeFrame,
    parse_connect,
    parse_frame,
    reason_for,
)

# --- parse_connect --------------------------------------------------------------


def test_parse_connect_defaults():
    assert parse_connect("abc", b"") == ConnectParams("abc", "main", None)


@pytest.mark.parametrize(
    ("query", "thread_id", "last_seq"),
    [
        (b"thread_id=room-1", "room-1", None),
        (b"thread_id=room_1&last_seq=0", "room_1", 0),
        ("last_seq=42", "main", 42),
        (b"last_seq=999999999999999999", "main", 999999999999999999),
        (b"thread_id=" + b"T" * 64, "T" * 64, None),
        (b"other=1&thread_id=x", "x", None),
    ],
)
def test_parse_connect_valid(query, thread_id, last_seq):
    params = parse_connect("s-1_A", query)
    assert params == ConnectParams("s-1_A", thread_id, last_seq)


@pytest.mark.parametrize(
    "session_id",
    ["", "a" * 65, "has space", "dot.dot", "slash/x", "ü", "a%20b", "semi;colon"],
)
def test_parse_connect_bad_session_id(session_id):
    with pytest.raises(ConnectError) as info:
        parse_connect(session_id, b"")
    assert info.value.close_code == 4400
    assert "session_id" in info.value.detail


def test_parse_connect_session_id_64_chars_ok():
    assert parse_connect("a" * 64, b"").session_id == "a" * 64


@pytest.mark.parametrize(
    "query",
    [
        b"thread_id=",
        b"thread_id=" + b"t" * 65,
        b"thread_id=a.b",
        b"thread_id=a%20b",
        b"thread_id=a&thread_id=b",
        b"thread_id=%C3%BC",
    ],
)
def test_parse_connect_bad_thread_id(query):
    with pytest.raises(ConnectError) as info:
        parse_connect("s1", query)
    assert info.value.close_code == 4400
    assert "thread_id" in info.value.detail


@pytest.mark.parametrize(
    "query",
    [
        b"last_seq=",
        b"last_seq=-1",
        b"last_seq=1.5",
        b"last_seq=abc",
        b"last_seq=1e3",
        b"last_seq=%2B1",
        b"last_seq=" + b"9" * 19,
        b"last_seq=1&last_seq=2",
    ],
)
def test_parse_connect_bad_last_seq(query):
    with pytest.raises(ConnectError) as info:
        parse_connect("s1", query)
    assert info.value.close_code == 4400
    assert "last_seq" in info.value.detail


# --- parse_frame ------------------------------------------------------------------


def frame(**fields) -> str:
    return json.dumps(fields)


def refused(text: str) -> FrameError:
    with pytest.raises(FrameError) as info:
        parse_frame(text)
    return info.value


def test_chat_message_frame():
    assert parse_frame(frame(type="chat.message", id="c1", text="hi")) == (
        ChatMessageFrame("c1", "hi")
    )


def test_ping_frame_int_and_float():
    assert parse_frame(frame(type="ping", ts=123)) == PingFrame(123)
    assert parse_frame(frame(type="ping", ts=1.5)) == PingFrame(1.5)


def test_resume_frame():
    assert parse_frame(frame(type="resume", last_seq=0)) == ResumeFrame(0)
    assert parse_frame(frame(type="resume", last_seq=7)) == ResumeFrame(7)


@pytest.mark.parametrize("text", ["", "not json", "{", "{'type': 'ping'}", "[1,"])
def test_bad_json(text):
    assert refused(text).code == "bad_json"


def test_deeply_nested_json_is_bad_json_not_a_crash():
    assert refused("[" * 100_000 + "]" * 100_000).code == "bad_json"


@pytest.mark.parametrize("text", ["[]", "1", '"chat.message"', "null", "true"])
def test_non_object_is_bad_frame(text):
    assert refused(text).code == "bad_frame"


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"type": None},
        {"type": 1},
        {"type": ["ping"]},
        {"type": "chat.message", "text": "hi"},
        {"type": "chat.message", "id": "c1"},
        {"type": "chat.message", "id": 1, "text": "hi"},
        {"type": "chat.message", "id": "c1", "text": 5},
        {"type": "chat.message", "id": "c1", "text": None},
        {"type": "chat.message", "id": "", "text": "hi"},
        {"type": "chat.message", "id": "c1", "text": ""},
        {"type": "ping"},
        {"type": "ping", "ts": "1"},
        {"type": "ping", "ts": True},
        {"type": "ping", "ts": None},
        {"type": "resume"},
        {"type": "resume", "last_seq": "3"},
        {"type": "resume", "last_seq": 1.0},
        {"type": "resume", "last_seq": True},
        {"type": "resume", "last_seq": False},
        {"type": "resume", "last_seq": -1},
    ],
)
def test_bad_frame(fields):
    assert refused(json.dumps(fields)).code == "bad_frame"


@pytest.mark.parametrize("kind", ["chat", "CHAT.MESSAGE", "", "pong", "x" * 200])
def test_unknown_type(kind):
    error = refused(frame(type=kind))
    assert error.code == "unknown_type"
    assert len(error.detail) < 120  # the echoed type is truncated


def test_text_of_4000_characters_is_accepted():
    text = "é" * 4000
    assert parse_frame(frame(type="chat.message", id="c", text=text)).text == text


def test_text_of_4001_characters_is_too_long():
    error = refused(frame(type="chat.message", id="c", text="a" * 4001))
    assert error.code == "too_long"


def test_id_of_64_characters_is_accepted():
    assert parse_frame(frame(type="chat.message", id="i" * 64, text="x")).id == (
        "i" * 64
    )


def test_id_of_65_characters_is_bad_frame():
    assert refused(frame(type="chat.message", id="i" * 65, text="x")).code == (
        "bad_frame"
    )


@pytest.mark.parametrize(
    "raw",
    [
        r'{"type": "chat.message", "id": "c", "text": "a\u0000b"}',
        r'{"type": "chat.message", "id": "c\u0000", "text": "ab"}',
        r'{"type": "chat.message", "id": "c", "text": "lone \ud800 surrogate"}',
        r'{"type": "chat.message", "id": "\udfff", "text": "ab"}',
    ],
)
def test_text_postgresql_cannot_store_is_bad_frame(raw):
    # Not a database error (1011) later: refused while parsing.
    assert refused(raw).code == "bad_frame"


def test_surrogate_pairs_and_emoji_are_fine():
    raw = r'{"type": "chat.message", "id": "c", "text": "\ud83d\ude00 ok"}'
    assert parse_frame(raw).text == "\U0001f600 ok"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_ping_ts_is_bad_frame(literal):
    # json.loads accepts these, but a pong echoing them would not be JSON.
    assert refused(f'{{"type": "ping", "ts": {literal}}}').code == "bad_frame"


def test_bad_id_is_reported_before_too_long_text():
    error = refused(frame(type="chat.message", id="", text="a" * 5000))
    assert error.code == "bad_frame"


# --- reason_for -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "reason", "level"),
    [
        (1000, "normal_closure", logging.INFO),
        (1001, "going_away", logging.INFO),
        (1005, "no_status", logging.INFO),
        (None, "no_status", logging.INFO),
        (1006, "abnormal_closure", logging.INFO),
        (1008, "policy_violation", logging.WARNING),
        (1009, "message_too_big", logging.WARNING),
        (1011, "server_error", logging.ERROR),
        (1012, "service_restart", logging.INFO),
        (1013, "try_again_later", logging.WARNING),
        (4400, "bad_request", logging.WARNING),
        (4401, "unauthenticated", logging.WARNING),
        (4403, "forbidden", logging.WARNING),
        (1002, "code_1002", logging.INFO),
        (4000, "code_4000", logging.INFO),
        (4999, "code_4999", logging.INFO),
    ],
)
def test_reason_for(code, reason, level):
    assert reason_for(code) == (reason, level)


def test_close_constants_match_the_table():
    assert protocol.Close.BAD_REQUEST == 4400
    assert protocol.Close.UNAUTHENTICATED == 4401
    assert protocol.Close.FORBIDDEN == 4403
    assert protocol.Close.POLICY_VIOLATION == 1008
    assert protocol.Close.MESSAGE_TOO_BIG == 1009
    assert protocol.Close.SERVER_ERROR == 1011
    assert protocol.Close.SERVICE_RESTART == 1012
    assert protocol.Close.TRY_AGAIN_LATER == 1013


# --- server frames ----------------------------------------------------------------


def test_error_frame():
    assert protocol.error_frame("bad_json", "d") == {
        "type": "error",
        "code": "bad_json",
        "detail": "d",
    }


def test_dumps_is_compact_and_keeps_unicode():
    assert protocol.dumps({"a": "é", "b": 1}) == '{"a":"é","b":1}'


def test_thread_group_name():
    from realtime.groups import thread_group

    assert thread_group("room-1") == "thread.room-1"


@pytest.mark.parametrize(
    "query", [b"thread_id=main%0A", b"thread_id=main&last_seq=1%0A"]
)
def test_a_trailing_newline_is_malformed(query):
    with pytest.raises(protocol.ConnectError):
        protocol.parse_connect("s1", query)
    with pytest.raises(protocol.ConnectError):
        protocol.parse_connect("s1\n", b"")
