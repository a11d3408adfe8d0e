"""The one status vocabulary of a QuickbooksIntegration: condition types, reasons, the rule for setting a
condition, and which process may write which status key.

Three processes write the same `.status`: the operator (its reconcile), the sync Job and the gateway. They
agree only if they spell things the same way, so every condition type and machine-readable reason they
write (on a condition or on an Event) is named here and nowhere else, and every condition goes through
`condition`/`set_condition`: lastTransitionTime moves only when the status flips (a reason or message
change is not a transition), and observedGeneration says which spec the condition was judged from."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from qbo_operator.core.models import rfc3339

ConditionStatus = Literal["True", "False", "Unknown"]

# A metav1.Condition's message limit (the CRD's maxLength).
MESSAGE_LIMIT = 32768


class ConditionType(StrEnum):
    READY = "Ready"
    CONNECTED = "Connected"
    SYNCED = "Synced"
    SUSPENDED = "Suspended"
    # kstatus's own (abnormal-true): Flux, kpt and cli-utils read these before Ready (docs/operator.md)
    RECONCILING = "Reconciling"
    STALLED = "Stalled"


READY = ConditionType.READY
CONNECTED = ConditionType.CONNECTED
SYNCED = ConditionType.SYNCED
SUSPENDED = ConditionType.SUSPENDED
RECONCILING = ConditionType.RECONCILING
STALLED = ConditionType.STALLED
CONDITION_TYPES = tuple(ConditionType)


class Reason(StrEnum):
    """Machine-readable reasons (CamelCase, the CRD's pattern), on conditions and on Events."""

    # Connected
    AUTHORIZED = "Authorized"
    AWAITING_AUTHORIZATION = "AwaitingAuthorization"
    TOKEN_REVOKED = "TokenRevoked"  # noqa: S105 - a condition reason
    REFRESH_TOKEN_EXPIRED = "RefreshTokenExpired"  # noqa: S105
    SECRET_MISSING = "SecretMissing"  # noqa: S105
    SECRET_INVALID = "SecretInvalid"  # noqa: S105
    REALM_MISMATCH = "RealmMismatch"
    DUPLICATE_REALM = "DuplicateRealm"
    # Synced
    SUCCEEDED = "Succeeded"
    RECORDS_REJECTED = "RecordsRejected"
    QUICKBOOKS_UNAVAILABLE = "QuickbooksUnavailable"
    GREENCHECK_UNAVAILABLE = "GreenCheckUnavailable"
    # Green Check's SFTP server refused us (host key, login, permission, directory, disk): a person must act
    DELIVERY_REFUSED = "DeliveryRefused"
    SYNC_FAILED = "SyncFailed"
    JOB_FAILED = "JobFailed"
    # Intuit refused the operator's own app credentials (invalid_client / unauthorized_client): no grant is dead
    APP_CREDENTIALS_INVALID = "AppCredentialsInvalid"
    NEVER_RUN = "NeverRun"
    # Suspended (and Synced while suspended)
    SUSPENDED = "Suspended"
    ACTIVE = "Active"
    # Ready
    CONNECTED = "Connected"
    INVALID_SCHEDULE = "InvalidSchedule"
    INVALID_TIME_ZONE = "InvalidTimeZone"
    ENVIRONMENT_CHANGED = "EnvironmentChanged"
    MISSING_CREDENTIALS = "MissingCredentials"  # the operator has no Intuit app for spec.environment
    INVALID_SPEC = "InvalidSpec"
    # Ready, phase Error: an object of a name the operator would use exists and is not this integration's
    # (no ownerReference to its uid). The token Secret's is SecretConflict; every other kind's ObjectConflict.
    SECRET_CONFLICT = "SecretConflict"  # noqa: S105
    OBJECT_CONFLICT = "ObjectConflict"
    # Reconciling=False and Stalled=False (Stalled=True carries Ready's reason)
    RECONCILED = "Reconciled"
    # Events only (the phase Events use the phase names)
    REFRESH_TOKEN_HARD_EXPIRY = "RefreshTokenHardExpiry"  # noqa: S105
    REVOKED = "Revoked"
    REVOKE_FAILED = "RevokeFailed"
    SYNC_REQUESTED = "SyncRequested"
    SYNC_REQUEST_REFUSED = "SyncRequestRefused"


# Intuit refused the refresh token for good. Recorded on Connected=False by the sync Job or the operator's
# keep-alive refresh; they hold until the token Secret carries tokens issued after that moment.
DeadGrantReason = Literal[Reason.TOKEN_REVOKED, Reason.REFRESH_TOKEN_EXPIRED]
DEAD_GRANT_REASONS: frozenset[Reason] = frozenset({Reason.TOKEN_REVOKED, Reason.REFRESH_TOKEN_EXPIRED})


# --- the rule for a condition --------------------------------------------------------------------


def condition(
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    now: datetime,
    previous: Mapping[str, Any] | None = None,
    generation: int | None = None,
) -> dict[str, Any]:
    """A metav1.Condition: lastTransitionTime stays the previous one's while the status stays the same."""
    kept = previous is not None and previous.get("status") == status and previous.get("lastTransitionTime")
    out: dict[str, Any] = {
        "type": str(type_),
        "status": status,
        "reason": str(reason),
        "message": message,
        "lastTransitionTime": previous["lastTransitionTime"] if kept and previous is not None else rfc3339(now),
    }
    if generation is not None:
        out["observedGeneration"] = generation
    return out


def set_condition(
    conditions: Sequence[Mapping[str, Any]],
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    now: datetime,
    generation: int | None = None,
) -> list[dict[str, Any]]:
    """`conditions` with `type_` (re)set by `condition`, moved last; the others unchanged. A falsy
    generation (unknown) is left out, and the message is cut to the CRD's limit."""
    previous = next((c for c in conditions if c.get("type") == type_), None)
    others = [dict(c) for c in conditions if c.get("type") != type_]
    cond = condition(type_, status, reason, message[:MESSAGE_LIMIT], now, previous, generation or None)
    return [*others, cond]


# --- who writes what -----------------------------------------------------------------------------


class StatusWriter(StrEnum):
    OPERATOR = "operator"
    SYNC = "sync"
    GATEWAY = "gateway"


_OP, _SYNC, _GW = StatusWriter.OPERATOR, StatusWriter.SYNC, StatusWriter.GATEWAY

# Every status key and the processes that may write it. Shared keys are shared on purpose:
# - phase, conditions: the operator computes them; the sync Job marks a dead grant at once (phase
#   Disconnected, Connected and Ready False) and records each run's Synced, which the operator then agrees
#   with word for word (so their writes never alternate).
# - webhook: the gateway counts events; the sync Job resets eventsSinceLastSync after a successful run.
_KEYS_BY_WRITERS: tuple[tuple[frozenset[StatusWriter], tuple[str, ...]], ...] = (
    (frozenset({_OP, _SYNC}), ("phase", "conditions")),
    (
        frozenset({_OP}),
        (
            "observedGeneration",
            "cronJobName",
            "cronJobNamespace",
            "authorizationURL",
            "authorizationURLExpiresAt",
            "realmId",
            "connectedAt",
            "refreshTokenExpiresAt",
            "refreshTokenHardExpiresAt",
            "lastHandledSyncRequest",
        ),
    ),
    (
        frozenset({_SYNC}),
        ("lastSync", "syncWatermark", "lastSuccessfulSyncTime", "lastReadTime", "rejected", "meteredReads"),
    ),
    (frozenset({_GW, _SYNC}), ("webhook",)),
)
STATUS_WRITERS: Mapping[str, frozenset[StatusWriter]] = {
    key: writers for writers, keys in _KEYS_BY_WRITERS for key in keys
}

# Within `conditions`: the operator writes all four; the sync Job writes Synced after each run, and Connected
# and Ready when Intuit refuses the grant. Conditions of any other type belong to someone else and are kept.
CONDITION_WRITERS: Mapping[ConditionType, frozenset[StatusWriter]] = {
    READY: frozenset({_OP, _SYNC}),
    CONNECTED: frozenset({_OP, _SYNC}),
    SYNCED: frozenset({_OP, _SYNC}),
    SUSPENDED: frozenset({_OP}),
    RECONCILING: frozenset({_OP}),
    STALLED: frozenset({_OP}),
}


def keys_of(writer: StatusWriter) -> tuple[str, ...]:
    """The status keys `writer` may write, in the table's order."""
    return tuple(key for key, writers in STATUS_WRITERS.items() if writer in writers)
