"""Cron `H` expansion (schedule.py): stable per integration, within range, and spreading many integrations
over the hour instead of starting them all at 02:00."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from croniter import croniter

from qbo_operator.core.schedule import ScheduleError, expand, validate_schedule, validate_time_zone


@pytest.mark.parametrize(
    "schedule",
    ["H 2 * * *", "H H * * *", "H(10-20) 3 * * 1-5", "H/15 * * * *", "0,H 2 * * *", "H 2 H * *", "H 2 * H H"],
)
def test_expansion_is_stable_and_valid(schedule: str) -> None:
    first = expand(schedule, "tenants/acme")
    assert first == expand(schedule, "tenants/acme")  # same seed, same result (restarts change nothing)
    assert "H" not in first
    assert croniter.is_valid(first)
    assert len(first.split()) == 5


@pytest.mark.parametrize(
    ("schedule", "field", "lo", "hi"),
    [
        ("H 2 * * *", 0, 0, 59),
        ("0 H * * *", 1, 0, 23),
        ("0 0 H * *", 2, 1, 28),  # day of month stops at 28: valid in every month
        ("0 0 1 H *", 3, 1, 12),
        ("0 0 * * H", 4, 0, 6),
        ("H(10-20) 2 * * *", 0, 10, 20),
    ],
)
def test_expanded_values_stay_in_range(schedule: str, field: int, lo: int, hi: int) -> None:
    seen = {int(expand(schedule, f"ns/name-{i}").split()[field]) for i in range(500)}
    assert min(seen) >= lo and max(seen) <= hi
    assert len(seen) == hi - lo + 1  # 500 seeds reach every value of a range this small


def test_h_step_becomes_an_offset_range() -> None:
    minute = expand("H/15 * * * *", "tenants/acme").split()[0]
    start, step = minute.split("/")
    first, last = start.split("-")
    assert step == "15" and last == "59" and 0 <= int(first) < 15


def test_fixed_fields_and_macros_are_untouched() -> None:
    assert expand("5 4 * * 1", "a/b") == "5 4 * * 1"
    assert expand("@daily", "a/b") == "@daily"
    assert expand("  H 2 * * *  ", "a/b") == expand("H 2 * * *", "a/b")


def test_different_integrations_get_different_minutes() -> None:
    minutes = {expand("H 2 * * *", f"tenants/company-{i}") for i in range(20)}
    assert len(minutes) > 1


def test_the_default_schedule_spreads_a_thousand_integrations() -> None:
    """For "H 2 * * *", no minute of 02:00–02:59 holds more than twice the even share."""
    count = 1000
    minutes = Counter(expand("H 2 * * *", f"tenant-{i % 37}/company-{i}").split()[0] for i in range(count))
    assert set(minutes) <= {str(m) for m in range(60)}
    even_share = count / 60
    assert max(minutes.values()) <= 2 * even_share
    assert len(minutes) == 60  # and every minute is used


@pytest.mark.parametrize(
    ("schedule", "words"),
    [
        ("H 2 * *", "has 4 fields"),
        ("H 2 * * * *", "has 6 fields"),
        ("H2 * * * *", "H may only stand alone"),
        ("H(20-10) * * * *", "backwards"),
        ("H/0 * * * *", "at least 1"),
        ("61 2 * * *", "not a valid 5-field cron schedule"),
        ("0 25 * * *", "not a valid"),
        ("CRON_TZ=UTC 0 2 * *", "spec.timeZone"),
    ],
)
def test_bad_schedules_say_what_is_wrong(schedule: str, words: str) -> None:
    with pytest.raises(ScheduleError, match=re.escape(words)):
        validate_schedule(schedule)


@pytest.mark.parametrize("zone", ["UTC", "America/Los_Angeles", "Europe/Berlin"])
def test_real_time_zones(zone: str) -> None:
    validate_time_zone(zone)


@pytest.mark.parametrize("zone", ["Mars/Olympus", "America/Nowhere", "../etc/passwd", ""])
def test_unknown_time_zones(zone: str) -> None:
    with pytest.raises(ScheduleError, match="IANA time zone"):
        validate_time_zone(zone)
