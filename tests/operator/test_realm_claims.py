"""The operator settles DuplicateRealm from the realm's claim, not from anyone's status (issue 17, finding 7).

A status writer puts a connected company's realm id into another integration's status: the company's own
integration, which holds the claim the gateway made once Intuit confirmed the realm, stays Connected. Deleting
it releases the claim. The operator process against the real API server, with the chart's RBAC."""

from __future__ import annotations

import json
import secrets

from qbo_operator.core import names, realm_claims
from qbo_operator.harness.controlplane import ControlPlane
from tests.support.kube import CLAIMS_NAMESPACE, apply, merge_patch, qbi, settled
from tests.support.ledger import Report
from tests.support.objects import fake_tokens, integration, token_secret
from tests.support.operator import StartOperator
from tests.support.wait import wait_for


def lease(cluster: ControlPlane, realm: str) -> bool:
    name = realm_claims.lease_name("production", realm)
    return cluster.kubectl("get", "lease", name, "-n", CLAIMS_NAMESPACE, check=False).returncode == 0


def test_a_forged_status_realm_takes_no_claimed_company_and_deletion_releases_the_claim(
    cluster: ControlPlane, namespace: str, start_operator: StartOperator, report: Report
) -> None:
    start_operator("--all-namespaces")
    realm = str(9_000_000_000_000_000 + secrets.randbelow(10**15))
    # mallory, older than the victim, writes the victim's realm id into its own status.
    apply(cluster, integration(namespace, "mallory"))
    wait_for("mallory Pending", lambda: settled(cluster, namespace, "mallory", "Pending"))
    merge_patch(cluster, names.PLURAL, namespace, "mallory", {"status": {"realmId": realm}}, status=True)

    apply(cluster, integration(namespace, "victim"))
    victim = wait_for("victim Pending", lambda: settled(cluster, namespace, "victim", "Pending"))
    # The gateway's claim once Intuit confirmed the realm, then the tokens it stores.
    holder = realm_claims.Holder(namespace, "victim", victim["metadata"]["uid"])
    claim = realm_claims.manifest(CLAIMS_NAMESPACE, "production", realm, holder)
    cluster.kubectl("create", "-f", "-", input=json.dumps(claim))
    apply(cluster, token_secret(namespace, "victim", fake_tokens(realm)))

    obj = wait_for("victim Connected", lambda: settled(cluster, namespace, "victim", "Connected"))
    assert obj["status"]["realmId"] == realm
    assert qbi(cluster, namespace, "mallory")["status"].get("realmId") == realm  # the forgery is still there
    report.row(
        "attacks", "a forged status.realmId takes no company from its owner", tried="1", held="Connected",
        kind="attack",
    )  # fmt: skip

    cluster.kubectl("delete", names.PLURAL, "victim", "-n", namespace, "--wait=true", "--timeout=60s")
    wait_for("the claim released", lambda: not lease(cluster, realm))
