"""Figures counted at commit and per replay: messages stored, replays."""

import pytest
from django.db import transaction
from prometheus_client import REGISTRY

from chat.models import Thread
from chat.services import message_create
from ops import metrics

pytestmark = pytest.mark.django_db


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def test_a_message_is_counted_once_its_transaction_commits(
    alice, django_capture_on_commit_callbacks
):
    Thread.objects.create(id="main")
    before = sample("emergence_messages_stored_total")
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        message_create(thread_id="main", user=alice, client_id="c1", text="hi")
    assert len(callbacks) == 1
    assert sample("emergence_messages_stored_total") == before + 1


def test_a_resend_is_not_a_message_stored(alice, django_capture_on_commit_callbacks):
    Thread.objects.create(id="main")
    message_create(thread_id="main", user=alice, client_id="c1", text="hi")
    before = sample("emergence_messages_stored_total")
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        result = message_create(thread_id="main", user=alice, client_id="c1", text="x")
    assert result.duplicate
    assert callbacks == []
    assert sample("emergence_messages_stored_total") == before


def test_a_rolled_back_message_is_not_counted(
    alice, django_capture_on_commit_callbacks
):
    Thread.objects.create(id="main")
    before = sample("emergence_messages_stored_total")
    capture = django_capture_on_commit_callbacks(execute=True)
    with capture as callbacks, pytest.raises(RuntimeError), transaction.atomic():
        message_create(thread_id="main", user=alice, client_id="c2", text="hi")
        raise RuntimeError("rolled back")
    assert callbacks == []
    assert sample("emergence_messages_stored_total") == before


def test_a_replay_counts_once_with_its_messages():
    replays = sample("emergence_replays_total")
    replayed = sample("emergence_replayed_messages_total")
    metrics.replay_sent(3)
    metrics.replay_sent(0)  # a connect with nothing to catch up on
    assert sample("emergence_replays_total") == replays + 1
    assert sample("emergence_replayed_messages_total") == replayed + 3
