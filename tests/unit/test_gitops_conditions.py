"""The kstatus conditions (docs/operator.md, GitOps health): Stalled=True only in phase Error, where a person
must fix the spec or the configuration; Reconciling=True never in a status the operator writes (it writes
once it has converged, so Pending and Disconnected, which wait on a person, never hold a pipeline);
observedGeneration on every condition."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from qbo_operator.core.models import IntegrationStatus, Phase
from qbo_operator.core.status import READY, RECONCILING, STALLED, Reason
from qbo_operator.reconciler.conditions import JobOutcome, SpecProblem, TokenState, compute
from tests.support.observations import CONNECTED_STATUS, NOW, by_type, observed, valid_token

PROBLEM = SpecProblem(Reason.INVALID_SCHEDULE, "spec.schedule is not valid: fix it.")
NOT_STALLED = ("False", Reason.RECONCILED)

# case -> (observed kwargs, phase, (Stalled status, reason))
CASES: dict[str, tuple[dict[str, Any], Phase, tuple[str, str]]] = {
    "never connected": ({"token": TokenState.missing()}, Phase.PENDING, NOT_STALLED),
    "never connected, suspended": ({"token": TokenState.missing(), "suspend": True}, Phase.PENDING, NOT_STALLED),
    "connected": ({"token": valid_token()}, Phase.CONNECTED, NOT_STALLED),
    "connected, suspended": ({"token": valid_token(), "suspend": True}, Phase.CONNECTED, NOT_STALLED),
    "connected, the last Job failed": (
        {"token": valid_token(), "job": JobOutcome("j1", True, NOW - timedelta(hours=1), "DeadlineExceeded")},
        Phase.CONNECTED,
        NOT_STALLED,
    ),
    "secret deleted": (
        {"token": TokenState.missing(), "status": IntegrationStatus.model_validate(CONNECTED_STATUS)},
        Phase.DISCONNECTED,
        NOT_STALLED,
    ),
    "refresh token expired": (
        {
            "token": valid_token(expires=NOW - timedelta(minutes=1)),
            "status": IntegrationStatus.model_validate(CONNECTED_STATUS),
        },
        Phase.DISCONNECTED,
        NOT_STALLED,
    ),
    "spec problem": ({"token": valid_token(), "problem": PROBLEM}, Phase.ERROR, ("True", Reason.INVALID_SCHEDULE)),
    "spec problem, never connected": (
        {"token": TokenState.missing(), "problem": PROBLEM},
        Phase.ERROR,
        ("True", Reason.INVALID_SCHEDULE),
    ),
    "duplicate realm": (
        {"token": valid_token(), "duplicate": "tenants/first"},
        Phase.ERROR,
        ("True", Reason.DUPLICATE_REALM),
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_stalled_only_in_error_and_never_reconciling(case: str) -> None:
    kwargs, phase, (stalled_status, stalled_reason) = CASES[case]
    kwargs = {"status": IntegrationStatus(), **kwargs}
    out = compute(observed(**kwargs))
    conds = by_type(out.conditions)
    assert out.phase == phase
    assert (conds[STALLED]["status"], conds[STALLED]["reason"]) == (stalled_status, stalled_reason)
    if stalled_status == "True":  # the same words as Ready: what to fix
        assert conds[STALLED]["message"] == conds[READY]["message"]
    assert (conds[RECONCILING]["status"], conds[RECONCILING]["reason"]) == ("False", Reason.RECONCILED)
    assert conds[RECONCILING]["message"] == "The operator has reconciled generation 3."
    assert all(c["observedGeneration"] == 3 for c in out.conditions)


def test_stalled_keeps_its_transition_time_while_the_problem_stays() -> None:
    first = compute(observed(valid_token(), IntegrationStatus(), problem=PROBLEM))
    later = compute(
        observed(valid_token(), IntegrationStatus.model_validate({"conditions": first.conditions}), problem=PROBLEM)
    )
    assert by_type(later.conditions)[STALLED] == by_type(first.conditions)[STALLED]
