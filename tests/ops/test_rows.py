"""ops.rows: rows by key in one array statement, the same rows as in_bulk's."""

from datetime import timedelta

import pytest
from django.contrib.sessions.models import Session
from django.db import connection
from django.db.models.manager import BaseManager
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from ops import rows

pytestmark = pytest.mark.django_db


def fields(instance) -> dict:
    return {f.attname: getattr(instance, f.attname) for f in instance._meta.fields}


@pytest.fixture(params=["arrays", "orm"])
def statements(request, monkeypatch):
    """Each test with the array statement, then with QuerySet.in_bulk (SQLite's)."""
    if request.param == "orm":
        monkeypatch.setattr(rows, "ARRAY_VENDORS", frozenset())
    return request.param


def test_the_rows_are_in_bulks_rows(statements, make_user, django_user_model):
    users = [make_user(f"rows-{i}") for i in range(3)]
    wanted = [users[2].pk, users[0].pk, users[0].pk, 10**9]  # a repeat, a missing one
    found = rows.rows_by_pk(django_user_model, wanted)
    expected = django_user_model.objects.in_bulk(wanted)
    assert found.keys() == expected.keys() == {users[0].pk, users[2].pk}
    for pk, user in found.items():
        assert type(user) is django_user_model
        assert fields(user) == fields(expected[pk])


def test_text_keys_and_converted_values(statements):
    expiry = timezone.now() + timedelta(days=1)
    Session.objects.create(session_key="k" * 32, session_data="{}", expire_date=expiry)
    [session] = rows.rows_by_pk(Session, ["k" * 32, "missing"]).values()
    assert session.expire_date == expiry and session.expire_date.tzinfo is not None


def test_a_key_longer_than_the_column_matches_nothing(statements):
    key = "k" * Session._meta.pk.max_length
    expiry = timezone.now() + timedelta(days=1)
    Session.objects.create(session_key=key, session_data="{}", expire_date=expiry)
    assert rows.rows_by_pk(Session, [key + "x"]) == {}


def test_no_keys_no_statement(statements, django_user_model):
    with CaptureQueriesContext(connection) as queries:
        assert rows.rows_by_pk(django_user_model, []) == {}
    assert len(queries) == 0


def test_any_number_of_keys_is_one_statement(statements, make_user, django_user_model):
    users = [make_user(f"many-{i}") for i in range(60)]
    with CaptureQueriesContext(connection) as queries:
        found = rows.rows_by_pk(django_user_model, [u.pk for u in users])
    assert len(found) == 60
    assert len(queries) == 1


def test_a_default_manager_that_narrows_its_rows_is_obeyed(
    make_user, django_user_model, monkeypatch
):
    gone = make_user("rows-inactive")
    gone.is_active = False
    gone.save()

    def active_only(manager):
        return BaseManager.get_queryset(manager).filter(is_active=True)

    manager = type(django_user_model._default_manager)
    monkeypatch.setattr(manager, "get_queryset", active_only)
    assert rows.rows_by_pk(django_user_model, [gone.pk]) == {}
