"""The housekeeping timer (every 2 seconds here): it keeps a suspended integration's grant alive through
the QBO sandbox's real token endpoint, notices a grant Intuit killed, and warns once a day before the
5-year hard expiry."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime, timedelta

from qbo_operator.core import names
from qbo_operator.core.models import Tokens
from qbo_operator.harness.controlplane import ControlPlane
from qbo_operator.harness.sandbox.qbo import QboSandbox
from tests.support.kube import apply, conditions, events, get, qbi, settled
from tests.support.objects import fake_tokens, integration, issued_tokens, token_secret
from tests.support.operator import StartOperator
from tests.support.wait import wait_for


def stored_tokens(cluster: ControlPlane, namespace: str, name: str) -> Tokens:
    secret = get(cluster, "secret", namespace, names.token_secret_name(name))
    assert secret is not None
    return Tokens.from_secret_data(secret["data"])


def test_a_suspended_integration_is_kept_alive_and_a_dead_grant_is_noticed(
    cluster: ControlPlane,
    namespace: str,
    start_operator: StartOperator,
    qbo_sandbox: QboSandbox,
    secret_values: list[str],
) -> None:
    op = start_operator("--all-namespaces", "--housekeeping-interval=2")
    realm = qbo_sandbox.add_company("Sleepy Dispensary", payments=0)
    soon = datetime.now(UTC).replace(microsecond=0) + timedelta(days=10)
    tokens = issued_tokens(qbo_sandbox, realm, refresh_token_expires_at=soon)
    secret_values.extend([tokens.access_token, tokens.refresh_token])
    qbo_sandbox.force_rotation(realm)  # as 24 hours after the last rotation: the refresh issues a new value
    apply(cluster, integration(namespace, "sleepy", suspend=True), token_secret(namespace, "sleepy", tokens))

    # Less than 30 days left on the rolling refresh token: refreshed, rotation persisted, status follows.
    refreshed = wait_for(
        "the keep-alive refresh",
        lambda: (t := stored_tokens(cluster, namespace, "sleepy")).refresh_token != tokens.refresh_token and t,
    )
    secret_values.extend([refreshed.access_token, refreshed.refresh_token])
    assert refreshed.refresh_token_expires_at - datetime.now(UTC) > timedelta(days=90)
    assert refreshed.realm_id == realm and refreshed.connected_at == tokens.connected_at
    wait_for(
        "the new expiry in status",
        lambda: (
            qbi(cluster, namespace, "sleepy")["status"].get("refreshTokenExpiresAt")
            == refreshed.refresh_token_expires_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        ),
    )
    refreshes = qbo_sandbox.state()["grants"]["refreshes"]
    time.sleep(5)  # more ticks: nothing left to do, so no more refreshes
    assert qbo_sandbox.state()["grants"]["refreshes"] == refreshes
    assert op.samples("qbo_integration_refresh_token_expiry_timestamp_seconds", namespace=namespace, name="sleepy") == [
        refreshed.refresh_token_expires_at.timestamp()
    ]

    # The company disconnects the app at Intuit; the next keep-alive refresh is refused: Disconnected.
    expiring = refreshed.model_copy(update={"refresh_token_expires_at": soon})
    qbo_sandbox.revoke_all(realm)
    apply(cluster, token_secret(namespace, "sleepy", expiring))
    obj = wait_for(
        "TokenRevoked", lambda: settled(cluster, namespace, "sleepy", "Disconnected", Connected="TokenRevoked")
    )
    assert obj["status"]["authorizationURL"]  # a fresh Connect link to reconnect with
    time.sleep(3)  # the condition holds (no flapping back to Connected while the Secret is unchanged)
    assert settled(cluster, namespace, "sleepy", "Disconnected", Connected="TokenRevoked")

    # Connecting again (new tokens from a new consent) clears it.
    again = issued_tokens(qbo_sandbox, realm)
    secret_values.extend([again.access_token, again.refresh_token])
    apply(cluster, token_secret(namespace, "sleepy", again))
    wait_for("Connected", lambda: settled(cluster, namespace, "sleepy", "Connected", Connected="Authorized"))


def test_hard_expiry_warning_once_a_day(
    cluster: ControlPlane, namespace: str, start_operator: StartOperator, secret_values: list[str]
) -> None:
    start_operator("--all-namespaces", "--housekeeping-interval=2")
    hard = datetime.now(UTC).replace(microsecond=0) + timedelta(days=20)
    tokens = fake_tokens("6200000000000001", refresh_token_hard_expires_at=hard)
    secret_values.extend([tokens.access_token, tokens.refresh_token])
    apply(cluster, integration(namespace, "old"), token_secret(namespace, "old", tokens))
    obj = wait_for("Connected", lambda: settled(cluster, namespace, "old", "Connected"))
    assert obj["status"]["refreshTokenHardExpiresAt"] == hard.strftime("%Y-%m-%dT%H:%M:%SZ")
    warning = wait_for(
        "the warning", lambda: [e for e in events(cluster, namespace, "old") if e["reason"] == "RefreshTokenHardExpiry"]
    )
    time.sleep(6)  # several more ticks
    warnings = [e for e in events(cluster, namespace, "old") if e["reason"] == "RefreshTokenHardExpiry"]
    assert len(warnings) == 1 and warnings[0]["type"] == "Warning"
    assert hard.strftime("%Y-%m-%dT%H:%M:%SZ") in warning[0]["message"]
    assert conditions(obj)["Ready"]["status"] == "True"  # a warning, not yet a failure
    assert base64.b64decode(get(cluster, "secret", namespace, "old-qbo-tokens")["data"]["realm_id"]).decode() == (  # type: ignore[index]
        "6200000000000001"
    )
