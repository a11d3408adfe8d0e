"""Own only what we created (issue #17, findings 2 and 14): a QuickbooksIntegration that names a Secret, or
whose derived names hit objects, the operator did not create gets phase Error and touches none of them: no
ownerReference added, no Role grants anything on them, deleting it revokes nothing at Intuit."""

from __future__ import annotations

import json
from typing import Any

from qbo_operator.core import names
from qbo_operator.harness.controlplane import ControlPlane
from qbo_operator.harness.sandbox.qbo import QboSandbox
from tests.support.kube import HOME, apply, get, settled
from tests.support.ledger import Report
from tests.support.objects import integration, issued_tokens, token_secret
from tests.support.operator import StartOperator
from tests.support.wait import wait_for

GATEWAY = "qbo-system/qbo-operator-gateway"


def live_grants(sb: QboSandbox, realm: str) -> int:
    realms: list[dict[str, Any]] = sb.state()["realms"]
    return int(next(r["grants"] for r in realms if r["realmId"] == realm))


def owner_uids(obj: dict[str, Any] | None) -> list[str]:
    return [ref["uid"] for ref in ((obj or {}).get("metadata") or {}).get("ownerReferences") or []]


def roles_naming(cluster: ControlPlane, namespace: str, secret: str) -> list[str]:
    """Roles in the namespace with a rule that names `secret`."""
    items = cluster.kubectl_json("get", "roles", "-n", namespace)["items"]
    return [
        r["metadata"]["name"]
        for r in items
        if any(secret in (rule.get("resourceNames") or []) for rule in r.get("rules") or [])
    ]


def conflicted(cluster: ControlPlane, namespace: str, name: str, reason: str) -> dict[str, Any]:
    obj = wait_for(f"{name} Error/{reason}", lambda: settled(cluster, namespace, name, "Error", Ready=reason))
    assert isinstance(obj, dict)
    return obj


def test_naming_a_secret_that_is_not_ours_is_a_conflict_and_revokes_nothing(
    cluster: ControlPlane,
    namespace: str,
    start_operator: StartOperator,
    qbo_sandbox: QboSandbox,
    secret_values: list[str],
    report: Report,
) -> None:
    start_operator("--all-namespaces", env={"QBO_GATEWAY_SERVICE_ACCOUNT": GATEWAY})
    # Acme, connected: its token Secret is the operator's, owned by acme's uid.
    realm = qbo_sandbox.add_company("Acme (ownership)", payments=0)
    tokens = issued_tokens(qbo_sandbox, realm)
    secret_values += [tokens.access_token, tokens.refresh_token]
    apply(cluster, integration(namespace, "acme"), token_secret(namespace, "acme", tokens))
    acme = wait_for("acme Connected", lambda: settled(cluster, namespace, "acme", "Connected"))
    acme_secret = names.token_secret_name("acme")
    assert owner_uids(get(cluster, "secret", namespace, acme_secret)) == [acme["metadata"]["uid"]]
    # A tenant's own Secret, which nothing of ours created.
    cluster.kubectl("create", "secret", "generic", "bank-database", "-n", namespace, "--from-literal=password=hunter2")
    secret_values.append("hunter2")
    before = {s: get(cluster, "secret", namespace, s) for s in (acme_secret, "bank-database")}
    roles_before = {s: roles_naming(cluster, namespace, s) for s in before}
    assert roles_before["bank-database"] == []
    revokes, grants = qbo_sandbox.requests["revoke"], live_grants(qbo_sandbox, realm)

    for name, target in (("evil", acme_secret), ("nosy", "bank-database")):
        apply(cluster, integration(namespace, name, tokenSecretName=target))
        obj = conflicted(cluster, namespace, name, "SecretConflict")
        ready = next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")
        assert target in ready["message"] and "spec.tokenSecretName" in ready["message"]
        assert "realmId" not in obj["status"]  # nothing read from someone else's Secret
        for kind in ("serviceaccount", "role", "rolebinding", "cronjob", "secret"):
            where = HOME if kind in ("serviceaccount", "cronjob") else namespace
            child = names.sync_workload_name(namespace, name) if where == HOME else names.sync_access_name(name)
            assert get(cluster, kind, where, child) is None, f"{kind} written"
        assert get(cluster, "role", namespace, names.gateway_access_name(name)) is None

    for secret, old in before.items():
        now = get(cluster, "secret", namespace, secret)
        assert now is not None and owner_uids(now) == owner_uids(old), f"{secret} gained an owner"
        assert now["metadata"]["resourceVersion"] == (old or {})["metadata"]["resourceVersion"], f"{secret} written"
        assert roles_naming(cluster, namespace, secret) == roles_before[secret], f"a new Role names {secret}"
    assert settled(cluster, namespace, "acme", "Connected") is not None  # acme is untouched

    for name in ("evil", "nosy"):
        cluster.kubectl("delete", names.PLURAL, name, "-n", namespace, "--wait=true", "--timeout=60s")
    assert qbo_sandbox.requests["revoke"] == revokes  # nothing revoked at Intuit
    assert live_grants(qbo_sandbox, realm) == grants == 1
    for secret in before:
        assert get(cluster, "secret", namespace, secret) is not None, f"{secret} was deleted with the squatter"
    for target in ("another integration's token Secret", "an unrelated Secret"):
        report.row("attacks", f"tokenSecretName names {target}", tried=1, held="SecretConflict", kind="attack")


def test_objects_of_derived_names_not_created_by_the_operator_are_not_taken_over(
    cluster: ControlPlane, namespace: str, start_operator: StartOperator
) -> None:
    start_operator("--all-namespaces")
    # Someone else's Role, and a CronJob at home (the release namespace), that carry the names the operator would
    # derive.
    cluster.kubectl(
        "create", "role", names.sync_access_name("squat"), "--verb=get", "--resource=configmaps", "-n", namespace
    )
    cronjob = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": names.sync_workload_name(namespace, "squat2"), "namespace": HOME},
        "spec": {
            "schedule": "0 0 * * *",
            "suspend": True,
            "jobTemplate": {
                "spec": {
                    "template": {
                        "spec": {"restartPolicy": "Never", "containers": [{"name": "mine", "image": "example/mine:1"}]}
                    }
                }
            },
        },
    }
    cluster.kubectl("create", "-f", "-", input=json.dumps(cronjob))
    before = {
        ("role", namespace): get(cluster, "role", namespace, names.sync_access_name("squat")),
        ("cronjob", HOME): get(cluster, "cronjob", HOME, names.sync_workload_name(namespace, "squat2")),
    }
    for name, kind, child in (
        ("squat", "Role", names.sync_access_name("squat")),
        ("squat2", "CronJob", names.sync_workload_name(namespace, "squat2")),
    ):
        apply(cluster, integration(namespace, name))
        obj = conflicted(cluster, namespace, name, "ObjectConflict")
        ready = next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")
        assert f"{kind} {child}" in ready["message"]
    for (kind, where), old in before.items():
        assert old is not None
        now = get(cluster, kind, where, old["metadata"]["name"])
        assert now is not None and owner_uids(now) == [], f"{kind} gained an owner"
        assert now["metadata"]["resourceVersion"] == old["metadata"]["resourceVersion"], f"{kind} was written"
    # The Role's RoleBinding was not written either: no account of ours is bound to someone else's Role.
    assert get(cluster, "rolebinding", namespace, names.sync_access_name("squat")) is None
    for name in ("squat", "squat2"):
        cluster.kubectl("delete", names.PLURAL, name, "-n", namespace, "--wait=true", "--timeout=60s")
    for (kind, where), old in before.items():
        assert old is not None and get(cluster, kind, where, old["metadata"]["name"]) is not None
    cluster.kubectl("delete", "cronjob", names.sync_workload_name(namespace, "squat2"), "-n", HOME)
