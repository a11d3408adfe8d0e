"""Deleting an integration: the grant is revoked at Intuit (the QBO sandbox) exactly once, a failing
revocation never blocks the deletion, and garbage collection removes everything the integration owned."""

from __future__ import annotations

import time
from typing import Any

from qbo_operator.core import names
from qbo_operator.harness.controlplane import ControlPlane
from qbo_operator.harness.sandbox.qbo import QboSandbox
from tests.support.kube import HOME, apply, events, get, settled
from tests.support.objects import integration, issued_tokens, token_secret
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
