"""`qbo_app_credentials_rejected{environment}` (reconciler/metrics.py): the newest evidence per environment wins —
the operator's own refreshes and each integration's last run (refused: Synced=False AppCredentialsInvalid)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from qbo_operator.core.models import Integration
from qbo_operator.reconciler.metrics import AppCredentialsOutcomes, app_credentials_family, seen

T0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)


def integ(environment: str, result: str | None, reason: str = "", minutes: int = 0) -> Integration:
    status: dict[str, Any] = {}
    if result is not None:
        finished = (T0 + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")
        status["lastSync"] = {"result": result, "finishedAt": finished}
        ok = result != "Failed"
        status["conditions"] = [
            {"type": "Synced", "status": "True" if ok else "False", "reason": reason or "Succeeded", "message": ""}
        ]
    body = {
        "metadata": {"namespace": "t", "name": f"{environment}-{result}-{minutes}", "uid": "u"},
        "spec": {"companyId": "5f0c3a2e-8d1b-4c7e-9a61-2b7f3c9d4e10", "environment": environment},
        "status": status,
    }
    return Integration.from_object(body)


REFUSED, OTHER_FAILURE, WORKED = (
    ("Failed", "AppCredentialsInvalid"),
    ("Failed", "QuickbooksUnavailable"),
    ("Succeeded", ""),
)


@pytest.mark.parametrize(
    ("runs", "own", "expected"),
    [
        ([], None, {"production": 0, "sandbox": 0}),
        ([("production", *REFUSED, 0)], None, {"production": 1, "sandbox": 0}),
        ([("sandbox", *REFUSED, 0)], None, {"production": 0, "sandbox": 1}),
        ([("production", *OTHER_FAILURE, 0)], None, {"production": 0, "sandbox": 0}),
        ([("production", *REFUSED, 0), ("production", *WORKED, 5)], None, {"production": 0, "sandbox": 0}),
        ([("production", *WORKED, 0), ("production", *REFUSED, 5)], None, {"production": 1, "sandbox": 0}),
        ([("production", *REFUSED, 0)], ("production", False, 10), {"production": 0, "sandbox": 0}),
        ([("production", *REFUSED, 10)], ("production", False, 0), {"production": 1, "sandbox": 0}),
        ([("production", *WORKED, 0)], ("production", True, 10), {"production": 1, "sandbox": 0}),
        ([("production", *REFUSED, 0)], ("sandbox", False, 10), {"production": 1, "sandbox": 0}),
        ([], ("sandbox", True, 0), {"production": 0, "sandbox": 1}),
    ],
)
def test_newest_evidence_wins(
    runs: list[tuple[str, str, str, int]], own: tuple[str, bool, int] | None, expected: dict[str, int]
) -> None:
    outcomes = AppCredentialsOutcomes()
    if own is not None:
        outcomes.record(own[0], rejected=own[1], at=T0 + timedelta(minutes=own[2]))
    family = app_credentials_family([seen(integ(e, r, why, m), realm_ids=False) for e, r, why, m in runs], outcomes)
    assert family.name == "qbo_app_credentials_rejected"
    assert {s.labels["environment"]: s.value for s in family.samples} == expected
