"""The Content-Security-Policy of the HTML pages, and pages that live within it.

The browser itself runs the chat page under the policy in tests/web/test_browser.py.
"""

import re
from html.parser import HTMLParser

import pytest
from django.test import Client

from ops.csp import HEADER, POLICY

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.filterwarnings("ignore:No directory at:UserWarning"),
]


class InlineCode(HTMLParser):
    """Collects what a policy without 'unsafe-inline' would block in a page."""

    def __init__(self) -> None:
        super().__init__()
        self.blocked: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        data = names.get("type") == "application/json"
        if tag == "script" and "src" not in names and not data:
            self.blocked.append(f"inline <script {attrs}>")
        if tag == "style":
            self.blocked.append("<style>")
        for name, value in attrs:
            if name == "style" or name.startswith("on"):
                self.blocked.append(f"{tag} {name}={value!r}")
            if name in ("href", "src", "action") and (value or "").startswith(
                "javascript:"
            ):
                self.blocked.append(f"{tag} {name}={value!r}")


def blocked_in(html: str) -> list[str]:
    parser = InlineCode()
    parser.feed(html)
    return parser.blocked


@pytest.fixture
def alice_client(client: Client, alice) -> Client:
    client.force_login(alice)
    return client


def test_the_policy_allows_no_inline_script_and_no_framing():
    directives = dict(d.split(" ", 1) for d in POLICY.split("; "))
    assert directives["default-src"] == "'self'"
    assert "unsafe-inline" not in POLICY and "unsafe-eval" not in POLICY
    assert directives["object-src"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["base-uri"] == "'none'"
    assert set(directives["connect-src"].split()) == {"'self'", "ws:", "wss:"}


def test_the_chat_page_has_the_policy_and_nothing_it_blocks(alice_client):
    response = alice_client.get("/")
    assert response.status_code == 200
    assert response[HEADER] == POLICY
    html = response.content.decode()
    assert blocked_in(html) == []
    # The history is data, not code: a JSON block the policy lets be.
    assert re.search(r'<script id="history" type="application/json">', html)
    assert re.search(r'<script defer src="/static/chat/app\.js">', html)


@pytest.mark.parametrize("url", ["/login/", "/admin/login/"])
def test_login_pages_have_the_policy_and_nothing_it_blocks(client, url):
    response = client.get(url)
    assert response.status_code == 200
    assert response[HEADER] == POLICY
    assert blocked_in(response.content.decode()) == []


def test_an_edge_refusal_page_has_the_policy_too(client):
    response = client.get("/login/?next=%00")
    assert response.status_code == 400
    assert response[HEADER] == POLICY


@pytest.mark.parametrize("url", ["/api/health", "/api/threads/x/messages"])
def test_json_answers_carry_no_policy(client, url):
    response = client.get(url)
    assert response["Content-Type"] == "application/json"
    assert HEADER not in response


def test_a_policy_of_its_own_is_kept():
    from django.http import HttpResponse

    from ops.csp import with_policy

    response = HttpResponse("<p>x</p>", headers={HEADER: "default-src 'none'"})
    assert with_policy(response)[HEADER] == "default-src 'none'"
