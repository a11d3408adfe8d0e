"""Phase and conditions of a QuickbooksIntegration, from what the operator observes (docs/design.md §2).

Pure: the reconcile gathers the spec, the token Secret, the sync Jobs and the previous status into an
`Observed`, `compute` says what the status should be, and `status_patch` gives the smallest merge patch
from the status as it is to the status as it should be (empty when nothing changed, so a steady state
writes nothing). Messages never depend on the clock, only on the inputs, for the same reason."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from qbo_operator.core import names, signing
from qbo_operator.core.config import missing_credentials_message
from qbo_operator.core.models import (
    Condition,
    IntegrationSpec,
    IntegrationStatus,
    LastSync,
    Phase,
    SyncResult,
    Tokens,
    TokenSecretError,
    rfc3339,
)
from qbo_operator.core.schedule import ScheduleError, validate_schedule, validate_time_zone
from qbo_operator.core.status import (
    CONDITION_TYPES,
    CONNECTED,
    DEAD_GRANT_REASONS,
    READY,
    RECONCILING,
    STALLED,
    SUSPENDED,
    SYNCED,
    ConditionStatus,
    Reason,
    StatusWriter,
    keys_of,
)
from qbo_operator.core.status import condition as make_condition

CONNECT_LINK_RENEW_BEFORE_SECONDS = 24 * 3600
CONNECTED_ENVIRONMENT_ANNOTATION = f"{names.GROUP}/connected-environment"

# The status keys the operator writes (`status.STATUS_WRITERS`): lastSync, syncWatermark, webhook, ... belong
# to the sync Job and the gateway.
OWNED_STATUS_KEYS = keys_of(StatusWriter.OPERATOR)


# --- inputs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenState:
    """What the token Secret says, without the tokens themselves (safe to keep in memory and log)."""

    present: bool
    error_key: str | None = None
    error: str | None = None
    realm_id: str | None = None
    connected_at: datetime | None = None
    issued_at: datetime | None = None
    refresh_token_expires_at: datetime | None = None
    refresh_token_hard_expires_at: datetime | None = None

    @property
    def valid(self) -> bool:
        return self.present and self.error_key is None

    @classmethod
    def missing(cls) -> TokenState:
        return cls(present=False)

    @classmethod
    def from_secret_data(cls, data: Mapping[str, str] | None) -> TokenState:
        if not data:
            return cls.missing()  # the operator's Secret before the first Connect
        try:
            tokens = Tokens.from_secret_data(dict(data or {}))
        except TokenSecretError as exc:
            return cls(present=True, error_key=exc.key, error=str(exc))
        issued = max(t for t in (tokens.connected_at, tokens.refreshed_at) if t is not None)
        return cls(
            present=True,
            realm_id=tokens.realm_id,
            connected_at=tokens.connected_at,
            issued_at=issued,
            refresh_token_expires_at=tokens.refresh_token_expires_at,
            refresh_token_hard_expires_at=tokens.refresh_token_hard_expires_at,
        )


@dataclass(frozen=True)
class SpecProblem:
    """Something in the spec that CEL cannot judge; `message` says what to change."""

    reason: Reason
    message: str


@dataclass(frozen=True)
class JobOutcome:
    """A finished sync Job as the Job controller reports it."""

    name: str
    failed: bool
    finished_at: datetime
    reason: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class Observed:
    namespace: str
    name: str
    generation: int
    spec: IntegrationSpec
    status: IntegrationStatus
    token: TokenState
    now: datetime
    spec_problem: SpecProblem | None = None
    duplicate_owner: str | None = None  # "namespace/name" of the integration that owns the token's realm
    last_job: JobOutcome | None = None  # the most recently finished sync Job
    dead_grant: tuple[str, str] | None = None  # (reason, message): Intuit just refused the refresh token

    @property
    def token_secret_name(self) -> str:
        return self.spec.token_secret_name or names.token_secret_name(self.name)


@dataclass(frozen=True)
class Computed:
    phase: Phase
    conditions: list[dict[str, Any]]
    # Status keys to set from the token Secret (absent: leave as they are).
    token_fields: dict[str, str] = field(default_factory=dict)

    def condition(self, type_: str) -> dict[str, Any]:
        return next(c for c in self.conditions if c["type"] == type_)

    @property
    def connected(self) -> bool:
        return self.phase == Phase.CONNECTED


# --- spec checks -------------------------------------------------------------------------------


def check_spec(
    spec: IntegrationSpec,
    name: str,
    connected_environment: str | None,
    default_time_zone: str,
    missing_credentials: Sequence[str] = (),
) -> SpecProblem | None:
    """What CEL cannot judge: the cron parses, the zone exists, the environment kept, names do not clash,
    and the operator has the Intuit app of spec.environment (`missing_credentials`: the variables it lacks)."""
    checks: tuple[tuple[str | None, Callable[[str], object], Reason, str, str], ...] = (
        (
            spec.schedule,
            validate_schedule,
            Reason.INVALID_SCHEDULE,
            "spec.schedule",
            'Use a 5-field cron expression (minute hour day-of-month month day-of-week), for example "H 2 * * *" '
            "for once a night between 02:00 and 02:59.",
        ),
        (
            spec.time_zone,
            validate_time_zone,
            Reason.INVALID_TIME_ZONE,
            "spec.timeZone",
            f"Use an IANA zone name, or remove spec.timeZone to use the default ({default_time_zone}).",
        ),
    )
    for value, validate, reason, field_name, advice in checks:
        if value is None:
            continue
        try:
            validate(value)
        except ScheduleError as exc:
            return SpecProblem(reason, f"{field_name} is not valid: {exc}. {advice}")
    if connected_environment and connected_environment != spec.environment:
        return SpecProblem(
            Reason.ENVIRONMENT_CHANGED,
            f"spec.environment changed from {connected_environment} to {spec.environment} after a QuickBooks "
            f"company was connected in {connected_environment}. Set spec.environment back to "
            f"{connected_environment}, or create a new QuickbooksIntegration for {spec.environment}.",
        )
    if (problem := _sftp_secret_problem(spec, name)) is not None:
        return problem
    if missing_credentials:
        return SpecProblem(
            Reason.MISSING_CREDENTIALS, missing_credentials_message(spec.environment, missing_credentials)
        )
    return None


def _sftp_secret_problem(spec: IntegrationSpec, name: str) -> SpecProblem | None:
    """The SFTP Secret must be a Secret of its own: the gateway replaces the token Secret on every connect."""
    sftp = spec.delivery.sftp if spec.delivery.method == "sftp" else None
    if sftp is None:
        return None
    taken = {spec.token_secret_name or names.token_secret_name(name): "this integration's token Secret"}
    if (what := taken.get(sftp.secret_name)) is None:
        return None
    return SpecProblem(
        Reason.INVALID_SPEC,
        f"spec.delivery.sftp.secretName {sftp.secret_name!r} is {what}: put the SSH key ({names.SFTP_PRIVATE_KEY}) "
        f"and {names.SFTP_KNOWN_HOSTS} in a Secret of their own and name it there.",
    )


# --- the computation ---------------------------------------------------------------------------


def _connected(obs: Observed) -> tuple[ConditionStatus, str, str]:
    secret = obs.token_secret_name
    token, status = obs.token, obs.status
    relink = "Send the Connect link in status.authorizationURL to a person at the company to connect again."
    if not token.present:
        if status.realm_id is None and status.connected_at is None:
            return (
                "False",
                Reason.AWAITING_AUTHORIZATION,
                "Waiting for a person at the company to open the Connect link in status.authorizationURL "
                "and grant access at Intuit.",
            )
        return "False", Reason.SECRET_MISSING, f"The token Secret {secret} is missing. {relink}"
    if not token.valid:
        return (
            "False",
            Reason.SECRET_INVALID,
            f"The token Secret {secret} cannot be used: {token.error}. {relink}",
        )
    if obs.duplicate_owner:
        return (
            "False",
            Reason.DUPLICATE_REALM,
            f"QuickBooks company {token.realm_id} already belongs to QuickbooksIntegration "
            f"{obs.duplicate_owner}; one company can be connected to one integration only. Delete this "
            f"integration or its token Secret {secret}, or connect a different company.",
        )
    if status.realm_id and token.realm_id != status.realm_id:
        return (
            "False",
            Reason.REALM_MISMATCH,
            f"The token Secret {secret} holds QuickBooks company {token.realm_id}, but this integration is "
            f"connected to company {status.realm_id}. Connect company {status.realm_id} again, or create a "
            "new QuickbooksIntegration for the other company.",
        )
    if obs.dead_grant is not None:
        return "False", obs.dead_grant[0], obs.dead_grant[1]
    previous = status.condition(CONNECTED)
    if (
        previous is not None
        and previous.status == "False"
        and previous.reason in DEAD_GRANT_REASONS
        and previous.last_transition_time is not None
        and token.issued_at is not None
        and token.issued_at <= previous.last_transition_time
    ):
        return "False", previous.reason, previous.message
    if token.refresh_token_expires_at is not None and token.refresh_token_expires_at <= obs.now:
        return (
            "False",
            Reason.REFRESH_TOKEN_EXPIRED,
            f"The refresh token expired at {rfc3339(token.refresh_token_expires_at)} and Intuit no longer "
            f"accepts it. {relink}",
        )
    return "True", Reason.AUTHORIZED, f"Connected to QuickBooks company {token.realm_id}."


# Synced reasons the operator itself decides; any other reason on a failed run came from the sync Job.
_OPERATOR_SYNC_REASONS = frozenset({Reason.JOB_FAILED, Reason.SUSPENDED, Reason.NEVER_RUN})


def _reported(last: LastSync, previous: Condition | None) -> tuple[ConditionStatus, str, str]:
    """Synced for a run that reported its result. The sync Job writes lastSync and the Synced condition
    together (with a reason only it knows, e.g. QuickbooksUnavailable); agree with it word for word, so its
    write and ours never alternate."""
    message = last.message or f"The last sync finished: {last.result}."
    if last.result == SyncResult.SUCCEEDED:
        return "True", Reason.SUCCEEDED.value, message
    if last.result == SyncResult.PARTIALLY_SUCCEEDED:
        return "True", Reason.RECORDS_REJECTED.value, message
    if previous is not None and previous.status == "False" and previous.reason not in _OPERATOR_SYNC_REASONS:
        return "False", previous.reason, previous.message or message
    return "False", Reason.SYNC_FAILED.value, message


def _synced_underlying(obs: Observed) -> tuple[ConditionStatus, str, str]:
    """Synced as the runs say, before suspension is taken into account."""
    last = obs.status.last_sync
    job = obs.last_job
    previous = obs.status.condition(SYNCED)
    if job is not None and job.failed:
        reported = last is not None and last.job_name == job.name
        newer_run = last is not None and last.started_at is not None and last.started_at > job.finished_at
        if not reported and not newer_run:
            why = ": ".join(p for p in (job.reason, job.message) if p) or "no reason given"
            return (
                "False",
                Reason.JOB_FAILED.value,
                f"Sync Job {job.name} failed before it could report a result ({why}). See `kubectl describe "
                f"job {job.name}` and the pod's events (out of memory, deadline, image pull).",
            )
    if (
        previous is not None
        and previous.reason == Reason.JOB_FAILED
        and previous.last_transition_time is not None
        and (last is None or last.finished_at is None or last.finished_at <= previous.last_transition_time)
    ):
        # The failed Job may be gone (TTL, history limit): keep saying so until a later run reports.
        return "False", Reason.JOB_FAILED.value, previous.message
    if last is None or last.result is None:
        return "Unknown", Reason.NEVER_RUN.value, "No sync has run yet."
    return _reported(last, previous)


def _condition(obs: Observed, type_: str, status: ConditionStatus, reason: str, message: str) -> dict[str, Any]:
    """`status.condition` against the condition as last parsed from the status."""
    previous = obs.status.condition(type_)
    since = previous.last_transition_time if previous is not None else None
    before = None if previous is None else {"status": previous.status, "lastTransitionTime": since and rfc3339(since)}
    return make_condition(type_, status, reason, message, obs.now, before, obs.generation)


_Triple = tuple[ConditionStatus, str, str]


def _phase_and_ready(obs: Observed, connected: _Triple, synced: _Triple) -> tuple[Phase, _Triple]:
    c_status, c_reason, c_message = connected
    s_status, s_reason, s_message = synced
    if obs.spec_problem is not None:
        return Phase.ERROR, ("False", obs.spec_problem.reason, obs.spec_problem.message)
    if c_reason == Reason.DUPLICATE_REALM:
        return Phase.ERROR, ("False", c_reason, c_message)
    if c_status == "True":
        if s_status == "False":  # the last run failed (JobFailed, SyncFailed or the sync's own reason)
            return Phase.CONNECTED, ("False", s_reason, s_message)
        return Phase.CONNECTED, ("True", Reason.CONNECTED, f"{c_message} Syncs run on schedule.")
    if c_reason == Reason.AWAITING_AUTHORIZATION:
        return Phase.PENDING, ("False", c_reason, c_message)
    return Phase.DISCONNECTED, ("False", c_reason, c_message)


def _suspension(obs: Observed, synced: _Triple) -> tuple[_Triple, _Triple]:
    """(Synced, Suspended). A failed last run keeps its own reason while suspended (it is what someone must act
    on, and the sync Job's reason could not be recovered later); otherwise Synced says no runs are scheduled."""
    s_status, _, s_message = synced
    if not obs.spec.suspend:
        return synced, ("False", Reason.ACTIVE, "Syncs run on schedule.")
    shown: _Triple = (
        synced
        if s_status == "False"
        else (s_status, Reason.SUSPENDED, f"Scheduled syncs are suspended (spec.suspend). {s_message}")
    )
    return shown, (
        "True",
        Reason.SUSPENDED,
        "Scheduled syncs are suspended by spec.suspend; the QuickBooks connection is kept alive.",
    )


def _token_fields(token: TokenState) -> dict[str, str]:
    """The status fields mirrored from a connected integration's token Secret."""
    assert token.realm_id is not None and token.connected_at is not None
    fields = {"realmId": token.realm_id, "connectedAt": rfc3339(token.connected_at)}
    if token.refresh_token_expires_at is not None:
        fields["refreshTokenExpiresAt"] = rfc3339(token.refresh_token_expires_at)
    if token.refresh_token_hard_expires_at is not None:
        fields["refreshTokenHardExpiresAt"] = rfc3339(token.refresh_token_hard_expires_at)
    return fields


def compute(obs: Observed) -> Computed:
    """Phase, the conditions, and the status fields mirrored from the token Secret."""
    connected, underlying = _connected(obs), _synced_underlying(obs)
    phase, ready = _phase_and_ready(obs, connected, underlying)
    synced, suspended = _suspension(obs, underlying)
    # kstatus: Stalled only where a person must fix the spec or the configuration (phase Error); the operator
    # writes status once it has converged, so Reconciling is False in every status it writes.
    stalled: _Triple = (
        ("True", ready[1], ready[2])
        if phase == Phase.ERROR
        else ("False", Reason.RECONCILED, "Nothing in the spec or the operator's configuration needs fixing.")
    )
    reconciled = f"The operator has reconciled generation {obs.generation}."
    conditions = [
        _condition(obs, READY, *ready),
        _condition(obs, CONNECTED, *connected),
        _condition(obs, SYNCED, *synced),
        _condition(obs, SUSPENDED, *suspended),
        _condition(obs, RECONCILING, "False", Reason.RECONCILED, reconciled),
        _condition(obs, STALLED, *stalled),
    ]
    token_fields = _token_fields(obs.token) if connected[0] == "True" and phase == Phase.CONNECTED else {}
    return Computed(phase=phase, conditions=conditions, token_fields=token_fields)


# --- the Connect link --------------------------------------------------------------------------


def connect_link_current(
    url: str | None, gateway_url: str, key: str, namespace: str, name: str, uid: str, now: float
) -> bool:
    """Whether `url` is a link we would issue now for this object (same gateway, key and uid) that is
    good for at least another day."""
    if not url:
        return False
    query = parse_qs(urlsplit(url).query)
    exp = signing.parse_expiry((query.get("exp") or [""])[0])
    if exp is None or exp - now < CONNECT_LINK_RENEW_BEFORE_SECONDS:
        return False
    expected = signing.connect_link(gateway_url, key, namespace, name, uid, exp)
    return hmac.compare_digest(expected.encode(), url.encode())


def link_expiry(url: str) -> int:
    return int(parse_qs(urlsplit(url).query)["exp"][0])


# --- the status patch --------------------------------------------------------------------------


def merge_conditions(ours: Sequence[dict[str, Any]], observed: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Our conditions first, then any other writer's conditions unchanged."""
    others = [dict(c) for c in observed if c.get("type") not in CONDITION_TYPES]
    return [*ours, *others]


def status_patch(observed: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch for `.status` with only the keys that differ (None removes a key)."""
    patch: dict[str, Any] = {}
    for key, value in desired.items():
        if value is None:
            if observed.get(key) is not None:
                patch[key] = None
        elif observed.get(key) != value:
            patch[key] = value
    return patch


def phase_event(old: str | None, computed: Computed) -> tuple[str, str, str] | None:
    """(type, reason, message) of the Event for a phase change, or None when the phase stays."""
    new = computed.phase
    if old == new.value:
        return None
    ready = computed.condition(READY)
    kind = "Warning" if new in (Phase.DISCONNECTED, Phase.ERROR) else "Normal"
    was = f" (was {old})" if old else ""
    return kind, new.value, f"Phase {new.value}{was}: {ready['reason']}: {ready['message']}"
