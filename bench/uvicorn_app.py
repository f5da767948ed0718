"""Emergence's application for Uvicorn, readied as emergence.server readies Daphne's."""

from typing import Any


def application() -> Any:
    """Uvicorn's --factory: load the application, then the log queue and gc freeze."""
    from emergence.asgi import application as app
    from emergence.server import prepare_to_serve

    prepare_to_serve()
    return app
