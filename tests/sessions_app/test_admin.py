"""The admin pages operators use: lists with their filters, a thread with messages."""

import pytest
from django.utils import timezone

from chat.models import Message, Thread
from sessions_app.models import ChatSession, ConnectionEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client, make_user):
    client.force_login(make_user("root", is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def data(alice):
    thread = Thread.objects.create(id="main", last_seq=1)
    Message.objects.create(thread=thread, seq=1, client_id="m1", user=alice, text="hi")
    session = ChatSession.objects.create(
        id="s1", owner=alice, thread_key="main", last_seen_at=timezone.now()
    )
    ConnectionEvent.objects.create(
        session=session,
        session_key="s1",
        user=alice,
        kind="disconnect",
        code=1006,
        reason="abnormal_closure",
        duration_s=1.5,
        instance="a",
    )
    return thread


@pytest.mark.parametrize(
    "url",
    [
        "/admin/sessions_app/chatsession/?status__exact=active",
        "/admin/sessions_app/chatsession/?q=alice",
        "/admin/sessions_app/chatsession/?q=main",
        "/admin/sessions_app/connectionevent/?code=1006",
        "/admin/sessions_app/connectionevent/?kind__exact=disconnect",
        "/admin/sessions_app/chatsession/s1/change/",
        "/admin/chat/thread/",
        "/admin/chat/thread/main/change/",
        "/admin/chat/message/?thread__id__exact=main",
    ],
)
def test_admin_pages(staff_client, data, url):
    response = staff_client.get(url)
    assert response.status_code == 200, url


def test_sessions_are_found_by_thread_key(staff_client, data, bob):
    ChatSession.objects.create(
        id="s2", owner=bob, thread_key="elsewhere", last_seen_at=timezone.now()
    )
    page = staff_client.get("/admin/sessions_app/chatsession/?q=main").content
    assert b"/chatsession/s1/change/" in page
    assert b"/chatsession/s2/change/" not in page
    assert b'<td class="field-thread_key">main</td>' in page


def test_thread_page_shows_its_messages_read_only(staff_client, data):
    page = staff_client.get("/admin/chat/thread/main/change/").content.decode()
    assert "hi" in page and "m1" in page
    assert 'name="messages-0-text"' not in page  # inline is read-only


def test_events_cannot_be_edited(staff_client, data):
    event = ConnectionEvent.objects.get()
    response = staff_client.post(
        f"/admin/sessions_app/connectionevent/{event.pk}/change/", {"code": 1000}
    )
    assert response.status_code == 403
