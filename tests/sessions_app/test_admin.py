"""The sessions admin: pages render, records are read-only, events and sessions link."""

import pytest
from django.utils import timezone

from sessions_app.models import ChatSession, ConnectionEvent

pytestmark = pytest.mark.django_db

SESSIONS = "/admin/sessions_app/chatsession/"
EVENTS = "/admin/sessions_app/connectionevent/"


@pytest.fixture
def staff_client(client, make_user):
    client.force_login(make_user("root", is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def data(alice):
    session = ChatSession.objects.create(
        id="s1", owner=alice, thread_key="main", last_seen_at=timezone.now()
    )
    event = ConnectionEvent.objects.create(
        session=session,
        session_key="s1",
        user=alice,
        kind="disconnect",
        code=1006,
        reason="abnormal_closure",
        duration_s=1.5,
        instance="a",
    )
    # A refused socket that named a session of someone else: no session, no user.
    refused = ConnectionEvent.objects.create(
        session_key="not-ours", kind="disconnect", code=4401, reason="unauthenticated"
    )
    return session, event, refused


@pytest.mark.parametrize(
    "url",
    [
        SESSIONS,
        SESSIONS + "?status__exact=active",
        SESSIONS + "?q=alice",
        SESSIONS + "?q=main",
        SESSIONS + "?owner__username=ALICE",
        SESSIONS + "s1/change/",
        EVENTS,
        EVENTS + "?code=1006",
        EVENTS + "?kind__exact=disconnect",
        EVENTS + "?session_key=s1",
        EVENTS + "?user__username=alice&q=main",
        EVENTS + "?instance=a",
    ],
)
def test_admin_pages(staff_client, data, url):
    response = staff_client.get(url)
    assert response.status_code == 200, url


def test_sessions_are_found_by_thread_key(staff_client, data, bob):
    ChatSession.objects.create(
        id="s2", owner=bob, thread_key="elsewhere", last_seen_at=timezone.now()
    )
    page = staff_client.get(SESSIONS + "?q=main").content
    assert b"/chatsession/s1/change/" in page
    assert b"/chatsession/s2/change/" not in page
    assert b'<td class="field-thread_key">main</td>' in page


def test_the_owner_is_typed_not_picked_from_every_user(staff_client, data, make_user):
    for n in range(30):
        make_user(f"someone{n}")
    page = staff_client.get(SESSIONS).content.decode()
    assert 'name="owner__username"' in page
    assert "someone7" not in page
    filtered = staff_client.get(SESSIONS + "?owner__username=ALICE&q=main")
    text = filtered.content.decode()
    assert "/chatsession/s1/change/" in text
    # The box keeps the search and shows what was typed.
    assert 'name="q" value="main"' in text and 'value="ALICE"' in text
    nobody = staff_client.get(SESSIONS + "?owner__username=someone7")
    assert "/chatsession/s1/change/" not in nobody.content.decode()


def test_events_link_to_their_session_and_user(staff_client, data, alice):
    page = staff_client.get(EVENTS).content.decode()
    assert f'href="{SESSIONS}s1/change/">s1</a>' in page
    assert f'href="/admin/auth/user/{alice.pk}/change/">alice</a>' in page
    # The refused socket's session is not a session of ours: its key, no link.
    assert '<td class="field-session_link">not-ours</td>' in page


def test_an_event_page_links_to_the_others_of_its_session_and_user(staff_client, data):
    _, event, refused = data
    page = staff_client.get(f"{EVENTS}{event.pk}/change/").content.decode()
    assert f'href="{SESSIONS}s1/change/"' in page
    assert f'href="{EVENTS}?session_key=s1"' in page
    assert f'href="{EVENTS}?user__username=alice"' in page
    page = staff_client.get(f"{EVENTS}{refused.pk}/change/").content.decode()
    assert f'href="{EVENTS}?session_key=not-ours"' in page
    assert "user__username" not in page.split("other events")[-1]


def test_a_session_links_to_its_filtered_events(staff_client, data, bob):
    ConnectionEvent.objects.create(session_key="s9", user=bob, kind="connect")
    page = staff_client.get(SESSIONS + "s1/change/").content.decode()
    assert f'href="{EVENTS}?session_key=s1"' in page
    listed = staff_client.get(f"{EVENTS}?session_key=s1").content.decode()
    assert listed.count('class="field-session_link"') == 1
    assert "s9" not in listed


@pytest.mark.parametrize(
    ("method", "path", "form"),
    [
        ("post", SESSIONS + "s1/change/", {"status": "closed"}),
        ("get", SESSIONS + "add/", None),
        ("post", SESSIONS + "s1/delete/", {"post": "yes"}),
        ("post", EVENTS + "{event}/change/", {"code": 1000}),
        ("get", EVENTS + "add/", None),
        ("post", EVENTS + "{event}/delete/", {"post": "yes"}),
    ],
)
def test_sessions_and_events_refuse_edits_and_deletes(
    staff_client, data, method, path, form
):
    _, event, _ = data
    response = getattr(staff_client, method)(path.format(event=event.pk), form)
    assert response.status_code == 403, path
    assert ChatSession.objects.get(pk="s1").status == "active"
    assert ConnectionEvent.objects.count() == 2


@pytest.mark.parametrize("url", [SESSIONS, EVENTS])
def test_lists_offer_no_bulk_delete(staff_client, data, url):
    page = staff_client.get(url).content.decode()
    assert "delete_selected" not in page
    response = staff_client.post(
        url, {"action": "delete_selected", "_selected_action": ["s1"], "post": "yes"}
    )
    assert response.status_code in (200, 302)
    assert ChatSession.objects.count() == 1 and ConnectionEvent.objects.count() == 2


@pytest.mark.parametrize("url", [SESSIONS + "s1/change/", EVENTS + "{event}/change/"])
def test_detail_pages_have_no_form_to_save(staff_client, data, url):
    _, event, _ = data
    page = staff_client.get(url.format(event=event.pk)).content.decode()
    assert 'name="_save"' not in page
    assert 'name="status"' not in page
