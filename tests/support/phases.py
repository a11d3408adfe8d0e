"""One QuickbooksIntegration in each phase and in-flight state, with the status the operator computes for it
(`reconciler.conditions.compute`), so the GitOps health tables (Argo CD's Lua script, kstatus, Flux's
healthCheckExprs) judge what the operator really writes, not a hand-made imitation of it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from qbo_operator.core import names
from qbo_operator.core.models import IntegrationSpec, IntegrationStatus, rfc3339
from qbo_operator.reconciler.conditions import JobOutcome, Observed, TokenState, check_spec, compute
from tests.support.observations import COMPANY, EARLIER, NOW, REALM, valid_token

GENERATION = 2
SYNC_REQUEST_ANNOTATION = f"{names.GROUP}/sync-requested-at"


def _token(realm: str = REALM, expires: datetime | None = None) -> TokenState:
    return valid_token(realm, expires=expires, hard_expires=None)


CONNECTED_STATUS: dict[str, Any] = {"realmId": REALM, "connectedAt": rfc3339(EARLIER)}


@dataclass(frozen=True)
class State:
    """What the operator observes for one row of the table."""

    token: TokenState
    status: dict[str, Any]
    spec: dict[str, Any]
    connected_environment: str | None = None
    duplicate_owner: str | None = None
    last_job: JobOutcome | None = None


def _succeeded() -> dict[str, Any]:
    return {
        **CONNECTED_STATUS,
        "lastSync": {
            "jobName": "acme-qbo-sync-1",
            "trigger": "Schedule",
            "result": "Succeeded",
            "startedAt": rfc3339(NOW - timedelta(hours=10)),
            "finishedAt": rfc3339(NOW - timedelta(hours=10)),
            "message": "Synced 7 payments.",
        },
    }


def _failed() -> dict[str, Any]:
    last = {**_succeeded()["lastSync"], "result": "Failed", "message": "QuickBooks Online did not answer."}
    synced = {
        "type": "Synced",
        "status": "False",
        "reason": "QuickbooksUnavailable",
        "message": "QuickBooks Online did not answer.",
        "lastTransitionTime": rfc3339(NOW - timedelta(hours=10)),
    }
    return {**CONNECTED_STATUS, "lastSync": last, "conditions": [synced]}


STATES: dict[str, Callable[[], State]] = {
    "pending": lambda: State(TokenState.missing(), {}, {}),
    "connected, never synced": lambda: State(_token(), {}, {}),
    "connected, synced": lambda: State(_token(), _succeeded(), {}),
    "connected, last sync failed": lambda: State(_token(), _failed(), {}),
    "connected, suspended": lambda: State(_token(), _succeeded(), {"suspend": True}),
    "pending, suspended": lambda: State(TokenState.missing(), {}, {"suspend": True}),
    "disconnected, refresh token expired": lambda: State(
        _token(expires=NOW - timedelta(minutes=1)), CONNECTED_STATUS, {}
    ),
    "disconnected, secret deleted": lambda: State(TokenState.missing(), CONNECTED_STATUS, {}),
    "error, environment changed": lambda: State(
        _token(), CONNECTED_STATUS, {"environment": "sandbox"}, connected_environment="production"
    ),
    "error, duplicate realm": lambda: State(_token(), {}, {}, duplicate_owner="tenants/first"),
}


def status_of(state: State, generation: int = GENERATION) -> dict[str, Any]:
    """The `.status` the operator writes for `state` (what its reconcile patches in)."""
    spec = IntegrationSpec.model_validate({"companyId": COMPANY, **state.spec})
    observed = Observed(
        namespace="tenants",
        name="acme",
        generation=generation,
        spec=spec,
        status=IntegrationStatus.model_validate(state.status),
        token=state.token,
        now=NOW,
        spec_problem=check_spec(spec, "acme", state.connected_environment, "UTC"),
        duplicate_owner=state.duplicate_owner,
        last_job=state.last_job,
    )
    computed = compute(observed)
    return {
        **{k: v for k, v in state.status.items() if k != "conditions"},
        **computed.token_fields,
        "phase": computed.phase.value,
        "conditions": computed.conditions,
        "observedGeneration": generation,
    }


def integration(name: str, namespace: str, spec: dict[str, Any], generation: int = GENERATION) -> dict[str, Any]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": name, "namespace": namespace, "generation": generation},
        "spec": {"companyId": COMPANY, "environment": "production", "suspend": False, **spec},
    }


def served(state_id: str) -> dict[str, Any]:
    """The object of row `state_id` as the API server serves it after the operator's reconcile."""
    state = STATES[state_id]()
    return {**integration("acme", "tenants", state.spec), "status": status_of(state)}


def unobserved_generation() -> dict[str, Any]:
    """Connected and synced, but the spec was just edited: the operator has not judged generation 3 yet."""
    state = STATES["connected, synced"]()
    return {**integration("acme", "tenants", state.spec, generation=GENERATION + 1), "status": status_of(state)}


def just_created() -> dict[str, Any]:
    """Applied a moment ago: no status yet."""
    return integration("acme", "tenants", {}, generation=1)
