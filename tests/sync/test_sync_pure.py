"""The sync command's pure parts: where the change window starts, conditions, the run summary, the token refresh
policy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from qbo_operator.core.models import Tokens
from qbo_operator.core.status import set_condition
from qbo_operator.core.tokens import dead_grant_reason, needs_refresh
from qbo_operator.sync.ledger import Stats, window_start

T0 = datetime(2026, 11, 24, 17, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("watermark", "expected"),
    [
        (None, T0),  # first run: from connectedAt
        (T0 + timedelta(hours=5), T0 + timedelta(hours=5)),  # no overlap: changes at or after the watermark
        (T0 + timedelta(minutes=5), T0 + timedelta(minutes=5)),
        (T0 + timedelta(seconds=1), T0 + timedelta(seconds=1)),
        (T0, T0),
        (T0 - timedelta(seconds=1), T0),  # never before connectedAt
        (T0 - timedelta(days=1), T0),
    ],
)
def test_window_start(watermark: datetime | None, expected: datetime) -> None:
    assert window_start(T0, watermark) == expected


def test_set_condition_moves_transition_time_only_on_status_change() -> None:
    first = set_condition([], "Synced", "True", "Succeeded", "ok", T0, generation=3)
    assert first == [{"type": "Synced", "status": "True", "reason": "Succeeded", "message": "ok",
                      "lastTransitionTime": "2026-11-24T17:00:00Z", "observedGeneration": 3}]  # fmt: skip
    other = {"type": "Ready", "status": "True", "reason": "Connected", "message": "", "lastTransitionTime": "x"}
    same = set_condition([other, *first], "Synced", "True", "RecordsRejected", "3 rejected", T0 + timedelta(hours=1))
    assert same[0] == other
    assert same[1]["lastTransitionTime"] == "2026-11-24T17:00:00Z" and same[1]["reason"] == "RecordsRejected"
    flipped = set_condition(same, "Synced", "False", "GreenCheckUnavailable", "down", T0 + timedelta(hours=2))
    assert flipped[1]["lastTransitionTime"] == "2026-11-24T19:00:00Z"


def test_summary_names_what_changed_what_was_left_out_and_what_was_rejected() -> None:
    s = Stats(payments_synced=10, amount_cents=123456, payments_skipped=3)
    s.records.update({"created": 12, "updated": 2, "retracted": 1, "unchanged": 4})
    s.skip_reasons.update({"voided": 2, "no invoice link": 1})
    s.rejected = [(str(i), "invoice.number: is required") for i in range(7)]
    text = s.summary()
    assert text.startswith("delivered 10 payments (12 created, 2 updated, 1 retracted; $1,234.56)")
    assert "4 records already current at Green Check" in text
    assert "left out 3 payments (1 no invoice link, 2 voided)" in text
    assert "Green Check rejected 7 payments: payment 0 (invoice.number: is required)" in text
    assert "payment 4 (" in text and "payment 5 (" not in text
    assert text.endswith("; and 2 more")


# --- token refresh policy ---------------------------------------------------------------------

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def tokens_at(**over: Any) -> Tokens:
    base = {
        "access_token": "a",
        "refresh_token": "r",
        "realm_id": "1",
        "scope": "s",
        "connected_at": NOW - timedelta(days=3),
        "expires_at": NOW + timedelta(hours=1),
        "refresh_token_expires_at": NOW + timedelta(days=100),
        "refreshed_at": NOW - timedelta(minutes=5),
    }
    return Tokens.model_validate({**base, **over})


@pytest.mark.parametrize(
    ("over", "refresh"),
    [
        ({}, False),
        ({"expires_at": NOW + timedelta(minutes=4, seconds=59)}, True),
        ({"expires_at": NOW + timedelta(minutes=5, seconds=1)}, False),
        ({"expires_at": NOW - timedelta(minutes=1)}, True),
        ({"refreshed_at": NOW - timedelta(hours=20, seconds=1)}, True),
        ({"refreshed_at": NOW - timedelta(hours=19, minutes=59)}, False),
        ({"refreshed_at": None, "connected_at": NOW - timedelta(hours=21)}, True),  # never refreshed
        ({"refreshed_at": None, "connected_at": NOW - timedelta(hours=1)}, False),
    ],
)
def test_needs_refresh(over: dict[str, Any], refresh: bool) -> None:
    assert needs_refresh(tokens_at(**over), NOW) is refresh


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({}, "TokenRevoked"),
        ({"refresh_token_expires_at": NOW - timedelta(seconds=1)}, "RefreshTokenExpired"),
        ({"refresh_token_hard_expires_at": NOW - timedelta(days=1)}, "RefreshTokenExpired"),
        ({"refresh_token_hard_expires_at": NOW + timedelta(days=1)}, "TokenRevoked"),
    ],
)
def test_dead_grant_reason(over: dict[str, Any], reason: str) -> None:
    assert dead_grant_reason(tokens_at(**over), NOW) == reason
