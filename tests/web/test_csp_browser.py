"""The pages under their Content-Security-Policy in a real Chromium (ops/csp.py):
nothing is blocked, and the chat works (socket, history, sending)."""

import pytest

from ops.csp import HEADER, POLICY
from tests.conftest import assert_no_errors
from tests.web.test_browser import log_in, send, texts, wait_connected, wait_until

pytestmark = pytest.mark.e2e

# Every violation the page meets, kept on the window before any page script runs.
RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`);
});
"""


def violations(page) -> list[str]:
    return page.evaluate("window.__cspViolations")


def test_the_chat_runs_under_its_policy(daphne, contexts, alice, password):
    server = daphne("a")
    context = contexts.new()
    context.add_init_script(RECORD_VIOLATIONS)
    console: list[str] = []
    context.on("console", lambda message: console.append(message.text))
    answers = []
    context.on("response", lambda response: answers.append(response))

    page = log_in(context, server, "alice", password)
    login_answer = next(a for a in answers if a.url.endswith("/login/?next=/"))
    assert login_answer.headers[HEADER.lower()] == POLICY
    assert violations(page) == []
    wait_connected(page)
    send(page, "under the policy")
    wait_until(page, lambda: "under the policy" in texts(page))

    assert page.evaluate("document.getElementById('history').type") == (
        "application/json"
    )
    assert violations(page) == []
    assert not [line for line in console if "Content Security Policy" in line]
    assert_no_errors(server)
