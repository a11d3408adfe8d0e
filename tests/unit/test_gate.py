"""Webhook-gated nights (sync/gate.py) and the gateways' webhook coverage (core/webhook_coverage.py), as tables.

Every rule of `decide` is one row that differs from a night that skips in exactly the input the rule reads, so
each row fails if its rule is dropped or reordered; `beat` is checked for each way coverage starts over."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from qbo_operator.core.webhook_coverage import MAX_GAP_SECONDS, Coverage, beat, from_lease, manifest
from qbo_operator.sync.gate import Gate, Night, decide, skip_message

NOW = datetime(2026, 12, 4, 2, 30, tzinfo=UTC)
DAY = timedelta(days=1)
GAP = timedelta(seconds=MAX_GAP_SECONDS)
LAST_READ = NOW - 2 * DAY
MARGIN = timedelta(minutes=10)
COVERED = Coverage(since=NOW - 5 * DAY, renewed=NOW - timedelta(seconds=20), max_gap=GAP)

# A night that skips: read two days ago, a webhook once before that, the gateways vouching since before it.
QUIET = Night(
    now=NOW,
    connected_at=NOW - 30 * DAY,
    last_read=LAST_READ,
    last_webhook=LAST_READ - DAY,
    rejected=0,
    every_days=7,
    requested=False,
    coverage=COVERED,
    margin=MARGIN,
)

CASES: list[tuple[str, dict[str, object], Gate]] = [
    ("nothing since the last read", {}, Gate.NO_WEBHOOKS),
    ("a person asked", {"requested": True}, Gate.REQUESTED),
    ("gating off for this integration", {"every_days": 0}, Gate.GATING_OFF),
    ("never read", {"last_read": None}, Gate.FIRST_READ),
    ("reconnected since the last read", {"connected_at": LAST_READ + timedelta(hours=1)}, Gate.FIRST_READ),
    ("refused payments to send again", {"rejected": 2}, Gate.REJECTED),
    ("last read 7 days ago", {"last_read": NOW - 7 * DAY}, Gate.FULL_READ_DUE),
    ("last read 7 days less 30 min ago (the schedule drifts)", {"last_read": NOW - 7 * DAY + timedelta(minutes=30)},
     Gate.FULL_READ_DUE),
    ("last read 6 days ago", {"last_read": NOW - 6 * DAY, "last_webhook": NOW - 7 * DAY,
                              "coverage": dataclasses.replace(COVERED, since=NOW - 8 * DAY)}, Gate.NO_WEBHOOKS),
    ("every day: last read 23 h ago", {"every_days": 1, "last_read": NOW - timedelta(hours=23)}, Gate.FULL_READ_DUE),
    ("a webhook after the last read", {"last_webhook": LAST_READ + timedelta(hours=3)}, Gate.WEBHOOKS),
    ("a webhook just before the last read (within the margin)", {"last_webhook": LAST_READ - timedelta(minutes=9)},
     Gate.WEBHOOKS),
    ("a webhook before the margin", {"last_webhook": LAST_READ - timedelta(minutes=11)}, Gate.NO_WEBHOOKS),
    ("no webhook ever", {"last_webhook": None}, Gate.UNCONFIRMED),
    ("no webhook since this connection", {"last_webhook": NOW - 31 * DAY}, Gate.UNCONFIRMED),
    ("no coverage Lease (or unreadable)", {"coverage": None}, Gate.NO_COVERAGE),
    ("the heartbeat is stale", {"coverage": dataclasses.replace(COVERED, renewed=NOW - GAP - timedelta(seconds=1))},
     Gate.GATEWAY_DOWN),
    ("coverage began after the last read", {"coverage": dataclasses.replace(COVERED, since=LAST_READ + DAY)},
     Gate.MAY_HAVE_LOST),
    ("coverage began within the margin",
     {"coverage": dataclasses.replace(COVERED, since=LAST_READ - timedelta(minutes=5))}, Gate.MAY_HAVE_LOST),
]  # fmt: skip


@pytest.mark.parametrize(("case", "change", "want"), CASES, ids=[c[0] for c in CASES])
def test_decide(case: str, change: dict[str, object], want: Gate) -> None:
    assert decide(dataclasses.replace(QUIET, **change)) is want  # type: ignore[arg-type]


def test_every_gate_has_a_row() -> None:
    assert {want for _, _, want in CASES} == set(Gate)


def test_the_first_rule_that_applies_wins() -> None:
    """A night that is due and had webhooks and a stale heartbeat says the earliest reason."""
    stale = dataclasses.replace(COVERED, renewed=NOW - DAY)
    both = dataclasses.replace(QUIET, last_read=NOW - 8 * DAY, last_webhook=NOW - DAY, coverage=stale)
    assert decide(both) is Gate.FULL_READ_DUE
    assert decide(dataclasses.replace(both, last_read=NOW - 2 * DAY)) is Gate.WEBHOOKS
    assert decide(dataclasses.replace(both, last_read=NOW - 2 * DAY, last_webhook=NOW - 3 * DAY)) is Gate.GATEWAY_DOWN


def test_a_skipped_night_says_when_the_next_read_is_due() -> None:
    text = skip_message(QUIET)
    assert "no QuickBooks reads" in text and (LAST_READ + 7 * DAY).date().isoformat() in text


T0 = datetime(2026, 12, 4, 0, 0, tzinfo=UTC)
S = timedelta(seconds=1)
HELD = Coverage(since=T0 - DAY, renewed=T0 - 30 * S, max_gap=GAP, holder="a")
BEATS: list[tuple[str, Coverage | None, bool, datetime | None, datetime]] = [
    ("first beat of the fleet", None, False, None, T0),
    ("a fresh heartbeat keeps its start", HELD, False, None, T0 - DAY),
    ("a replica that just started", HELD, True, None, T0),
    ("a gap longer than max_gap", dataclasses.replace(HELD, renewed=T0 - GAP - S), False, None, T0),
    ("a gap of exactly max_gap", dataclasses.replace(HELD, renewed=T0 - GAP), False, None, T0 - DAY),
    ("a delivery lost 10 s ago", HELD, False, T0 - 10 * S, T0 - 10 * S),
    ("a lost delivery never moves the start back", dataclasses.replace(HELD, since=T0 - 5 * S), False, T0 - 10 * S,
     T0 - 5 * S),
]  # fmt: skip


@pytest.mark.parametrize(("case", "previous", "restarted", "lost_at", "since"), BEATS, ids=[b[0] for b in BEATS])
def test_beat(case: str, previous: Coverage | None, restarted: bool, lost_at: datetime | None, since: datetime) -> None:
    after = beat(previous, T0, restarted=restarted, lost_at=lost_at, holder="b")
    assert (after.since, after.renewed, after.max_gap, after.holder) == (since, T0, GAP, "b")


def test_a_lease_round_trips() -> None:
    coverage = Coverage(since=T0 - DAY, renewed=T0, max_gap=GAP, holder="gw-1")
    assert from_lease(manifest("qbo-system", "production", coverage)) == coverage
    assert from_lease({"spec": {}}) is None
