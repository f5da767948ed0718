"""Fixtures of the web client tests: collected static files, Daphnes, Chromium.

The Daphne subprocesses run with DEBUG off, so they use the manifest storage
(hashed, compressed names): the session collects the static files once into a
temporary STATIC_ROOT and every Daphne of these tests serves that directory.
Chromium is Debian's /usr/bin/chromium (or $CHROMIUM), driven by Playwright.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.page import CHROMIUM, CHROMIUM_ARGS
from bench.servers import started
from tests.e2e.wsclient import isolated_daphne
from tests.servers import ROOT, DaphneProcess, subprocess_env

ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="session")
def static_root(tmp_path_factory) -> Path:
    """`collectstatic` with the production storage into a directory of this run."""
    root = tmp_path_factory.mktemp("staticfiles")
    env = subprocess_env(STATIC_ROOT=str(root))
    done = subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return root


@pytest.fixture
def daphne(transactional_db, tmp_path, static_root):
    """Start Daphnes (name, port=None, **env) serving the collected static files,
    with Redis keys of this test's own (tests/e2e/wsclient.isolated_daphne)."""

    def make(name: str = "a", port: int | None = None, **env: str) -> DaphneProcess:
        env = {"STATIC_ROOT": str(static_root), **env}
        return DaphneProcess(name, tmp_path, port=port, **env)

    with started(make) as start:
        yield from isolated_daphne(start)


@pytest.fixture(autouse=True)
def _orm_beside_playwright(monkeypatch):
    """Playwright's sync API keeps an asyncio loop running in this thread, which
    makes Django refuse every ORM call ("async context"); the calls here are plain
    synchronous ones (Playwright's documented workaround for Django)."""
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium per test module; contexts are per test."""
    if not os.access(CHROMIUM, os.X_OK):
        message = f"{CHROMIUM} is missing: apt-get install -y chromium"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS
        )
        try:
            yield instance
        finally:
            instance.close()


@pytest.fixture
def contexts(browser):
    """browser contexts opened through contexts.new(...); all closed at teardown."""

    class Contexts:
        def __init__(self) -> None:
            self.opened = []

        def new(self, **kwargs):
            context = browser.new_context(**kwargs)
            context.set_default_timeout(15_000)
            self.opened.append(context)
            return context

    registry = Contexts()
    yield registry
    for context in registry.opened:
        context.close()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
