"""emergence/compat/psycopg_pool.py: the capped backoff, swapped in once, guarded."""

import importlib.metadata
import logging

import pytest
from django.core.exceptions import ImproperlyConfigured
from psycopg_pool import base, pool

from emergence import compat
from emergence.compat import psycopg_pool as capped


def test_the_sync_pool_backs_off_with_the_capped_class():
    assert pool.AttemptWithBackoff is capped.capped_backoff()
    assert capped.CappedBackoff is capped.capped_backoff()
    assert issubclass(capped.CappedBackoff, base.AttemptWithBackoff)


def test_the_module_has_no_other_lazy_name():
    with pytest.raises(AttributeError):
        capped.UncappedBackoff  # noqa: B018


def test_the_cap_is_read_at_each_delay(settings):
    settings.DB_POOL_BACKOFF_MAX = 0.2
    attempt = capped.CappedBackoff(timeout=300.0)
    delays = []
    for _ in range(10):
        attempt.update_delay(1000.0)
        delays.append(attempt.delay)
    assert delays[0] < delays[1] < 0.2
    assert delays[-3:] == [0.2, 0.2, 0.2]


def test_the_library_backoff_is_untouched():
    attempt = base.AttemptWithBackoff(timeout=300.0)
    for _ in range(5):
        attempt.update_delay(1000.0)
    assert attempt.delay > 10  # 1 s doubled four times, give or take 10 %


def test_applying_again_changes_nothing():
    before = pool.AttemptWithBackoff
    compat.apply()
    capped.apply()
    assert pool.AttemptWithBackoff is before


@pytest.fixture
def unpatched(monkeypatch):
    """psycopg_pool as it is before the swap."""
    monkeypatch.setattr(pool, "AttemptWithBackoff", base.AttemptWithBackoff)


def test_an_unpatched_pool_gets_the_capped_class(unpatched):
    capped.apply()
    assert pool.AttemptWithBackoff is capped.CappedBackoff


def test_another_release_is_left_alone_with_one_warning(unpatched, monkeypatch, caplog):
    real_version = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata,
        "version",
        lambda name: "3.4.0" if name == "psycopg-pool" else real_version(name),
    )
    caplog.set_level(logging.WARNING, logger="emergence.compat")
    capped.apply()
    assert pool.AttemptWithBackoff is base.AttemptWithBackoff
    [record] = caplog.records
    assert (record.event, record.package, record.installed, record.expected) == (
        "compat_version_mismatch",
        "psycopg-pool",
        "3.4.0",
        "3.3.x",
    )


def test_an_uninstalled_release_is_a_mismatch_too(unpatched, monkeypatch, caplog):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    capped.apply()
    assert pool.AttemptWithBackoff is base.AttemptWithBackoff
    [record] = [r for r in caplog.records if r.name == "emergence.compat.guard"]
    assert (record.event, record.installed) == ("compat_version_mismatch", None)


@pytest.mark.parametrize("module", [pool, base])
def test_a_missing_class_stops_the_start_up(unpatched, monkeypatch, module):
    monkeypatch.delattr(module, "AttemptWithBackoff")
    with pytest.raises(
        ImproperlyConfigured, match=rf"{module.__name__}\.AttemptWithBackoff no longer"
    ):
        capped.apply()


def test_a_class_of_another_shape_stops_the_start_up(unpatched, monkeypatch):
    class Reworked(base.AttemptWithBackoff):
        def update_delay(self, now, jitter):
            return None

    monkeypatch.setattr(base, "AttemptWithBackoff", Reworked)
    with pytest.raises(ImproperlyConfigured, match="update_delay takes"):
        capped.apply()
    assert pool.AttemptWithBackoff is not capped.CappedBackoff
