"""Start-up checks of a patch: the release it was written for, and its targets.

A patch replaces or calls private code of one release series. Before patching, it
checks its targets (`require`): one that is gone or has changed its parameters
stops the start-up (ImproperlyConfigured), because neither patching it nor going
without the fix is safe to do silently. Then the installed version
(`version_matches`): another series keeps the library as it is and logs one
WARNING (`compat_version_mismatch`), so that the fix is checked against the new
release (the upstream issue may be fixed there) before its range is widened.
"""

import importlib.metadata
import inspect
import logging
import re
from typing import Any

from django.core.exceptions import ImproperlyConfigured

logger = logging.getLogger(__name__)

_MISSING = object()


def installed_version(distribution: str) -> str | None:
    """The installed version of a distribution, None when it is not installed."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def release(version: str) -> tuple[int, ...]:
    """The numeric release of a version string: "4.2.3rc1" is (4, 2, 3)."""
    match = re.match(r"\d+(?:\.\d+)*", version)
    return tuple(int(part) for part in match.group().split(".")) if match else ()


def version_matches(distribution: str, series: str, patch: str) -> bool:
    """True for a release of `series` ("4.2": any 4.2.x); else one WARNING."""
    installed = installed_version(distribution)
    wanted = release(series)
    if installed is not None and release(installed)[: len(wanted)] == wanted:
        return True
    expected = f"{series}.x"
    logger.warning(
        "%s %s is installed but %s was written for %s: not applied; check the "
        "patch against this release, then update its version range",
        distribution,
        installed,
        patch,
        expected,
        extra={
            "event": "compat_version_mismatch",
            "package": distribution,
            "installed": installed,
            "expected": expected,
            "patch": patch,
        },
    )
    return False


def _qualified(owner: Any) -> str:
    if inspect.ismodule(owner):
        return owner.__name__
    return f"{owner.__module__}.{owner.__qualname__}"


def require(
    owner: Any,
    name: str,
    *,
    patch: str,
    kind: type | None = None,
    parameters: tuple[str, ...] | None = None,
    exact: bool = True,
) -> Any:
    """`owner.name`, of the kind and parameters given; else ImproperlyConfigured."""
    # kind: a class derived from it (`object`: any class). parameters: the names
    # of its parameters, all of them (exact: a replacement must accept what its
    # callers pass) or at least these (a method the patch calls).
    where = f"{_qualified(owner)}.{name}"
    target = getattr(owner, name, _MISSING)
    if target is _MISSING:
        raise ImproperlyConfigured(
            f"{patch}: {where} no longer exists; the installed release changed "
            f"what this patch fixes, so check the patch against it"
        )
    if kind is not None and not (isinstance(target, type) and issubclass(target, kind)):
        what = "a class" if kind is object else f"a subclass of {_qualified(kind)}"
        raise ImproperlyConfigured(f"{patch}: {where} is not {what}")
    if parameters is not None:
        try:
            found = tuple(inspect.signature(target).parameters)
        except (TypeError, ValueError) as exc:
            raise ImproperlyConfigured(f"{patch}: {where} is not callable") from exc
        matches = found == parameters if exact else set(parameters) <= set(found)
        if not matches:
            raise ImproperlyConfigured(
                f"{patch}: {where} takes {found}, the patch expects {parameters}"
            )
    return target
