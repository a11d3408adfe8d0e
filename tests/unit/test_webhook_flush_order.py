"""Which webhook counts a flush writes first (`gateway.webhooks.urgent` and `split`, pure), checked against the
sync's own gate (`sync.gate.decide`) as the independent model: a count left waiting never turns a night that
would read QuickBooks into one that skips it."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from qbo_operator.core.models import Integration
from qbo_operator.core.webhook_coverage import Coverage
from qbo_operator.gateway.webhooks import Pending, split, urgent
from qbo_operator.sync.gate import Gate, Night, decide

READ = datetime(2026, 12, 3, 2, 0, tzinfo=UTC)  # the last read
CONNECTED = READ - timedelta(days=30)
NOW = READ + timedelta(hours=22)  # tonight's run


def stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def integration(last_read: datetime | None, last_event: datetime | None) -> Integration:
    status: dict[str, Any] = {"connectedAt": stamp(CONNECTED)}
    if last_read is not None:
        status["lastReadTime"] = stamp(last_read)
    if last_event is not None:
        status["webhook"] = {"lastEventTime": stamp(last_event), "eventsSinceLastSync": 1}
    meta = {"name": "acme", "namespace": "tenants", "uid": "u-1", "generation": 1}
    return Integration.from_object({"metadata": meta, "spec": {"companyId": "1"}, "status": status})


@pytest.mark.parametrize(
    ("last_read", "last_event", "expected"),
    [
        (None, None, False),  # no read yet: the night reads whatever the count (FirstRead)
        (None, READ, False),
        (READ, None, True),  # read, never a webhook: the first one matters
        (READ, READ - timedelta(hours=1), True),  # the last webhook was before the read
        (READ, READ, False),  # a webhook since the read is already in status
        (READ, READ + timedelta(hours=3), False),
    ],
)
def test_urgent(last_read: datetime | None, last_event: datetime | None, expected: bool) -> None:
    assert urgent(integration(last_read, last_event)) is expected


def test_an_integration_the_index_does_not_hold_is_urgent() -> None:
    assert urgent(None) is True


def night(last_read: datetime | None, last_webhook: datetime | None, margin: timedelta) -> Night:
    coverage = Coverage(since=CONNECTED, renewed=NOW, max_gap=timedelta(minutes=2))
    return Night(now=NOW, connected_at=CONNECTED, last_read=last_read, last_webhook=last_webhook, rejected=0,
                 every_days=7, requested=False, coverage=coverage, margin=margin)  # fmt: skip


TIMES = [None, CONNECTED - timedelta(days=1), READ - timedelta(hours=2), READ - timedelta(minutes=5), READ,
         READ + timedelta(minutes=5), READ + timedelta(hours=5)]  # fmt: skip


@pytest.mark.parametrize("margin", [timedelta(0), timedelta(minutes=10), timedelta(hours=3)])
def test_a_count_that_is_not_urgent_never_changes_whether_a_night_skips(margin: timedelta) -> None:
    """Every stored status against every pending webhook time: writing a count that is not urgent leaves the
    gate's skip-or-read answer as it was (writing only moves lastEventTime later)."""
    checked = 0
    for last_read, stored, arrived in itertools.product([None, READ], TIMES, [t for t in TIMES if t is not None]):
        if urgent(integration(last_read, stored)):
            continue
        written = arrived if stored is None else max(stored, arrived)
        before = decide(night(last_read, stored, margin)) is Gate.NO_WEBHOOKS
        after = decide(night(last_read, written, margin)) is Gate.NO_WEBHOOKS
        assert before == after, (last_read, stored, arrived)
        checked += 1
    assert checked > 20


def pending(*ages: float) -> dict[tuple[str, str], Pending]:
    return {("ns", f"i{n}"): Pending(f"u{n}", 1, READ, since=1000.0 - age) for n, age in enumerate(ages)}


@pytest.mark.parametrize(
    ("ages", "urgent_names", "limit", "taken"),
    [
        ((5, 4, 3), set(), 3, {"i0", "i1", "i2"}),  # at most the limit: everything
        ((5, 4, 3), {"i2"}, 3, {"i0", "i1", "i2"}),
        ((1, 9, 5, 7), set(), 2, {"i1", "i3"}),  # over it: the oldest
        ((1, 9, 5, 7), {"i0"}, 2, {"i0", "i1"}),  # urgent first, then the oldest
        ((1, 9, 5, 7), {"i0", "i2", "i3"}, 2, {"i0", "i2", "i3"}),  # every urgent one, even past the limit
        ((1, 9, 5, 7), set(), 0, set()),
    ],
)
def test_split(ages: tuple[float, ...], urgent_names: set[str], limit: int, taken: set[str]) -> None:
    items = pending(*ages)
    take, keep = split(items, lambda key: key[1] in urgent_names, limit)
    assert {name for _, name in take} == taken
    assert take.keys() | keep.keys() == items.keys() and not take.keys() & keep.keys()
