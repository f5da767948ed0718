"""The chat admin: threads edited with autocomplete, messages paged and read-only."""

import pytest

from chat.models import Message, Thread

pytestmark = pytest.mark.django_db

THREADS = "/admin/chat/thread/"
MESSAGES = "/admin/chat/message/"


@pytest.fixture
def staff_client(client, make_user):
    client.force_login(make_user("root", is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def thread(alice, bob):
    main = Thread.objects.create(id="main", last_seq=150, created_by=alice)
    Message.objects.bulk_create(
        Message(
            thread=main,
            seq=n,
            client_id=f"m{n}",
            user=alice if n % 2 else bob,
            text=f"hello number {n}" if n != 77 else "the needle",
        )
        for n in range(1, 151)
    )
    Thread.objects.create(id="other", last_seq=1)
    Message.objects.create(
        thread_id="other", seq=1, client_id="x", user=bob, text="elsewhere"
    )
    return main


@pytest.mark.parametrize(
    "url",
    [
        THREADS,
        THREADS + "?q=main",
        THREADS + "main/change/",
        THREADS + "add/",
        MESSAGES,
        MESSAGES + "?thread__id=main",
        MESSAGES + "?thread__id=main&p=2",
        MESSAGES + "?user__username=BOB",
        MESSAGES + "?q=needle",
    ],
)
def test_admin_pages(staff_client, thread, url):
    response = staff_client.get(url)
    assert response.status_code == 200, url


def test_a_thread_page_links_to_its_messages_instead_of_listing_them(
    staff_client, thread
):
    page = staff_client.get(THREADS + "main/change/").content.decode()
    assert f'href="{MESSAGES}?thread__id=main">150 messages</a>' in page
    assert "hello number" not in page
    assert "main#1" not in page  # no inline rows titled by their text form


def test_members_and_creator_are_picked_by_autocomplete(staff_client, thread):
    page = staff_client.get(THREADS + "main/change/").content.decode()
    assert page.count("admin-autocomplete") >= 2
    assert "selector-available" not in page  # no list of every user


def test_a_threads_messages_are_paged_newest_first(staff_client, thread):
    page = staff_client.get(MESSAGES + "?thread__id=main").content.decode()
    assert page.count('class="field-seq"') == 100
    assert "elsewhere" not in page
    assert page.index(">150<") < page.index(">51<")
    assert 'name="thread__id"' in page and 'value="main"' in page
    second = staff_client.get(MESSAGES + "?thread__id=main&p=2").content
    assert second.decode().count('class="field-seq"') == 50


def test_messages_are_searchable(staff_client, thread, alice):
    page = staff_client.get(MESSAGES + "?q=needle").content.decode()
    assert page.count('class="field-seq"') == 1 and "the needle" in page
    assert f'href="/admin/auth/user/{alice.pk}/change/">alice</a>' in page
    assert f'href="{THREADS}main/change/">main</a>' in page


def test_a_thread_can_be_edited_but_not_deleted(staff_client, thread, alice, bob):
    form = {"id": "main", "private": "on", "members": [alice.pk, bob.pk]}
    response = staff_client.post(THREADS + "main/change/", form)
    assert response.status_code == 302, response.content[:2000]
    assert Thread.objects.get(pk="main").private
    assert (
        staff_client.post(THREADS + "main/delete/", {"post": "yes"}).status_code == 403
    )
    assert Message.objects.filter(thread_id="main").count() == 150


@pytest.mark.parametrize(
    ("method", "path"),
    [("post", "{pk}/change/"), ("get", "add/"), ("post", "{pk}/delete/")],
)
def test_messages_refuse_edits_and_deletes(staff_client, thread, method, path):
    message = Message.objects.get(thread_id="main", seq=1)
    url = MESSAGES + path.format(pk=message.pk)
    response = getattr(staff_client, method)(url, {"text": "rewritten", "post": "yes"})
    assert response.status_code == 403
    assert Message.objects.get(pk=message.pk).text == "hello number 1"


def test_a_message_page_has_no_form_to_save(staff_client, thread):
    message = Message.objects.get(thread_id="main", seq=77)
    page = staff_client.get(f"{MESSAGES}{message.pk}/change/").content.decode()
    assert "the needle" in page
    assert 'name="_save"' not in page and 'name="text"' not in page
