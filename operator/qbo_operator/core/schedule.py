"""Cron schedules with Jenkins-style `H`: a stable per-integration value that spreads many
integrations over the night instead of starting them all at 02:00."""

from __future__ import annotations

import hashlib
import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

# (lowest, highest) of each of the five cron fields.
_RANGES = ((0, 59), (0, 23), (1, 28), (1, 12), (0, 6))  # day-of-month stops at 28: valid in every month
_H_RANGE = re.compile(r"^H\((\d+)-(\d+)\)$")
_H_STEP = re.compile(r"^H/(\d+)$")
_MACROS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}


class ScheduleError(ValueError):
    pass


def _hash(seed: str, field: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}/{field}".encode()).digest()[:8], "big")


def _expand_token(token: str, field: int, seed: str) -> str:
    lo, hi = _RANGES[field]
    if token == "H":  # noqa: S105 - a cron token
        return str(lo + _hash(seed, field) % (hi - lo + 1))
    if m := _H_RANGE.match(token):
        a, b = int(m.group(1)), int(m.group(2))
        if a > b:
            raise ScheduleError(f"H({a}-{b}): the range is backwards")
        return str(a + _hash(seed, field) % (b - a + 1))
    if m := _H_STEP.match(token):
        step = int(m.group(1))
        if step < 1:
            raise ScheduleError("H/0: the step must be at least 1")
        return f"{lo + _hash(seed, field) % step}-{hi}/{step}"
    if "H" in token:
        raise ScheduleError(f"{token!r}: H may only stand alone, as H(a-b) or as H/step")
    return token


def expand(schedule: str, seed: str) -> str:
    """Replace each `H` with a value hashed from `seed` (namespace/name): stable across restarts."""
    schedule = schedule.strip()
    if schedule in _MACROS:
        return schedule
    fields = schedule.split()
    if len(fields) != 5:
        raise ScheduleError(
            f"{schedule!r} has {len(fields)} fields; a cron schedule has 5 (minute hour day month weekday)"
        )
    out = []
    for i, field in enumerate(fields):
        out.append(",".join(_expand_token(tok, i, seed) for tok in field.split(",")))
    return " ".join(out)


def validate_schedule(schedule: str) -> str:
    """The schedule with `H` expanded for a fixed seed; raises ScheduleError saying what is wrong."""
    expanded = expand(schedule, "validate")
    if "TZ=" in schedule or "CRON_TZ=" in schedule:
        raise ScheduleError("put the time zone in spec.timeZone, not in the schedule")
    if not croniter.is_valid(expanded):
        raise ScheduleError(f"{schedule!r} is not a valid 5-field cron schedule")
    return expanded


def validate_time_zone(zone: str) -> None:
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"{zone!r} is not an IANA time zone (for example America/Los_Angeles)") from None
