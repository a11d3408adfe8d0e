"""Which integrations the operator-wide housekeeping scan ticks (`housekeeping.due`, pure): only those whose
clock-dependent deadline has passed, so an idle fleet costs no reconcile and no write."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from qbo_operator.core.models import Integration
from qbo_operator.reconciler.conditions import TokenState
from qbo_operator.reconciler.housekeeping import due

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
TODAY = NOW.strftime("%Y%m%d")


def stamp(delta: timedelta) -> str:
    return (NOW + delta).strftime("%Y-%m-%dT%H:%M:%SZ")


def integration(*, suspend: bool = False, deleting: bool = False, **status: Any) -> Integration:
    meta: dict[str, Any] = {"name": "acme", "namespace": "tenants", "uid": "u-1", "generation": 1}
    if deleting:
        meta["deletionTimestamp"] = stamp(timedelta(0))
    return Integration.from_object({"metadata": meta, "spec": {"companyId": "1", "suspend": suspend}, "status": status})


def connected(**extra: Any) -> dict[str, Any]:
    condition = {"type": "Connected", "status": "True", "reason": "Authorized", "message": "",
                 "lastTransitionTime": stamp(-timedelta(days=1))}  # fmt: skip
    return {"phase": "Connected", "conditions": [condition], **extra}


def token(refresh_in: timedelta = timedelta(days=90), hard_in: timedelta = timedelta(days=1000)) -> TokenState:
    return TokenState(
        present=True, realm_id="913", connected_at=NOW - timedelta(days=1), issued_at=NOW - timedelta(days=1),
        refresh_token_expires_at=NOW + refresh_in, refresh_token_hard_expires_at=NOW + hard_in,
    )  # fmt: skip


CASES: list[tuple[str, Integration, TokenState | None, str | None, bool]] = [
    ("link good for a week", integration(phase="Pending", authorizationURLExpiresAt=stamp(timedelta(days=7))),
     None, None, False),
    ("link within a day of expiry", integration(phase="Pending", authorizationURLExpiresAt=stamp(timedelta(hours=23))),
     None, None, True),
    ("link expired", integration(phase="Disconnected", authorizationURLExpiresAt=stamp(-timedelta(hours=1))),
     None, None, True),
    ("being deleted", integration(deleting=True, authorizationURLExpiresAt=stamp(-timedelta(hours=1))),
     None, None, False),
    ("connected, nothing near", integration(**connected()), token(), None, False),
    ("refresh token expired, status still Connected", integration(**connected()),
     token(refresh_in=-timedelta(minutes=1)), None, True),
    ("refresh token expired, already recorded", integration(phase="Disconnected"),
     token(refresh_in=-timedelta(minutes=1)), None, False),
    ("suspended, 20 days left: keep-alive refresh", integration(suspend=True, **connected()),
     token(refresh_in=timedelta(days=20)), None, True),
    ("not suspended, 20 days left: the sync refreshes it", integration(**connected()),
     token(refresh_in=timedelta(days=20)), None, False),
    ("hard expiry in 20 days, not warned today", integration(**connected()),
     token(hard_in=timedelta(days=20)), "20261203", True),
    ("hard expiry in 20 days, warned today", integration(**connected()),
     token(hard_in=timedelta(days=20)), TODAY, False),
    ("unusable token Secret", integration(**connected()), TokenState(present=True, error_key="realm_id"), None, False),
]  # fmt: skip


@pytest.mark.parametrize(("integ", "tok", "warned", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_due(integ: Integration, tok: TokenState | None, warned: str | None, expected: bool) -> None:
    assert due(integ, tok, NOW, warned) is expected
