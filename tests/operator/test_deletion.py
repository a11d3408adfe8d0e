"""Deleting an integration: the grant is revoked at Intuit (the QBO sandbox) exactly once, a failing
revocation never blocks the deletion, and garbage collection removes everything the integration owned."""

from __future__ import annotations

import time
from typing import Any

import pytest
from pydantic import SecretStr

from qbo_operator.core import kube as kube_mod
from qbo_operator.core import names, oauth
from qbo_operator.core.config import Settings
from qbo_operator.core.oauth import TokenResponse
from qbo_operator.core.tokens import GrantRevoking, ensure_fresh_tokens
from qbo_operator.harness.controlplane import ControlPlane
from qbo_operator.harness.sandbox.qbo import QboSandbox
from tests.support.kube import HOME, apply, events, get, settled
from tests.support.ledger import Report
from tests.support.objects import integration, issued_tokens, token_secret
from tests.support.operator import QBO_CLIENT_ID, QBO_CLIENT_SECRET, StartOperator
from tests.support.processes import Operator
from tests.support.wait import wait_for


def live_grants(sb: QboSandbox, realm: str) -> int:
    realms: list[dict[str, Any]] = sb.state()["realms"]
    return int(next(r["grants"] for r in realms if r["realmId"] == realm))


def connect(cluster: ControlPlane, sb: QboSandbox, namespace: str, name: str, secrets: list[str], **spec: Any) -> str:
    realm = sb.add_company(f"{name} company", payments=0)
    tokens = issued_tokens(sb, realm)
    secrets.extend([tokens.access_token, tokens.refresh_token])
    apply(cluster, integration(namespace, name, **spec), token_secret(namespace, name, tokens))
    wait_for("Connected", lambda: settled(cluster, namespace, name, "Connected"))
    wait_for(
        "the token Secret owned",
        lambda: (
            (s := get(cluster, "secret", namespace, names.token_secret_name(name)))
            and s["metadata"].get("ownerReferences")
        ),
    )
    return realm


def gone(cluster: ControlPlane, namespace: str, name: str) -> bool:
    workload = names.sync_workload_name(namespace, name)
    leftovers = [
        f"{kind}/{child}"
        for kind, where, child in [
            ("role", namespace, names.sync_access_name(name)),
            ("rolebinding", namespace, names.sync_access_name(name)),
            ("secret", namespace, names.token_secret_name(name)),
            ("serviceaccount", HOME, workload),  # at home: deleted by the operator, not by garbage collection
            ("cronjob", HOME, workload),
        ]
        if get(cluster, kind, where, child) is not None
    ]
    return not leftovers


def test_delete_revokes_once_and_garbage_collection_removes_the_rest(
    cluster: ControlPlane, namespace: str, operator: Operator, qbo_sandbox: QboSandbox, secret_values: list[str]
) -> None:
    realm = connect(cluster, qbo_sandbox, namespace, "acme", secret_values)
    assert live_grants(qbo_sandbox, realm) == 1
    revokes = qbo_sandbox.requests["revoke"]

    t0 = time.monotonic()
    cluster.kubectl("delete", names.PLURAL, "acme", "-n", namespace, "--wait=true", "--timeout=60s")
    t1 = time.monotonic()
    assert qbo_sandbox.requests["revoke"] == revokes + 1
    assert live_grants(qbo_sandbox, realm) == 0  # Intuit no longer lists the connection
    wait_for("the owned objects collected", lambda: gone(cluster, namespace, "acme"), timeout=60)
    print(f"\n[measure] delete {t1 - t0:.1f}s, garbage collection {time.monotonic() - t1:.1f}s more")
    revoked = [e for e in events(cluster, namespace, "acme") if e["reason"] == "Revoked"]
    assert len(revoked) == 1 and revoked[0]["type"] == "Normal"
    assert operator.samples("qbo_integration_info", namespace=namespace, name="acme") == []  # no stale series
    assert operator.samples("qbo_integration_connected", namespace=namespace, name="acme") == []


def test_revoke_on_delete_false_keeps_the_grant(
    cluster: ControlPlane, namespace: str, operator: Operator, qbo_sandbox: QboSandbox, secret_values: list[str]
) -> None:
    realm = connect(cluster, qbo_sandbox, namespace, "keeper", secret_values, revokeOnDelete=False)
    revokes = qbo_sandbox.requests["revoke"]
    cluster.kubectl("delete", names.PLURAL, "keeper", "-n", namespace, "--wait=true", "--timeout=60s")
    assert qbo_sandbox.requests["revoke"] == revokes
    assert live_grants(qbo_sandbox, realm) == 1
    wait_for("the owned objects collected", lambda: gone(cluster, namespace, "keeper"), timeout=60)


def test_a_failing_revocation_never_blocks_deletion(
    cluster: ControlPlane, namespace: str, operator: Operator, qbo_sandbox: QboSandbox, secret_values: list[str]
) -> None:
    realm = connect(cluster, qbo_sandbox, namespace, "stuck", secret_values)
    fault = qbo_sandbox.faults.add(kind="status", path="/v2/oauth2/tokens/revoke", status=503)
    try:
        revokes = qbo_sandbox.requests["revoke"]
        started = time.monotonic()
        cluster.kubectl("delete", names.PLURAL, "stuck", "-n", namespace, "--wait=true", "--timeout=120s")
        elapsed = time.monotonic() - started
    finally:
        qbo_sandbox.faults.remove(fault)
    attempts = qbo_sandbox.requests["revoke"] - revokes
    assert attempts == 4  # bounded retries, then it gives up
    assert live_grants(qbo_sandbox, realm) == 1
    warning = [e for e in events(cluster, namespace, "stuck") if e["reason"] == "RevokeFailed"]
    assert len(warning) == 1 and warning[0]["type"] == "Warning"
    assert "HTTP 503" in warning[0]["message"] and "Settings > Apps" in warning[0]["message"]
    wait_for("the owned objects collected", lambda: gone(cluster, namespace, "stuck"), timeout=60)
    print(f"\n[measure] deletion with Intuit failing took {elapsed:.1f}s ({attempts} revoke attempts)")


async def test_revoke_on_delete_during_a_refresh_leaves_no_live_grant(
    cluster: ControlPlane,
    namespace: str,
    operator: Operator,
    qbo_sandbox: QboSandbox,
    secret_values: list[str],
    report: Report,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A sync's refresh gets a rotated refresh token from Intuit; before it can store it, the integration is
    deleted and the operator revokes the token it finds in the Secret (the old one, already dead at Intuit).
    The refresh cannot store its answer (the Secret is marked, or gone), so it revokes its own new tokens: the
    realm is left with no live grant at Intuit."""
    realm = connect(cluster, qbo_sandbox, namespace, "racer", secret_values)
    qbo_sandbox.force_rotation(realm)  # this refresh rotates: the old refresh token dies at once
    app = Settings(
        qbo_client_id=QBO_CLIENT_ID,
        qbo_client_secret=SecretStr(QBO_CLIENT_SECRET),
        qbo_token_url=qbo_sandbox.token_url,
        qbo_revoke_url=qbo_sandbox.revoke_url,
    )
    revokes = qbo_sandbox.requests["revoke"]

    def refresh_then_delete(settings: Settings, refresh_token: str) -> TokenResponse:
        reply = oauth.refresh(settings, refresh_token)
        secret_values.extend([reply.access_token, reply.refresh_token])
        cluster.kubectl("delete", names.PLURAL, "racer", "-n", namespace, "--wait=true", "--timeout=60s")
        return reply

    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    outcome: BaseException | None = None
    async with kube_mod.connect() as kube:
        try:
            await ensure_fresh_tokens(
                kube, app, namespace, names.token_secret_name("racer"), force=True, refresh_fn=refresh_then_delete
            )
        except Exception as exc:  # judged below, after the row is recorded
            outcome = exc
    left = live_grants(qbo_sandbox, realm)
    report.row(
        "token rotation",
        "revoke-on-delete between Intuit's rotation and the Secret write",
        tried="delete the integration while a refresh holds a rotated, unstored token",
        held="no live grant" if left == 0 else f"{left} live grant(s) left at Intuit",
        kind="attack",
    )
    assert left == 0
    assert isinstance(outcome, GrantRevoking), outcome
    assert "were revoked" in str(outcome)
    assert qbo_sandbox.requests["revoke"] == revokes + 2  # the operator's (old token) and the refresher's (new)
    revoked = [e for e in events(cluster, namespace, "racer") if e["reason"] == "Revoked"]
    assert len(revoked) == 1
    wait_for("the owned objects collected", lambda: gone(cluster, namespace, "racer"), timeout=60)


def test_the_sync_workload_of_an_integration_gone_while_the_operator_was_down_is_swept_at_start_up(
    cluster: ControlPlane, namespace: str, start_operator: StartOperator
) -> None:
    """No ownerReference reaches the release namespace, so nothing but the operator removes a CronJob whose
    integration vanished while it was not running (its finalizer removed by hand); it does so when it starts."""
    operator = start_operator("--all-namespaces")
    apply(cluster, integration(namespace, "ghost"))
    wait_for("Pending", lambda: settled(cluster, namespace, "ghost", "Pending"))
    workload = names.sync_workload_name(namespace, "ghost")
    assert get(cluster, "cronjob", HOME, workload) is not None and get(cluster, "serviceaccount", HOME, workload)
    operator.stop()
    cluster.kubectl(
        "patch", names.PLURAL, "ghost", "-n", namespace, "--type=merge", "-p", '{"metadata":{"finalizers":null}}'
    )
    cluster.kubectl("delete", names.PLURAL, "ghost", "-n", namespace, "--wait=true", "--timeout=60s")
    assert get(cluster, "cronjob", HOME, workload) is not None  # left behind

    start_operator("--all-namespaces")
    wait_for(
        "the workload swept",
        lambda: (
            get(cluster, "cronjob", HOME, workload) is None and get(cluster, "serviceaccount", HOME, workload) is None
        ),
    )
