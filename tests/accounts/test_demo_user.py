"""demo_user: created once; a second run (every `make run`) logs nobody out."""

import io
from types import SimpleNamespace

import pytest
from django.contrib import auth
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from accounts.management.commands.demo_user import Command

pytestmark = pytest.mark.django_db


def demo_user(*args: str) -> str:
    out = io.StringIO()
    call_command("demo_user", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def session_user(client):
    """The user the client's session resolves to, as every request checks it."""
    return auth.get_user(SimpleNamespace(session=client.session))


def test_the_first_run_creates_a_staff_user():
    out = demo_user("--url", "http://127.0.0.1:8123/")
    assert out.startswith("Created demo user demo. Log in at http://127.0.0.1:8123/")
    assert "as demo / emergence-demo (admin: http://127.0.0.1:8123/admin/)" in out
    user = get_user_model().objects.get(username="demo")
    assert user.is_staff and user.is_superuser and user.is_active
    assert user.check_password("emergence-demo")


def test_a_second_run_leaves_a_logged_in_session_valid(client):
    demo_user()
    assert client.login(username="demo", password="emergence-demo")
    hashed = get_user_model().objects.get(username="demo").password
    out = demo_user()
    assert "exists; its password is unchanged" in out
    assert get_user_model().objects.get(username="demo").password == hashed
    assert session_user(client).get_username() == "demo"
    assert client.get("/admin/").status_code == 200


def test_a_changed_password_is_kept(client):
    demo_user()
    user = get_user_model().objects.get(username="demo")
    user.set_password("mine-now")
    user.save()
    demo_user("--password", "another-one")
    assert client.login(username="demo", password="mine-now")


def test_reset_password_is_asked_for_and_logs_the_user_out(client):
    demo_user()
    assert client.login(username="demo", password="emergence-demo")
    out = demo_user("--reset-password", "--password", "fresh-password-1")
    assert out.startswith("Reset the password of demo user demo.")
    assert not session_user(client).is_authenticated
    assert client.get("/admin/").status_code == 302
    assert client.login(username="demo", password="fresh-password-1")


def test_another_name_is_another_user():
    demo_user()
    demo_user("--username", "carol", "--password", "carol-password-1")
    names = set(get_user_model().objects.values_list("username", flat=True))
    assert {"demo", "carol"} <= names


def test_empty_values_are_refused():
    with pytest.raises(CommandError, match="must not be empty"):
        demo_user("--password", "")


def test_every_argument_has_help():
    parser = Command().create_parser("manage.py", "demo_user")
    wanted = {"username", "password", "reset_password", "url"}
    ours = {a.dest: a.help for a in parser._actions if a.dest in wanted}
    assert set(ours) == wanted and all(ours.values())
    assert "logs it out everywhere" in ours["reset_password"]
