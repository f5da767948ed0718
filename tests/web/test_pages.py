"""The login and chat pages through Django's test client (no browser)."""

import json
import re

import pytest
from django.test import Client

from chat.models import Thread
from chat.services import message_create

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.filterwarnings("ignore:No directory at:UserWarning"),
]


def history_of(html: str) -> list[dict]:
    match = re.search(
        r'<script id="history" type="application/json">(.*?)</script>', html, re.S
    )
    assert match, html
    return json.loads(match.group(1))


@pytest.fixture
def alice_client(client: Client, alice) -> Client:
    client.force_login(alice)
    return client


def test_chat_page_needs_a_login(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/"


def test_login_page_is_styled_and_labelled(client):
    html = client.get("/login/?next=/").content.decode()
    assert '<link rel="icon" href="data:,">' in html
    assert '<link rel="stylesheet" href="/static/chat/app.css">' in html
    assert '<label for="id_username">Username</label>' in html
    assert '<label for="id_password">Password</label>' in html
    assert 'autocomplete="current-password"' in html
    assert 'name="next" value="/"' in html
    assert "<script" not in html  # the login page loads no JavaScript


def test_login_failure_is_announced(client, alice):
    response = client.post("/login/", {"username": "alice", "password": "wrong"})
    html = response.content.decode()
    assert response.status_code == 200
    assert 'role="alert"' in html
    assert "Please enter a correct username and password" in html
    assert 'aria-invalid="true"' in html
    assert 'value="alice"' in html


def test_login_then_logout_by_post(client, alice, password):
    response = client.post(
        "/login/", {"username": "alice", "password": password, "next": "/"}
    )
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.get("/").status_code == 200
    assert client.get("/logout/").status_code == 405  # logging out is a POST
    response = client.post("/logout/")
    assert response.status_code == 302 and response["Location"] == "/login/"
    assert client.get("/").status_code == 302


def test_chat_page_structure(alice_client):
    response = alice_client.get("/")
    html = response.content.decode()
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    # One CSS file, one deferred script, no favicon request.
    assert re.findall(r'(?:src|href)="(/static/[^"]+)"', html) == [
        "/static/chat/app.css",
        "/static/chat/app.js",
    ]
    assert '<script defer src="/static/chat/app.js"></script>' in html
    assert '<link rel="icon" href="data:,">' in html
    assert 'data-page="chat" data-user="alice" data-thread="main"' in html
    # Labels and live regions.
    assert '<label for="composer" class="visually-hidden">Message to #main' in html
    assert 'role="status"' in html and 'role="alert"' in html and 'role="log"' in html
    assert 'id="present"' in html
    assert re.search(r'<form method="post" action="/logout/"', html)
    assert 'name="csrfmiddlewaretoken"' in html
    assert history_of(html) == []


def test_chat_page_carries_the_newest_messages(alice_client, alice, bob):
    for i in range(1, 61):
        message_create(
            thread_id=Thread.objects.get_or_create(pk="main")[0].pk,
            user=bob if i % 2 else alice,
            client_id=f"c{i}",
            text=f"<b>message {i}</b>",
        )
    html = alice_client.get("/").content.decode()
    history = history_of(html)
    assert [m["seq"] for m in history] == list(range(11, 61))
    assert history[-1]["text"] == "<b>message 60</b>"
    assert history[-1]["user"] == "alice"
    assert "<b>message" not in html  # JSON-escaped, never markup


def test_thread_picker_lists_what_the_user_may_open(alice_client, alice, bob):
    Thread.objects.create(id="public-one")
    mine = Thread.objects.create(id="alice-and-bob", private=True)
    mine.members.add(alice, bob)
    theirs = Thread.objects.create(id="bob-only", private=True)
    theirs.members.add(bob)
    html = alice_client.get("/?thread=new-one").content.decode()
    links = re.findall(r'<a href="\?thread=([^"]+)"', html)
    # Public threads first, then the user's private ones (their own list).
    assert links == ["new-one", "public-one", "alice-and-bob"]
    private = html.split('id="private-threads"', 1)[1].split("</ul>", 1)[0]
    assert "?thread=alice-and-bob" in private and "bob-only" not in html
    assert 'href="?thread=new-one" data-thread="new-one" aria-current="page"' in html


def test_private_thread_of_others_gets_no_history(alice_client, bob):
    theirs = Thread.objects.create(id="bob-only", private=True)
    theirs.members.add(bob)
    message_create(thread_id="bob-only", user=bob, client_id="x", text="secret")
    response = alice_client.get("/?thread=bob-only")
    html = response.content.decode()
    assert response.status_code == 200  # the socket's 4403 explains it on the page
    assert history_of(html) == []
    assert "secret" not in html
    assert "bob-only</a>" not in html


def test_malformed_thread_is_escaped_and_gets_no_history(alice_client):
    response = alice_client.get('/?thread="><script>x</script>')
    html = response.content.decode()
    assert response.status_code == 200
    assert "<script>x</script>" not in html
    assert history_of(html) == []
