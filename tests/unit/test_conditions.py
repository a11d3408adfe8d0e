"""Phase and conditions (docs/design.md §2): every combination of token state × spec problem × suspension × last
sync, checked against the contract's rules, plus explicit rows for each Connected reason."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from qbo_operator.core import names, signing
from qbo_operator.core.models import IntegrationStatus, Phase, Tokens
from qbo_operator.core.status import CONNECTED, READY, RECONCILING, STALLED, SUSPENDED, SYNCED, Reason
from qbo_operator.reconciler.conditions import (
    Computed,
    JobOutcome,
    Observed,
    SpecProblem,
    TokenState,
    check_spec,
    compute,
    connect_link_current,
    merge_conditions,
    phase_event,
    status_patch,
)
from tests.support.observations import (
    CONNECTED_STATUS,
    EARLIER,
    NOW,
    REALM,
    by_type,
    observed,
    spec,
    valid_token,
)

KEY = "k" * 40


def tokens(**over: Any) -> Tokens:
    """Tokens as the gateway stores them, connected EARLIER and expiring NOW unless `over` says otherwise."""
    fields: dict[str, Any] = {
        "access_token": "a",
        "refresh_token": "r",
        "realm_id": REALM,
        "scope": names.ACCOUNTING_SCOPE,
        "connected_at": EARLIER,
        "expires_at": NOW,
        **over,
    }
    return Tokens(**fields)


def condition(type_: str, status: str, reason: str, since: datetime = EARLIER, message: str = "m") -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


# --- the token dimension: (name, token, status dict, expected phase without other problems, Connected reason)
TOKEN_CASES: list[tuple[str, TokenState, dict[str, Any], Phase, str]] = [
    ("never connected", TokenState.missing(), {}, Phase.PENDING, Reason.AWAITING_AUTHORIZATION),
    ("secret deleted", TokenState.missing(), CONNECTED_STATUS, Phase.DISCONNECTED, Reason.SECRET_MISSING),
    (
        "key missing",
        TokenState(present=True, error_key="refresh_token", error="token Secret key 'refresh_token' is missing"),
        CONNECTED_STATUS,
        Phase.DISCONNECTED,
        Reason.SECRET_INVALID,
    ),
    ("valid, first connection", valid_token(), {}, Phase.CONNECTED, Reason.AUTHORIZED),
    ("valid, same realm", valid_token(), CONNECTED_STATUS, Phase.CONNECTED, Reason.AUTHORIZED),
    ("other realm", valid_token(realm="42"), CONNECTED_STATUS, Phase.DISCONNECTED, Reason.REALM_MISMATCH),
    (
        "refresh token expired",
        valid_token(expires=NOW - timedelta(minutes=1)),
        CONNECTED_STATUS,
        Phase.DISCONNECTED,
        Reason.REFRESH_TOKEN_EXPIRED,
    ),
    (
        "revoked, recorded by the sync",
        valid_token(issued=EARLIER),
        {**CONNECTED_STATUS, "conditions": [condition(CONNECTED, "False", "TokenRevoked", since=NOW)]},
        Phase.DISCONNECTED,
        Reason.TOKEN_REVOKED,
    ),
    (
        "revoked, then connected again",
        valid_token(issued=NOW),
        {**CONNECTED_STATUS, "conditions": [condition(CONNECTED, "False", "TokenRevoked", since=EARLIER)]},
        Phase.CONNECTED,
        Reason.AUTHORIZED,
    ),
]
DUPLICATE = ["", "tenants/first"]
PROBLEMS: list[SpecProblem | None] = [
    None,
    SpecProblem(Reason.INVALID_SCHEDULE, "spec.schedule is not valid"),
    SpecProblem(Reason.ENVIRONMENT_CHANGED, "spec.environment changed"),
]
SUSPEND = [False, True]
LAST_SYNCS: list[tuple[str, dict[str, Any], JobOutcome | None, str, str]] = [
    # name, status additions, last finished Job, Synced status, Synced reason (when not suspended)
    ("never run", {}, None, "Unknown", Reason.NEVER_RUN),
    (
        "succeeded",
        {
            "lastSync": {
                "jobName": "j1",
                "result": "Succeeded",
                "message": "7 payments",
                "finishedAt": "2026-11-25T02:00:00Z",
            }
        },
        JobOutcome("j1", False, NOW - timedelta(hours=10)),
        "True",
        Reason.SUCCEEDED,
    ),
    (
        "records rejected",
        {"lastSync": {"jobName": "j1", "result": "PartiallySucceeded", "recordsRejected": 2, "message": "2 rejected"}},
        None,
        "True",
        Reason.RECORDS_REJECTED,
    ),
    (
        "failed, the sync said why",
        {
            "lastSync": {"jobName": "j1", "result": "Failed", "message": "QBO down"},
            "conditions": [condition(SYNCED, "False", "QuickbooksUnavailable", message="QBO down")],
        },
        JobOutcome("j1", True, NOW - timedelta(hours=9), "BackoffLimitExceeded"),
        "False",
        "QuickbooksUnavailable",
    ),
    (
        "failed, nobody said why",
        {"lastSync": {"jobName": "j1", "result": "Failed", "message": "boom"}},
        None,
        "False",
        Reason.SYNC_FAILED,
    ),
    (
        "job died without reporting",
        {"lastSync": {"jobName": "j0", "result": "Succeeded", "startedAt": "2026-11-24T02:00:00Z"}},
        JobOutcome("j1", True, NOW - timedelta(hours=1), "DeadlineExceeded", "Job was active longer than allowed"),
        "False",
        Reason.JOB_FAILED,
    ),
]


def merged_status(token_status: dict[str, Any], sync_status: dict[str, Any]) -> IntegrationStatus:
    conds = [*(token_status.get("conditions") or []), *(sync_status.get("conditions") or [])]
    raw = {**token_status, **sync_status, "conditions": conds}
    return IntegrationStatus.model_validate(raw)


COMBINATIONS = list(itertools.product(TOKEN_CASES, DUPLICATE, PROBLEMS, SUSPEND, LAST_SYNCS))


@pytest.mark.parametrize(
    ("token_case", "duplicate", "problem", "suspend", "sync_case"),
    COMBINATIONS,
    ids=[f"{t[0]}|dup={bool(d)}|{p.reason if p else 'ok'}|suspend={s}|{y[0]}" for t, d, p, s, y in COMBINATIONS],
)
def test_every_combination(
    token_case: tuple[str, TokenState, dict[str, Any], Phase, str],
    duplicate: str,
    problem: SpecProblem | None,
    suspend: bool,
    sync_case: tuple[str, dict[str, Any], JobOutcome | None, str, str],
) -> None:
    _, token, token_status, token_phase, connected_reason = token_case
    _, sync_status, job, synced_status, synced_reason = sync_case
    status = merged_status(token_status, sync_status)
    obs = observed(token, status, problem, suspend, duplicate, job)
    out = compute(obs)
    conds = by_type(out.conditions)
    assert [c["type"] for c in out.conditions] == [READY, CONNECTED, SYNCED, SUSPENDED, RECONCILING, STALLED]

    duplicate_applies = bool(duplicate) and token.valid
    # Connected follows the token alone (DuplicateRealm wins over the rest once the token is readable).
    expected_connected = Reason.DUPLICATE_REALM if duplicate_applies else connected_reason
    assert conds[CONNECTED]["reason"] == expected_connected
    assert conds[CONNECTED]["status"] == ("True" if expected_connected == Reason.AUTHORIZED else "False")

    # Phase: Error for a spec problem or a duplicate realm, else what the token says.
    if problem is not None or duplicate_applies:
        assert out.phase == Phase.ERROR
        assert conds[READY]["reason"] == (problem.reason if problem else Reason.DUPLICATE_REALM)
    else:
        assert out.phase == token_phase

    # Synced: the last run's status; while suspended the reason says so, unless the last run failed.
    assert conds[SYNCED]["status"] == synced_status
    assert conds[SYNCED]["reason"] == (Reason.SUSPENDED if suspend and synced_status != "False" else synced_reason)

    # Ready: only a connected integration whose last run did not fail is Ready.
    assert (conds[READY]["status"] == "True") == (out.phase == Phase.CONNECTED and synced_status != "False")
    if out.phase == Phase.CONNECTED and synced_status == "False":
        assert conds[READY]["reason"] == synced_reason

    _assert_invariants(obs, out, suspend)


def _assert_invariants(obs: Observed, out: Computed, suspend: bool) -> None:
    """What holds in every combination: suspension changes nothing else, every condition is well formed, a
    second reconcile writes nothing, and token fields are mirrored only while connected."""
    conds, status, token = by_type(out.conditions), obs.status, obs.token
    # Suspension is visible and changes nothing else.
    assert conds[SUSPENDED]["status"] == ("True" if suspend else "False")
    other = compute(replace(obs, spec=spec(suspend=not suspend)))
    assert other.phase == out.phase
    assert by_type(other.conditions)[READY] == conds[READY]
    assert by_type(other.conditions)[CONNECTED] == conds[CONNECTED]

    # Every condition carries the generation and a reason in the CRD's pattern; messages are plain text.
    for cond in out.conditions:
        assert cond["observedGeneration"] == 3
        assert cond["reason"][0].isalpha() and cond["reason"].isalnum()
        assert cond["message"]

    # Level-based: writing the result back and computing again changes nothing (no write in steady state).
    raw = {**status.model_dump(by_alias=True, mode="json", exclude_none=True), "phase": out.phase.value}
    raw["conditions"] = out.conditions
    again = compute(replace(obs, status=IntegrationStatus.model_validate(raw), now=NOW + timedelta(minutes=5)))
    assert again.conditions == out.conditions
    assert status_patch(raw, {"phase": again.phase.value, "conditions": again.conditions}) == {}

    # The realm and token expiries are mirrored only while really connected.
    if out.phase == Phase.CONNECTED:
        assert out.token_fields["realmId"] == token.realm_id
        assert out.token_fields["refreshTokenExpiresAt"].endswith("Z")
    else:
        assert out.token_fields == {}


def test_transition_time_moves_only_when_the_status_changes() -> None:
    start = compute(observed(TokenState.missing(), IntegrationStatus()))
    raw = {"conditions": start.conditions, "phase": start.phase.value}
    later = NOW + timedelta(hours=2)
    connected = compute(replace(observed(valid_token(), IntegrationStatus.model_validate(raw)), now=later))
    before, after = by_type(start.conditions), by_type(connected.conditions)
    stamp = later.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert after[CONNECTED]["lastTransitionTime"] == stamp  # False -> True
    assert after[READY]["lastTransitionTime"] == stamp
    assert after[SUSPENDED]["lastTransitionTime"] == before[SUSPENDED]["lastTransitionTime"]  # stayed False
    assert after[SYNCED]["lastTransitionTime"] == before[SYNCED]["lastTransitionTime"]  # stayed Unknown


def test_secret_invalid_message_names_the_key_and_never_a_value() -> None:
    data = tokens(
        access_token="AT-do-not-log",
        refresh_token="RT-do-not-log",
        connected_at=NOW,
        refresh_token_expires_at=NOW + timedelta(days=100),
    ).to_secret_data()
    data["expires_at"] = "bm90LWEtdGltZQ=="  # "not-a-time"
    state = TokenState.from_secret_data(data)
    assert state.error_key == "expires_at"
    out = compute(observed(state, IntegrationStatus.model_validate(CONNECTED_STATUS)))
    message = by_type(out.conditions)[CONNECTED]["message"]
    assert "'expires_at'" in message
    assert "acme-qbo-tokens" in message
    assert "do-not-log" not in repr(out)


def test_token_state_from_a_good_secret() -> None:
    good = tokens(refresh_token_expires_at=NOW + timedelta(days=99), refreshed_at=NOW - timedelta(hours=1))
    state = TokenState.from_secret_data(good.to_secret_data())
    assert state.valid and state.realm_id == REALM
    assert state.issued_at == NOW - timedelta(hours=1)  # the newer of connected_at and refreshed_at
    data = good.to_secret_data()
    del data["access_token"]
    assert TokenState.from_secret_data(data).error_key == "access_token"
    # the operator's Secret before the first Connect holds nothing: not connected, not broken
    assert TokenState.from_secret_data({}) == TokenState.from_secret_data(None) == TokenState.missing()


def test_dead_grant_input_wins_and_then_holds() -> None:
    obs = replace(
        observed(valid_token(), IntegrationStatus.model_validate(CONNECTED_STATUS)),
        dead_grant=("TokenRevoked", "Intuit refused the refresh token"),
    )
    out = compute(obs)
    assert out.phase == Phase.DISCONNECTED
    assert by_type(out.conditions)[CONNECTED]["reason"] == "TokenRevoked"
    raw = {**CONNECTED_STATUS, "conditions": out.conditions, "phase": out.phase.value}
    held = compute(replace(obs, dead_grant=None, status=IntegrationStatus.model_validate(raw)))
    assert by_type(held.conditions)[CONNECTED] == by_type(out.conditions)[CONNECTED]


def test_job_failed_holds_after_the_job_is_gone_until_a_later_run_reports() -> None:
    job = JobOutcome("j2", True, NOW - timedelta(hours=1), "BackoffLimitExceeded")
    status = IntegrationStatus.model_validate(CONNECTED_STATUS)
    failed = compute(observed(valid_token(), status, job=job))
    assert by_type(failed.conditions)[SYNCED]["reason"] == Reason.JOB_FAILED
    raw = {**CONNECTED_STATUS, "conditions": failed.conditions}
    gone = compute(observed(valid_token(), IntegrationStatus.model_validate(raw), job=None))
    assert by_type(gone.conditions)[SYNCED]["reason"] == Reason.JOB_FAILED
    later = (NOW + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    raw["lastSync"] = {"jobName": "j3", "result": "Succeeded", "message": "ok", "finishedAt": later}
    recovered = compute(observed(valid_token(), IntegrationStatus.model_validate(raw), job=None))
    assert by_type(recovered.conditions)[SYNCED]["reason"] == Reason.SUCCEEDED
    assert recovered.phase == Phase.CONNECTED
    assert by_type(recovered.conditions)[READY]["status"] == "True"


SFTP = {"host": "sftp.example", "username": "acme", "directory": "/upload", "locationId": "loc-1"}


@pytest.mark.parametrize(
    ("over", "connected_env", "reason", "words"),
    [
        ({"schedule": "61 2 * * *"}, None, Reason.INVALID_SCHEDULE, ["spec.schedule", "61 2"]),
        ({"schedule": "H 2 * *"}, None, Reason.INVALID_SCHEDULE, ["has 4 fields", "H 2 * * *"]),
        ({"schedule": "H2 * * * *"}, None, Reason.INVALID_SCHEDULE, ["H may only stand alone"]),
        ({"timeZone": "Mars/Olympus"}, None, Reason.INVALID_TIME_ZONE, ["Mars/Olympus", "IANA", "UTC"]),
        ({"environment": "sandbox"}, "production", Reason.ENVIRONMENT_CHANGED, ["back to production"]),
        (
            {"delivery": {"method": "sftp", "sftp": {**SFTP, "secretName": "acme-qbo-tokens"}}},
            None,
            Reason.INVALID_SPEC,
            ["spec.delivery.sftp.secretName 'acme-qbo-tokens'", "token Secret", "ssh-privatekey", "known_hosts"],
        ),
        (
            {"delivery": {"method": "sftp", "sftp": {**SFTP, "secretName": "acme-qbo-tokens"}}},
            None,
            Reason.INVALID_SPEC,
            ["spec.delivery.sftp.secretName 'acme-qbo-tokens'", "token Secret", "of their own"],
        ),
        (
            {"tokenSecretName": "mine", "delivery": {"method": "sftp", "sftp": {**SFTP, "secretName": "mine"}}},
            None,
            Reason.INVALID_SPEC,
            ["spec.delivery.sftp.secretName 'mine'", "token Secret"],
        ),
    ],
)
def test_spec_checks_say_what_to_fix(
    over: dict[str, Any], connected_env: str | None, reason: str, words: list[str]
) -> None:
    problem = check_spec(spec(**over), "acme", connected_env, "UTC")
    assert problem is not None
    assert problem.reason == reason
    for word in words:
        assert word in problem.message


@pytest.mark.parametrize(
    "over",
    [
        {},
        {"schedule": "H 2 * * *", "timeZone": "America/Los_Angeles"},
        {"schedule": "@daily"},
        {"schedule": "*/15 * * * *"},
        {"delivery": {"method": "sftp", "sftp": {**SFTP, "secretName": "acme-sftp"}}},
        # the default token Secret's name, but another one is named: no clash
        {"tokenSecretName": "mine", "delivery": {"method": "sftp", "sftp": {**SFTP, "secretName": "acme-qbo-tokens"}}},
    ],
)
def test_good_specs_pass(over: dict[str, Any]) -> None:
    assert check_spec(spec(**over), "acme", "production", "UTC") is None


def test_connect_link_is_kept_while_good_and_renewed_a_day_before_expiry() -> None:
    uid, now = "uid-1", NOW.timestamp()
    fresh = signing.connect_link("https://qbo.example.com", KEY, "tenants", "acme", uid, int(now) + 7 * 86400)
    assert connect_link_current(fresh, "https://qbo.example.com", KEY, "tenants", "acme", uid, now)
    late = signing.connect_link("https://qbo.example.com", KEY, "tenants", "acme", uid, int(now) + 86400 - 1)
    assert not connect_link_current(late, "https://qbo.example.com", KEY, "tenants", "acme", uid, now)
    # A recreated CR (new uid), a rotated key or a moved gateway each need a new link.
    assert not connect_link_current(fresh, "https://qbo.example.com", KEY, "tenants", "acme", "uid-2", now)
    assert not connect_link_current(fresh, "https://qbo.example.com", "z" * 40, "tenants", "acme", uid, now)
    assert not connect_link_current(fresh, "https://other.example.com", KEY, "tenants", "acme", uid, now)
    assert not connect_link_current(None, "https://qbo.example.com", KEY, "tenants", "acme", uid, now)
    assert not connect_link_current(
        "https://qbo.example.com/connect/x", "https://qbo.example.com", KEY, "t", "a", uid, now
    )


def test_status_patch_holds_only_differences() -> None:
    observed_status = {"phase": "Pending", "authorizationURL": "u", "lastSync": {"result": "Succeeded"}}
    desired = {"phase": "Pending", "authorizationURL": None, "realmId": "1", "cronJobName": None}
    assert status_patch(observed_status, desired) == {"authorizationURL": None, "realmId": "1"}
    assert status_patch(observed_status, {"phase": "Pending"}) == {}


def test_merge_conditions_keeps_other_writers_conditions() -> None:
    ours = compute(observed(TokenState.missing(), IntegrationStatus())).conditions
    theirs = [condition("Webhooks", "True", "Receiving")]
    merged = merge_conditions(ours, [*theirs, condition(READY, "True", "Old")])
    assert [c["type"] for c in merged] == [READY, CONNECTED, SYNCED, SUSPENDED, RECONCILING, STALLED, "Webhooks"]


@pytest.mark.parametrize(
    ("old", "token", "event_type", "reason"),
    [
        (None, TokenState.missing(), "Normal", "Pending"),
        ("Pending", valid_token(), "Normal", "Connected"),
        ("Connected", TokenState(present=True, error_key="scope", error="bad"), "Warning", "Disconnected"),
        ("Connected", valid_token(), None, None),
    ],
)
def test_phase_events(old: str | None, token: TokenState, event_type: str | None, reason: str | None) -> None:
    out = compute(observed(token, IntegrationStatus.model_validate(CONNECTED_STATUS if old else {})))
    event = phase_event(old, out)
    if event_type is None:
        assert event is None
    else:
        assert event is not None
        assert event[:2] == (event_type, reason)
        assert out.phase.value in event[2]
