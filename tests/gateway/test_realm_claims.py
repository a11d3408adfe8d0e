"""Which integration a QuickBooks company belongs to (issue 17, finding 7; docs/security.md "Realm claims").

The realm is claimed once, atomically, by a Lease in the release namespace: two gateway replicas racing to
connect one company cannot both win, a status write names no company, and a claim whose integration is gone
is taken over. Real gateway processes, the QBO sandbox over HTTP and the real API server."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

from qbo_operator.core import realm_claims
from qbo_operator.harness.controlplane import ControlPlane
from tests.support.connect import callback, connect_via_http, consent, heading, new_company, press_connect
from tests.support.kube import CLAIMS_NAMESPACE, create_integration, qbi, secret_or_none, set_status
from tests.support.ledger import Report
from tests.support.processes import GatewayFactory, Stack, StackFactory
from tests.support.wait import wait_for

CONNECTED = "QuickBooks is connected"
ELSEWHERE = "That QuickBooks company is already connected elsewhere"


def pending(cluster: ControlPlane, s: Stack, namespace: str, name: str) -> tuple[str, str]:
    """An integration showing its Connect link, as the operator sets it. Returns (uid, link)."""
    obj = create_integration(cluster, namespace, name)
    uid = obj["metadata"]["uid"]
    link = s.gw.connect_link(namespace, name, uid)
    set_status(cluster, namespace, name, {"phase": "Pending", "authorizationURL": link})
    return uid, link


def claim_holder(cluster: ControlPlane, realm: str) -> str | None:
    lease = cluster.kubectl(
        "get", "lease", realm_claims.lease_name("production", realm), "-n", CLAIMS_NAMESPACE, "-o",
        "jsonpath={.spec.holderIdentity}", check=False,
    )  # fmt: skip
    return lease.stdout.strip() if lease.returncode == 0 else None


def live_grants(s: Stack, realm: str) -> int:
    return int(next(r["grants"] for r in s.sb.state()["realms"] if r["realmId"] == realm))


def filled(cluster: ControlPlane, namespace: str, name: str) -> bool:
    return bool((secret_or_none(cluster, namespace, f"{name}-qbo-tokens") or {}).get("data"))


def test_two_gateways_racing_to_connect_one_realm_exactly_one_wins(
    cluster: ControlPlane, namespace: str, stack_factory: StackFactory, gateway_factory: GatewayFactory, report: Report
) -> None:
    """Two people press Connect on two integrations and both choose the same company; their callbacks reach two
    gateway replicas at once. Intuit's CompanyInfo answer is slowed by 1 s so both are past the first look at
    the claim before either makes it: the Lease create decides."""
    s = stack_factory(start_gateway=False)
    s.gw.start()
    other = gateway_factory(
        s.keys,
        auth_url=s.sb.auth_url,
        token_url=s.sb.token_url,
        extra_env={
            "QBO_API_URL": s.sb.api_url,
            "QBO_REVOKE_URL": s.sb.revoke_url,
            "QBO_REDIRECT_URI": f"{s.gw.base}/oauth/callback",  # one Intuit app, one registered redirect
        },
    )
    rounds = 3
    for n in range(rounds):
        realm = new_company(s.sb, f"Contested Dispensary {n}")
        names = (f"north-{n}", f"south-{n}")
        links = [pending(cluster, s, namespace, name)[1] for name in names]
        backs = []
        for link in links:
            auth_url, cookie = press_connect(link)
            backs.append((consent(auth_url, "approve", realm), cookie))
        second = httpx.URL(backs[1][0]).copy_with(port=other.port)
        s.sb.faults.add(kind="latency", path="/companyinfo/", seconds=1.0, count=2)
        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(lambda pair: callback(*pair), [backs[0], (str(second), backs[1][1])]))

        headings = sorted(heading(a.text) for a in answers)
        assert headings == sorted([CONNECTED, ELSEWHERE]), headings
        winner = names[[heading(a.text) for a in answers].index(CONNECTED)]
        assert [filled(cluster, namespace, name) for name in names] == [name == winner for name in names]
        assert claim_holder(cluster, realm) == f"{namespace}/{winner}"
        assert live_grants(s, realm) == 1  # the loser's grant was revoked at Intuit
    refused = s.gw.metric("qbo_oauth_callbacks_total", result="duplicate_realm") + other.metric(
        "qbo_oauth_callbacks_total", result="duplicate_realm"
    )
    assert refused == rounds
    report.row(
        "attacks", "two gateways connect one realm at once", tried=f"{rounds} races", held="one winner each",
        kind="attack",
    )  # fmt: skip


def test_a_status_write_names_no_company(
    cluster: ControlPlane, namespace: str, stack_factory: StackFactory, report: Report
) -> None:
    """A status writer (a sync Job's ServiceAccount may patch its own integration's status) writes another
    company's realm id into its integration's status: the company still connects its own integration."""
    s = stack_factory(start_gateway=False)
    victim = new_company(s.sb, "Victim Dispensary")
    create_integration(cluster, namespace, "mallory")
    set_status(cluster, namespace, "mallory", {"phase": "Connected", "realmId": victim})
    _, link = pending(cluster, s, namespace, "acme")
    s.gw.start()

    assert heading(connect_via_http(link, victim).text) == CONNECTED
    assert filled(cluster, namespace, "acme") and claim_holder(cluster, victim) == f"{namespace}/acme"
    assert not filled(cluster, namespace, "mallory")
    report.row("attacks", "a forged status.realmId blocks no Connect", tried="1", held="connected", kind="attack")


def test_a_claim_whose_integration_is_gone_is_taken_over(
    cluster: ControlPlane, namespace: str, stack_factory: StackFactory
) -> None:
    s = stack_factory(start_gateway=False)
    realm = new_company(s.sb, "Acme Dispensary LLC")
    _, first = pending(cluster, s, namespace, "first")
    s.gw.start()
    assert heading(connect_via_http(first, realm).text) == CONNECTED
    assert claim_holder(cluster, realm) == f"{namespace}/first"
    # Gone without an operator to release the claim (or re-created under the same name: another uid).
    cluster.kubectl("delete", "quickbooksintegrations", "first", "-n", namespace, "--wait=true")
    wait_for("the token Secret collected", lambda: secret_or_none(cluster, namespace, "first-qbo-tokens") is None)
    uid, again = pending(cluster, s, namespace, "first")
    assert heading(connect_via_http(again, realm).text) == CONNECTED
    assert claim_holder(cluster, realm) == f"{namespace}/first"
    lease = cluster.kubectl(
        "get", "lease", realm_claims.lease_name("production", realm), "-n", CLAIMS_NAMESPACE, "-o", "json"
    )
    assert uid in lease.stdout
    assert qbi(cluster, namespace, "first")["metadata"]["uid"] == uid
