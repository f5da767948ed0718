"""Durations on the command line: `90`, `90s`, `15m`, `1h`, `7d` (also `1.5h`)."""

import argparse
import re
from datetime import timedelta

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
# timedelta's own limit is ~2.7 million years; nobody means more than a century.
MAX_DURATION = timedelta(days=36500)


def parse_duration(text: str) -> timedelta:
    """A positive duration from `<number>[s|m|h|d]` (bare: seconds), else ValueError."""
    match = _DURATION_RE.match(text or "")
    if match is None:
        raise ValueError(
            f"bad duration {text!r}: a number with an optional unit s, m, h or d "
            "(e.g. 90s, 15m, 1h, 7d)"
        )
    number, unit = match.groups()
    seconds = float(number) * _UNIT_SECONDS[unit.lower()]
    if seconds <= 0:
        raise ValueError(f"bad duration {text!r}: must be more than zero")
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError(f"bad duration {text!r}: more than {MAX_DURATION.days} days")
    return timedelta(seconds=seconds)


def duration_arg(text: str) -> timedelta:
    """argparse `type=` for a duration: a bad value becomes a usage error."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
