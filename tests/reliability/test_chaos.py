"""Crash safety of the whole product: the sync, the operator and the gateway SIGKILLed at random points
(seeded) while a few thousand payments are made and their webhooks arrive, each restarted after.

Two tenants in two namespaces, each connected through the real Connect flow to its own QBO company, and
a third integration never connected. Every round makes a burst of payments (the QBO sandbox's clock
moves 11 minutes first, as a night would, so a run reads about one round of data), asks for a sync with
the annotation, and lets the operator make the Job whose Pod the test's kubelet runs as the Pod's own
ServiceAccount. One component is killed per round at a random moment: the sync mid-run, the operator
mid-reconcile or mid-run, the gateway while webhooks arrive. Latency injected into both APIs keeps the
runs long enough for kills to land inside them. At the end, with everyone back up and one last sync per
tenant, Green Check's current records must be exactly the projection (`sync.expected_records` over the QBO
sandbox's raw payments, not the product's mapping: money is cash, credits apart), every phase must be
right, and each token Secret must hold a refresh token that works."""

from __future__ import annotations

import datetime as dt
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from qbo_operator.core import oauth
from qbo_operator.core.config import Settings
from qbo_operator.core.models import parse_rfc3339
from qbo_operator.harness.controlplane import ControlPlane
from tests.support.faults import PAYMENT_SIDE, audit, differences, payments_projection
from tests.support.kube import HOME
from tests.support.ledger import Report
from tests.support.objects import COMPANY_IDS
from tests.support.stack import Product, product
from tests.support.wait import STACK_TIMEOUT, wait_for

pytestmark = pytest.mark.e2e

SEED = 20261125
TENANTS = (("tenant-a", "acme"), ("tenant-b", "bravo"))
PENDING = ("tenant-b", "charlie")
WEIGHTS = {"sync": 0.55, "operator": 0.25, "gateway": 0.2}


@pytest.mark.timeout(7200)
@pytest.mark.parametrize(
    ("min_kills", "target_payments"),
    [pytest.param(50, 2400, id="50-kills"), pytest.param(250, 12000, id="250-kills", marks=pytest.mark.slow)],
)
def test_sigkill_sync_operator_and_gateway_at_random_points(
    local_cluster: ControlPlane, tmp_path: Path, report: Report, min_kills: int, target_payments: int
) -> None:
    rng = random.Random(SEED)
    max_rounds = min_kills * 2
    kills: Counter[str] = Counter()
    figures = {"expected": 0, "delivered": 0, "duplicated": 0, "lost": 0}
    payments = rounds = 0
    try:
        with product(local_cluster, tmp_path / "chaos", companies=2, history=30) as p:
            connected = setup_tenants(p)
            # Latency on both APIs so kills land inside runs, not between them.
            p.qbo(
                "POST",
                "/faults",
                json={
                    "rules": [
                        {"kind": "latency", "path": "/query", "seconds": 0.25, "probability": 0.6},
                    ],
                    "seed": SEED,
                },
            )
            httpx.post(
                f"{p.stack.greencheck_url}/_sandbox/faults",
                json={"kind": "latency", "path": "invoice-payments", "seconds": 0.2},
                timeout=10,
            ).raise_for_status()

            while (sum(kills.values()) < min_kills or payments < target_payments) and rounds < max_rounds:
                rounds += 1
                payments += chaos_round(p, rng, rounds, kills)

            everyone_back_then_the_books(p, connected, figures, kills)
            assert sum(kills.values()) >= min_kills, f"only {dict(kills)} kills landed in {rounds} rounds"
    finally:
        detail = ", ".join(f"{k} {v}" for k, v in sorted(kills.items()))
        report.row(
            "crash safety",
            "SIGKILL sync/operator/gateway at random points, restart",
            tried=f"{sum(kills.values())} kills ({detail}), {rounds} rounds, {payments} payments",
            held=f"{figures['delivered']}/{figures['expected']} delivered, {figures['duplicated']} dup, "
            f"{figures['lost']} lost",
            kills=sum(kills.values()),
            expected=figures["expected"],
            delivered=figures["delivered"],
            duplicated=figures["duplicated"],
            lost=figures["lost"],
        )


def chaos_round(p: Product, rng: random.Random, rounds: int, kills: Counter[str]) -> int:
    """One round: a burst of payments, a sync request, the victim killed at a random moment (and restarted),
    the sync's Pod run to its end. Returns how many payments the round made."""
    kubelet = p.kubelet
    (namespace, name), realm = rng.choice(list(zip(TENANTS, p.realms, strict=True)))
    victim = rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()))[0]
    p.qbo("POST", "/clock", json={"advance": 660})  # a later "night": the last window is done
    burst = made = rng.randint(30, 60)
    p.qbo("POST", f"/companies/{realm}/payments", json={"n": burst, "seed": SEED + rounds})
    if victim == "gateway":  # webhooks for the burst are on their way
        time.sleep(rng.uniform(0.0, 0.4))
        kills["gateway"] += p.kill("gateway")
        p.respawn("gateway")
    job = p.request_sync(namespace, name, f"chaos-{rounds}")
    if victim == "operator":  # reconciling the request, or about to watch the Job
        time.sleep(rng.uniform(0.0, 1.5))
        kills["operator"] += p.kill("operator")
        p.respawn("operator")
    pod = kubelet.start(HOME, job)
    if rng.random() < 0.3:  # payments made while the sync runs
        extra = rng.randint(5, 15)
        p.qbo("POST", f"/companies/{realm}/payments", json={"n": extra, "seed": SEED * 7 + rounds})
        made += extra
    if victim == "sync":
        time.sleep(rng.uniform(0.3, 4.5))
        kills["sync"] += kubelet.kill(pod)
    rc = kubelet.finish(pod)
    assert rc in (0, -9), f"round {rounds}: the sync failed without being killed:\n{pod.log.read_text()[-3000:]}"
    p.record_secrets(namespace, name)
    return made


def everyone_back_then_the_books(
    p: Product, connected: dict[tuple[str, str], dt.datetime], figures: dict[str, int], kills: Counter[str]
) -> None:
    """Everyone back, one last sync each, then the books: every expected record exactly once, every phase
    right, every refresh token working, every webhook acknowledged."""
    kubelet = p.kubelet
    p.qbo("DELETE", "/faults")
    for component in ("gateway", "operator"):
        p.ready(component)
    for namespace, name in TENANTS:
        run = kubelet.run(HOME, p.request_sync(namespace, name, "final"))
        assert run.exit_code == 0, (run.stdout + run.stderr)[-3000:]
    for (namespace, name), realm, company in zip(TENANTS, p.realms, COMPANY_IDS[:2], strict=True):
        check_books(p, realm, company, connected[(namespace, name)], figures)
        check_integration(p, namespace, name)
        check_refresh_token_works(p, namespace, name)
    assert p.phase(*PENDING) == "Pending"
    # Intuit retries what the killed gateways did not answer: every webhook gets acknowledged.
    hooks = wait_for("every webhook acknowledged", lambda: _webhooks_done(p), timeout=240, interval=0.25)
    assert hooks["failed"] > 0 or kills["gateway"] == 0, "no webhook ever met a killed gateway"


def setup_tenants(p: Product) -> dict[tuple[str, str], dt.datetime]:
    """Two integrations connected through the Connect flow, one left Pending; returns connectedAt of each."""
    out = {}
    for (namespace, name), realm, company in zip(TENANTS, p.realms, COMPANY_IDS[:2], strict=True):
        p.create_integration(namespace, name, company)
        p.connect(namespace, name, realm)
        status = p.integration(namespace, name)["status"]
        out[(namespace, name)] = parse_rfc3339(status["connectedAt"])
        p.record_secrets(namespace, name)
    p.create_integration(*PENDING, COMPANY_IDS[2])
    wait_for("charlie Pending", lambda: p.phase(*PENDING) == "Pending", timeout=STACK_TIMEOUT, interval=0.25)
    return out


def check_books(p: Product, realm: str, company: str, connected_at: dt.datetime, figures: dict[str, int]) -> None:
    """Green Check's current records against the projection (`faults.audit`): nothing twice, nothing lost,
    nothing false (by the payment-side fields: the sandbox's invoices are not readable from here)."""
    payments = p.payments(realm)
    expected = payments_projection(realm, payments, connected_at)
    held = {r["external_id"]: r for r in p.greencheck_store(company)}
    a = audit(held, expected, PAYMENT_SIDE)
    figures["expected"] += a.expected
    figures["delivered"] += a.delivered
    figures["duplicated"] += a.duplicated
    figures["lost"] += len(a.lost)
    assert a.invented == (), f"{company}: {len(a.invented)} records QBO does not have: " + explain(
        payments, held, a.invented
    )
    assert a.lost == (), f"{company}: lost {list(a.lost[:5])}"
    wrong = [f"{eid}: {differences(held[eid], expected[eid], PAYMENT_SIDE)}" for eid in a.wrong[:5]]
    assert a.wrong == (), f"{company}: {len(a.wrong)} records differ from QBO: {wrong}"
    assert a.duplicated == 0, f"{company}: {a.duplicated} duplicate records"
    assert len(p.stack.greencheck_records(company)) == len(expected)  # Green Check's own read-back agrees


def explain(payments: list[dict[str, Any]], held: dict[str, dict[str, Any]], invented: tuple[str, ...]) -> str:
    """What QBO says now about the payments behind records it should not have produced."""
    by_id = {x["Id"]: x for x in payments}
    lines = []
    for eid in invented[:5]:
        pay = by_id.get(eid.split(":")[3])
        now = {k: pay.get(k) for k in ("MetaData", "TotalAmt", "PrivateNote")} if pay else "no such payment"
        lines.append(f"{eid}: sent as {held[eid]['payment']}; QBO now: {now}")
    return "\n".join(lines)


def _webhooks_done(p: Product) -> dict[str, int] | None:
    """Webhook attempts by outcome once the QBO sandbox has nothing left to deliver (None before)."""
    state = p.qbo("GET", "/webhooks")
    if state["pending"]:
        return None
    attempts = state["deliveries"]
    return {
        "acknowledged": sum(1 for d in attempts if d["status"] == 200),
        "failed": sum(1 for d in attempts if d["status"] != 200),
    }


def check_integration(p: Product, namespace: str, name: str) -> None:
    obj = p.integration(namespace, name)
    status = obj["status"]
    conds = {c["type"]: c for c in status["conditions"]}
    assert status["phase"] == "Connected", status
    assert (conds["Ready"]["status"], conds["Connected"]["status"]) == ("True", "True"), conds
    assert (conds["Synced"]["status"], conds["Synced"]["reason"]) == ("True", "Succeeded"), conds["Synced"]
    assert status["lastSync"]["result"] == "Succeeded"
    assert status["lastHandledSyncRequest"] == "final"


def check_refresh_token_works(p: Product, namespace: str, name: str) -> None:
    stored = p.token_secret(namespace, name)
    creds = p.stack.creds
    settings = Settings(
        qbo_client_id=creds.qbo_client_id,
        qbo_client_secret=SecretStr(creds.qbo_client_secret),
        qbo_token_url=f"{p.stack.qbo_url}/oauth2/v1/tokens/bearer",
    )
    reply = oauth.refresh(settings, stored["refresh_token"])  # raises OAuthError if the stored token is dead
    assert reply.access_token
