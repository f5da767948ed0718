"""Maintenance commands on the real database: purge_sessions, prune_events, dbcheck,
ws_metrics, issue_token (log_report: test_log_report.py).

The commands run their queries through the retry helper, which refuses to run inside
an open transaction, so these tests use `transactional_db`.
"""

import asyncio
import io
import json
from datetime import timedelta

import jwt
import pytest
from django.conf import settings as django_settings
from django.core.management import CommandError, call_command
from django.utils import timezone

from accounts import tokens
from ops import redis_client as shared
from ops.durations import parse_duration
from realtime import figures as shared_figures
from sessions_app.maintenance import session_purge
from sessions_app.models import ChatSession, ConnectionEvent
from tests.commands import manage
from tests.servers import free_port
from tests.servers import test_database_url as database_url

pytestmark = pytest.mark.usefixtures("transactional_db")


def run(name: str, *args: str) -> str:
    """call_command with its stdout captured (stderr swallowed)."""
    out = io.StringIO()
    call_command(name, *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.fixture
def make_session(alice):
    """A ChatSession last seen `days` ago, with connect/disconnect events."""

    def make(
        session_id: str, *, status: str = "idle", days: float = 0, events: int = 2
    ) -> ChatSession:
        seen = timezone.now() - timedelta(days=days)
        session = ChatSession.objects.create(
            id=session_id, owner=alice, status=status, last_seen_at=seen
        )
        for n in range(events):
            ConnectionEvent.objects.create(
                session=session,
                session_key=session_id,
                user=alice,
                kind="connect" if n % 2 == 0 else "disconnect",
                instance="test",
            )
        return session

    return make


def event(*, days: float = 0, session_key: str = "", session=None) -> ConnectionEvent:
    """A connection event created `days` ago."""
    created = ConnectionEvent.objects.create(
        session=session, session_key=session_key, kind="disconnect", code=1000
    )
    ConnectionEvent.objects.filter(pk=created.pk).update(
        created_at=timezone.now() - timedelta(days=days)
    )
    return created


# --- purge_sessions ------------------------------------------------------------------


@pytest.fixture
def sessions(make_session):
    """Two purgeable sessions (idle, closed) and three that must stay."""
    make_session("old-idle", status="idle", days=40)
    make_session("old-closed", status="closed", days=31, events=1)
    make_session("old-active", status="active", days=90)
    make_session("recent-idle", status="idle", days=2)
    make_session("recent-closed", status="closed", days=29)
    # A refused socket's event: names the session, no FK.
    event(session_key="old-idle", days=40)


def test_purge_sessions_deletes_old_idle_and_closed_with_events(sessions):
    out = run("purge_sessions", "--idle-days", "30")
    assert out.startswith("deleted 2 session(s) idle since before ")
    assert out.rstrip().endswith("and 4 connection event(s)")
    assert sorted(ChatSession.objects.values_list("id", flat=True)) == [
        "old-active",
        "recent-closed",
        "recent-idle",
    ]
    assert not ConnectionEvent.objects.filter(
        session_key__in=["old-idle", "old-closed"]
    ).exists()
    assert ConnectionEvent.objects.count() == 6


def test_purge_sessions_dry_run_changes_nothing(sessions):
    before = (ChatSession.objects.count(), ConnectionEvent.objects.count())
    out = run("purge_sessions", "--idle-days", "30", "--dry-run")
    assert out.startswith("would delete 2 session(s) idle since before ")
    assert "and 4 connection event(s)" in out
    assert (ChatSession.objects.count(), ConnectionEvent.objects.count()) == before
    # ... and the real run then deletes what the dry run announced.
    assert "deleted 2 session(s)" in run("purge_sessions", "--idle-days", "30")


def test_purge_sessions_nothing_to_do(make_session):
    make_session("recent", days=1)
    assert "deleted 0 session(s)" in run("purge_sessions", "--idle-days", "7")
    assert ChatSession.objects.count() == 1


def test_purge_sessions_in_batches(make_session):
    for n in range(5):
        make_session(f"s{n}", days=10, events=1)
    count = session_purge(idle_before=timezone.now() - timedelta(days=7), batch_size=2)
    assert (count.sessions, count.events) == (5, 5)
    assert not ChatSession.objects.exists()


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--idle-days", "0"],
        ["--idle-days", "-3"],
        ["--idle-days", "soon"],
        ["--idle-days", "30", "--bogus"],
    ],
)
def test_purge_sessions_bad_arguments(sessions, args):
    with pytest.raises(CommandError):
        run("purge_sessions", *args)
    assert ChatSession.objects.count() == 5


# --- prune_events --------------------------------------------------------------------


@pytest.fixture
def events(make_session):
    session = make_session("kept", days=1, events=0)
    for days in (10, 8, 7.5, 6, 1, 0):
        event(days=days, session=session, session_key="kept")


def test_prune_events_deletes_older_than(events):
    out = run("prune_events", "--older-than", "7d")
    assert out.startswith("deleted 3 connection event(s) created before ")
    assert ConnectionEvent.objects.count() == 3
    assert ChatSession.objects.filter(pk="kept").exists()


@pytest.mark.parametrize(
    ("value", "left"), [("170h", 3), ("9d", 5), ("4320m", 2), ("36000", 1)]
)
def test_prune_events_units(events, value, left):
    run("prune_events", "--older-than", value)
    assert ConnectionEvent.objects.count() == left


def test_prune_events_dry_run_changes_nothing(events):
    out = run("prune_events", "--older-than", "7d", "--dry-run")
    assert out.startswith("would delete 3 connection event(s) created before ")
    assert ConnectionEvent.objects.count() == 6


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--older-than", "7x"],
        ["--older-than", "0d"],
        ["--older-than", "-1d"],
        ["--older-than", "d"],
        ["--older-than", ""],
        ["--older-than", "99999999d"],
    ],
)
def test_prune_events_bad_arguments(events, args):
    with pytest.raises(CommandError):
        run("prune_events", *args)
    assert ConnectionEvent.objects.count() == 6


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("15m", 900), ("1h", 3600), ("7d", 604800)]
    + [("1.5h", 5400), (" 2H ", 7200)],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "h", "1w", "1 day", "-5m", "0", "1e3s", "5mm"])
def test_parse_duration_refuses(text):
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration(text)


# --- dbcheck -------------------------------------------------------------------------


def test_dbcheck_ok():
    out = run("dbcheck")
    assert out.count("\n") == 1
    assert out.startswith("database OK: postgresql ")
    assert " answered in " in out and " ms " in out


def test_dbcheck_reports_an_outage_after_the_retries(db_outage, log_events):
    db_outage.start()
    with pytest.raises(CommandError, match=r"^database UNAVAILABLE: postgresql "):
        run("dbcheck", "--retries", "2")
    assert [r.attempt for r in log_events("db_connection_lost")] == [1, 2]
    assert [r.attempt for r in log_events("db_unavailable")] == [3]
    db_outage.end()
    assert run("dbcheck", "--retries", "0").startswith("database OK")


def test_dbcheck_refuses_negative_retries():
    with pytest.raises(CommandError, match="--retries"):
        run("dbcheck", "--retries", "-1")


def test_dbcheck_cli_exit_codes():
    ok = manage("dbcheck")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("database OK: postgresql ")
    assert ok.stdout.count("\n") == 1

    dead = database_url("emergence-command", port=free_port())
    down = manage("dbcheck", "--retries", "1", DATABASE_URL=dead, DB_RETRY_DELAY="0.05")
    assert down.returncode == 1
    assert down.stdout == ""
    verdict = down.stderr.strip().splitlines()[-1]
    assert verdict.startswith("CommandError: database UNAVAILABLE: postgresql ")
    assert " after " in verdict


# --- ws_metrics ----------------------------------------------------------------------


def figures(**kwargs):
    async def read():
        try:
            return await shared_figures.ws_metrics(**kwargs)
        finally:
            await shared.redis_client().aclose()

    return asyncio.run(read())


@pytest.fixture
def disconnects():
    async def record():
        try:
            record = shared_figures.record_disconnect
            await record("alice", "normal_closure", abnormal=False)
            await record("alice", "abnormal_closure", abnormal=True)
            await record("bob", "going_away", abnormal=False)
        finally:
            await shared.redis_client().aclose()

    asyncio.run(record())


def test_ws_metrics_json_is_the_endpoint_figures(disconnects):
    shown = json.loads(run("ws_metrics", "--json"))
    assert shown == figures()
    assert shown["total_users_tracked"] == 2
    assert shown["top_disconnects"] == [["alice", 2], ["bob", 1]]
    assert shown["all_reasons"]["alice"] == {"normal_closure": 1, "abnormal_closure": 1}


def test_ws_metrics_text_and_user(disconnects):
    out = run("ws_metrics")
    assert "users tracked: 2" in out
    assert "  alice: 2" in out and "  bob: 1" in out
    assert "abnormal_closure 1, normal_closure 1" in out
    only = json.loads(run("ws_metrics", "--json", "--user", "bob"))
    assert only["all_reasons"] == {"bob": {"going_away": 1}}
    assert only["top_disconnects"] == [["bob", 1]]


def test_ws_metrics_reset_dry_run_keeps_everything(disconnects):
    out = run("ws_metrics", "--reset", "--dry-run")
    assert "users tracked: 2" in out
    assert out.rstrip().endswith("would clear the figures of 2 user(s)")
    assert figures()["total_users_tracked"] == 2


def test_ws_metrics_reset_prints_then_clears(disconnects):
    out = run("ws_metrics", "--reset")
    assert "  alice: 2" in out
    assert out.rstrip().endswith("cleared the figures of 2 user(s)")
    assert figures()["total_users_tracked"] == 0


@pytest.mark.parametrize(
    "args", [["--reset", "--user", "alice"], ["--dry-run"], ["--json", "extra"]]
)
def test_ws_metrics_bad_arguments(disconnects, args):
    with pytest.raises(CommandError):
        run("ws_metrics", *args)
    assert figures()["total_users_tracked"] == 2


# --- issue_token ---------------------------------------------------------------------


def claims_of(token: str) -> dict:
    return jwt.decode(token, django_settings.JWT_SECRET, algorithms=["HS256"])


def test_issue_token_default_lifetime(alice):
    token = run("issue_token", "alice").strip()
    claims = claims_of(token)
    assert claims["sub"] == str(alice.pk) and claims["username"] == "alice"
    assert claims["exp"] - claims["iat"] == django_settings.JWT_TTL_SECONDS
    assert tokens.token_user_id(token) == alice.pk


def test_issue_token_ttl(alice):
    claims = claims_of(run("issue_token", "alice", "--ttl", "15m").strip())
    assert claims["exp"] - claims["iat"] == 900


@pytest.mark.parametrize(
    "args", [["nobody"], ["inactive"], ["alice", "--ttl", "soon"], []]
)
def test_issue_token_refuses(alice, make_user, args):
    make_user("inactive", is_active=False)
    with pytest.raises(CommandError):
        run("issue_token", *args)


def test_issue_token_cli_prints_only_the_token(alice):
    done = manage("issue_token", "alice", "--ttl", "1h")
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert "\n" not in token and claims_of(token)["username"] == "alice"
    assert "token for alice" in done.stderr


def test_ws_metrics_needs_the_shared_redis(settings):
    settings.REDIS_URL = ""
    with pytest.raises(CommandError, match="REDIS_URL is not set"):
        run("ws_metrics")
