"""Epochs: a client whose history the database no longer has is told to reset.

Rollbacks are made for real: a raw SQL DELETE and UPDATE, as a replica that lost
its last commits would look, or the epoch command, as after a restore.
"""

import importlib
import io

import pytest
from channels.db import database_sync_to_async
from django.apps import apps
from django.core.management import CommandError, call_command
from django.db import connection

from chat.connects import SocketOpen, socket_open_many
from chat.models import Message, Thread
from chat.protocol import (
    EPOCH_RE,
    ConnectError,
    FrameError,
    ResumeFrame,
    parse_connect,
    parse_frame,
)
from tests.chat import test_consumers
from tests.chat.test_consumers import chat

# The socket fixtures of the consumer tests, shared by name.
open_socket = test_consumers.open_socket
join = test_consumers.join
stored = test_consumers.stored


@database_sync_to_async
def roll_back(thread_id: str, to_seq: int) -> None:
    """Lose the thread's messages above to_seq, as a replica missing commits would."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {Message._meta.db_table} WHERE thread_id = %s AND seq > %s",
            [thread_id, to_seq],
        )
        cursor.execute(
            f"UPDATE {Thread._meta.db_table} SET last_seq = %s WHERE id = %s",
            [to_seq, thread_id],
        )


@database_sync_to_async
def bump(*args: str) -> str:
    out = io.StringIO()
    call_command("thread_epoch_bump", *args, stdout=out)
    return out.getvalue()


@database_sync_to_async
def epoch_of(thread_id: str) -> str:
    return Thread.objects.get(pk=thread_id).epoch


async def recv_type(socket, kind: str) -> dict:
    """The next frame of a type (acks and chat.message frames may interleave)."""
    for _ in range(10):
        frame = await socket.recv()
        if frame["type"] == kind:
            return frame
    raise AssertionError(f"no {kind} frame")


# --- over the socket (the whole ASGI stack, real PostgreSQL and Redis) --------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.filterwarnings("ignore:No directory at:UserWarning")
async def test_rolled_back_thread_resets_and_reused_seqs_are_delivered(
    join, stored, alice
):
    await stored("room", alice, 6)
    old, hello = await join(alice, session_id="old", thread_id="room", last_seq=6)
    assert (hello["reset"], hello["recovered"], hello["last_seq"]) == (False, True, 6)
    epoch = hello["epoch"]
    await roll_back("room", 3)

    # The same epoch, but a last_seq above the thread's: the database went back.
    new, hello = await join(
        alice, session_id="new", thread_id="room", last_seq=6, epoch=epoch
    )
    assert (hello["last_seq"], hello["replay"], hello["recovered"]) == (3, 0, False)
    assert (hello["reset"], hello["epoch"]) == (True, epoch)
    await new.send(chat("after", "reused"))
    frames = {f["type"]: f for f in await new.recv_many(2)}
    assert frames["ack"]["seq"] == 4
    delivered = frames["chat.message"]
    assert (delivered["seq"], delivered["text"]) == (4, "reused")  # delivered

    # The socket that was open through the rollback had sent up to 6: it drops
    # 4 as old until its resume is answered with a reset, then gets the next ones.
    await old.send({"type": "resume", "last_seq": 6, "epoch": epoch})
    resumed = await recv_type(old, "resumed")
    assert resumed == {
        "type": "resumed",
        "replay": 0,
        "recovered": False,
        "reset": True,
    }
    await new.send(chat("again"))
    seqs = [(await recv_type(old, "chat.message"))["seq"]]
    if seqs[0] == 4:  # the layer may hand it seq 4 only after the resume: not old
        seqs.append((await recv_type(old, "chat.message"))["seq"])
    assert seqs[-1] == 5, seqs
    await old.silent()


@pytest.mark.django_db(transaction=True)
@pytest.mark.filterwarnings("ignore:No directory at:UserWarning")
async def test_epoch_bump_resets_a_client_with_the_old_epoch(join, stored, alice):
    await stored("room", alice, 3)
    first, hello = await join(alice, session_id="a", thread_id="room", last_seq=3)
    old_epoch = hello["epoch"]
    await first.close()
    assert "changed the epoch of 1 thread(s)" in await bump("--thread", "room")
    new_epoch = await epoch_of("room")
    assert new_epoch != old_epoch and EPOCH_RE.fullmatch(new_epoch)

    _, hello = await join(
        alice, session_id="b", thread_id="room", last_seq=3, epoch=old_epoch
    )
    assert (hello["replay"], hello["recovered"], hello["reset"]) == (0, False, True)
    assert hello["epoch"] == new_epoch
    # With the new epoch, the same last_seq is up to date again.
    _, hello = await join(
        alice, session_id="c", thread_id="room", last_seq=2, epoch=new_epoch
    )
    assert (hello["replay"], hello["recovered"], hello["reset"]) == (1, True, False)


@pytest.mark.django_db(transaction=True)
@pytest.mark.filterwarnings("ignore:No directory at:UserWarning")
async def test_resume_with_a_stale_epoch_is_a_reset(join, stored, alice):
    await stored("room", alice, 4)
    socket, hello = await join(alice, thread_id="room")
    await socket.send({"type": "resume", "last_seq": 1, "epoch": "stale-epoch"})
    assert await socket.recv() == {
        "type": "resumed",
        "replay": 0,
        "recovered": False,
        "reset": True,
    }
    await socket.send({"type": "resume", "last_seq": 2, "epoch": hello["epoch"]})
    assert (await socket.recv())["reset"] is False
    assert [f["seq"] for f in await socket.recv_many(2)] == [3, 4]
    for bad in ("a.b", "", 7, "e" * 33):
        await socket.send({"type": "resume", "last_seq": 0, "epoch": bad})
        assert (await socket.recv())["code"] == "bad_frame"
    await socket.silent()


# --- the connect round -------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_connect_reads_the_database_as_it_is_now(alice, post):
    Thread.objects.create(id="room")
    post("room", alice, 5)

    def open_(session_id: str, after_seq: int, epoch: str | None = None):
        request = SocketOpen(session_id, alice, "room", "inst-a", after_seq, epoch)
        (opened,) = socket_open_many(opens=[request], max_replay=100)
        return opened.replay

    epoch = open_("s1", 5).epoch
    assert open_("s2", 3, epoch).messages[0].seq == 4
    # A rollback between two connects of this process: nothing may hide it.
    Thread.objects.filter(pk="room").update(last_seq=2)
    Message.objects.filter(thread_id="room", seq__gt=2).delete()
    replay = open_("s3", 5, epoch)
    assert (replay.last_seq, replay.messages, replay.reset) == (2, [], True)
    assert open_("s4", 2, epoch).reset is False
    assert open_("s5", 2, "other").reset is True
    assert open_("s6", None, None).reset is False


# --- the model, the migration and the command --------------------------------------


@pytest.mark.django_db
def test_every_new_thread_has_its_own_epoch(alice):
    made = [Thread.objects.create(id=f"t{i}") for i in range(5)]
    Thread.objects.bulk_create([Thread(id=f"b{i}") for i in range(5)])
    epochs = [t.epoch for t in made] + list(
        Thread.objects.filter(id__startswith="b").values_list("epoch", flat=True)
    )
    assert len(set(epochs)) == 10
    assert all(EPOCH_RE.fullmatch(e) for e in epochs)


@pytest.mark.django_db
def test_migration_fills_distinct_epochs():
    Thread.objects.bulk_create([Thread(id=f"t{i}") for i in range(3)])
    Thread.objects.update(epoch="")
    migration = importlib.import_module("chat.migrations.0002_thread_epoch")
    migration.fill_epochs(apps, None)
    epochs = list(Thread.objects.values_list("epoch", flat=True))
    assert len(set(epochs)) == 3 and all(EPOCH_RE.fullmatch(e) for e in epochs)


@pytest.mark.django_db(transaction=True)
def test_bump_dry_run_changes_nothing():
    Thread.objects.bulk_create([Thread(id="a"), Thread(id="b")])
    before = dict(Thread.objects.values_list("pk", "epoch"))
    out = io.StringIO()
    call_command("thread_epoch_bump", "--dry-run", stdout=out)
    assert dict(Thread.objects.values_list("pk", "epoch")) == before
    assert f"a: {before['a']} -> (a new epoch)" in out.getvalue()
    assert "would change the epoch of 2 thread(s)" in out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_bump_every_thread_or_one():
    Thread.objects.bulk_create([Thread(id="a"), Thread(id="b")])
    before = dict(Thread.objects.values_list("pk", "epoch"))
    call_command("thread_epoch_bump", "--thread", "a", stdout=io.StringIO())
    after = dict(Thread.objects.values_list("pk", "epoch"))
    assert after["a"] != before["a"] and after["b"] == before["b"]
    call_command("thread_epoch_bump", stdout=io.StringIO())
    final = dict(Thread.objects.values_list("pk", "epoch"))
    assert final["a"] != after["a"] and final["b"] != after["b"]
    assert final["a"] != final["b"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("thread_id", ["nowhere", "bad.id"])
def test_bump_of_an_unknown_or_malformed_thread_fails(thread_id):
    with pytest.raises(CommandError):
        call_command("thread_epoch_bump", "--thread", thread_id, stdout=io.StringIO())


def test_bump_arguments_have_help():
    from chat.management.commands.thread_epoch_bump import Command

    parser = Command().create_parser("manage.py", "thread_epoch_bump")
    ours = [a for a in parser._actions if a.dest in ("thread_id", "dry_run")]
    assert len(ours) == 2 and all(a.help for a in ours)


# --- the codec ---------------------------------------------------------------------


def test_connect_epoch_parameter():
    assert parse_connect("s", b"epoch=Ab-_9").epoch == "Ab-_9"
    assert parse_connect("s", b"last_seq=3").epoch is None
    for bad in (b"epoch=", b"epoch=a.b", b"epoch=" + b"e" * 33, b"epoch=a&epoch=b"):
        with pytest.raises(ConnectError) as info:
            parse_connect("s", bad)
        assert info.value.close_code == 4400


def test_resume_epoch_field():
    assert parse_frame('{"type":"resume","last_seq":1}') == ResumeFrame(1, None)
    frame = parse_frame('{"type":"resume","last_seq":1,"epoch":"e1"}')
    assert frame == ResumeFrame(1, "e1")
    with pytest.raises(FrameError):
        parse_frame('{"type":"resume","last_seq":1,"epoch":"e 1"}')
