"""Fixtures of the fault tests: the end-to-end ones (isolated Daphnes, clients)."""

from tests.e2e.conftest import carol, clients, daphne  # noqa: F401 - shared fixtures
