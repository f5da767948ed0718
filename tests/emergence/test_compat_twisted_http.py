"""emergence/compat/twisted_http.py: the reason phrases Twisted lacks, guarded."""

import importlib.metadata
import logging

import pytest
from django.core.exceptions import ImproperlyConfigured
from twisted.web import http as twisted_http

from emergence.compat import twisted_http as fix


class Sent:
    """A twisted.web.http.Request as setResponseCode sees it."""

    code = 200
    code_message = b"OK"


def status_line(code: int) -> bytes:
    request = Sent()
    twisted_http.Request.setResponseCode(request, code)
    return f"{request.code} ".encode() + request.code_message


def test_the_start_up_gave_429_its_phrase():
    assert status_line(429) == b"429 Too Many Requests"
    assert status_line(451) == b"451 Unavailable For Legal Reasons"
    assert fix.missing_phrases(twisted_http.RESPONSES) == {}


def test_twisteds_own_phrases_are_kept():
    assert status_line(404) == b"404 Not Found"
    assert status_line(200) == b"200 OK"
    assert status_line(599) == b"599 Unknown Status"  # not a status Python names


def test_a_phrase_twisted_has_is_never_replaced():
    table = {429: b"Slow Down"}
    assert 429 not in fix.missing_phrases(table)
    assert fix.missing_phrases(table)[451] == b"Unavailable For Legal Reasons"


@pytest.fixture
def unpatched(monkeypatch):
    """Twisted's table as the release has it: no 429, nor the other gaps."""
    table = {
        code: phrase
        for code, phrase in twisted_http.RESPONSES.items()
        if code not in {102, 103, 208, 226, 421, 422, 423, 424, 425, 426}
        and code not in {428, 429, 431, 451, 506, 508, 511}
    }
    monkeypatch.setattr(twisted_http, "RESPONSES", table)
    return table


def test_an_unpatched_table_is_filled_in_once(unpatched):
    fix.apply()
    assert unpatched[429] == b"Too Many Requests"
    assert status_line(429) == b"429 Too Many Requests"
    before = dict(unpatched)
    fix.apply()
    assert unpatched == before


def test_another_twisted_release_is_left_alone_with_one_warning(
    unpatched, monkeypatch, caplog
):
    real_version = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata,
        "version",
        lambda name: "27.1.0" if name.lower() == "twisted" else real_version(name),
    )
    caplog.set_level(logging.WARNING, logger="emergence.compat")
    fix.apply()
    assert 429 not in unpatched
    [record] = caplog.records
    assert (record.event, record.installed, record.expected) == (
        "compat_version_mismatch",
        "27.1.0",
        "26.x",
    )
    assert record.patch == "emergence.compat.twisted_http"


def test_a_table_of_another_shape_stops_the_start_up(monkeypatch):
    monkeypatch.setattr(twisted_http, "RESPONSES", [(429, b"x")])
    with pytest.raises(ImproperlyConfigured, match="RESPONSES is not a dict"):
        fix.apply()


def test_a_lookup_of_another_shape_stops_the_start_up(monkeypatch):
    def set_response_code(self, code):
        self.code = code

    monkeypatch.setattr(twisted_http.Request, "setResponseCode", set_response_code)
    with pytest.raises(ImproperlyConfigured, match="setResponseCode takes"):
        fix.apply()
