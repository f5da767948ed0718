"""emergence/compat/guard.py: release series and target shapes."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from emergence.compat import guard


@pytest.mark.parametrize(
    ("version", "numbers"),
    [("4.2.3", (4, 2, 3)), ("3.3.0rc1", (3, 3, 0)), ("4.2", (4, 2)), ("dev", ())],
)
def test_release(version, numbers):
    assert guard.release(version) == numbers


@pytest.mark.parametrize(
    ("installed", "matches"),
    [("4.2.0", True), ("4.2.3", True), ("4.2", True), ("4.20.1", False)]
    + [("4.3.0", False), ("5.0", False), ("4", False)],
)
def test_a_series_is_every_release_under_it(monkeypatch, installed, matches):
    monkeypatch.setattr(guard, "installed_version", lambda name: installed)
    assert guard.version_matches("daphne", "4.2", "test") is matches


def test_the_installed_version_is_read_from_the_metadata():
    assert guard.installed_version("daphne").startswith("4.2.")
    assert guard.installed_version("no-such-distribution-here") is None


class Target:
    attribute = 1

    def method(self, code, extra=None):
        return code


def test_require_returns_a_target_of_the_expected_shape():
    assert guard.require(Target, "attribute", patch="p") == 1
    found = guard.require(
        Target, "method", patch="p", parameters=("self", "code", "extra")
    )
    assert found is Target.method
    assert guard.require(Target, "method", patch="p", parameters=("code",), exact=False)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("gone", {}, r"^p: .*Target\.gone no longer exists"),
        ("method", {"parameters": ("self", "code")}, r"Target\.method takes"),
        ("method", {"parameters": ("reason",), "exact": False}, r"method takes"),
        ("attribute", {"parameters": ("self",)}, r"attribute is not callable"),
        ("attribute", {"kind": object}, r"attribute is not a class"),
    ],
)
def test_require_refuses_anything_else(name, options, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        guard.require(Target, name, patch="p", **options)


def test_require_checks_the_base_class():
    class Other:
        pass

    module = type("Module", (), {"Cls": Other})
    with pytest.raises(ImproperlyConfigured, match="is not a subclass of"):
        guard.require(module, "Cls", patch="p", kind=Target)
