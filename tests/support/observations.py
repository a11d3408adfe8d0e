"""What the pure reconcile observes, for the table tests of phase and conditions (tests/unit) and the GitOps
health tables (tests/chart): one clock, one company and realm, one connected token."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from qbo_operator.core.models import IntegrationSpec, IntegrationStatus
from qbo_operator.reconciler.conditions import JobOutcome, Observed, SpecProblem, TokenState

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
EARLIER = NOW - timedelta(days=3)
COMPANY = "5f0c3a2e-8d1b-4c7e-9a61-2b7f3c9d4e10"
REALM = "9130355357483456"
CONNECTED_STATUS: dict[str, Any] = {"realmId": REALM, "connectedAt": "2026-11-22T12:00:00Z"}
_HARD = NOW + timedelta(days=1500)


def spec(**over: Any) -> IntegrationSpec:
    return IntegrationSpec.model_validate({"companyId": COMPANY, **over})


def valid_token(
    realm: str = REALM,
    issued: datetime = EARLIER,
    expires: datetime | None = None,
    hard_expires: datetime | None = _HARD,
) -> TokenState:
    """A connected integration's token Secret, connected EARLIER; the refresh token good for 90 more days."""
    return TokenState(
        present=True,
        realm_id=realm,
        connected_at=EARLIER,
        issued_at=issued,
        refresh_token_expires_at=expires or NOW + timedelta(days=90),
        refresh_token_hard_expires_at=hard_expires,
    )


def observed(
    token: TokenState,
    status: IntegrationStatus,
    problem: SpecProblem | None = None,
    suspend: bool = False,
    duplicate: str = "",
    job: JobOutcome | None = None,
) -> Observed:
    return Observed(
        namespace="tenants",
        name="acme",
        generation=3,
        spec=spec(suspend=suspend),
        status=status,
        token=token,
        now=NOW,
        spec_problem=problem,
        duplicate_owner=duplicate or None,
        last_job=job,
    )


def by_type(conditions: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in conditions}
