"""Fixtures of the project-wiring tests."""

import importlib.metadata
from collections.abc import Callable

import pytest


@pytest.fixture
def installed_release(monkeypatch) -> Callable[[str, str], None]:
    """Make importlib.metadata report `version` as installed for `distribution`."""
    real_version = importlib.metadata.version

    def install(distribution: str, version: str) -> None:
        monkeypatch.setattr(
            importlib.metadata,
            "version",
            lambda name: (
                version if name.lower() == distribution else real_version(name)
            ),
        )

    return install
