"""End to end on the real control plane: payments created in the QBO sandbox → signed webhooks (both
formats, Intuit's delivery rules) → the integration's status.webhook.eventsSinceLastSync."""

from __future__ import annotations

import json

import pytest

from qbo_operator.harness.controlplane import ControlPlane
from tests.gateway.conftest import StackFactory
from tests.gateway.gwtools import create_integration, get_integration, new_company, set_status, wait_for, webhook_count


def payment_events_sent(deliveries: list[object]) -> set[str]:
    """Ids of the Payment events the sandbox delivered (read from the raw bodies it signed)."""
    ids: set[str] = set()
    for d in deliveries:
        doc = json.loads(d.body)  # type: ignore[attr-defined]
        if isinstance(doc, list):
            ids |= {e["id"] for e in doc if e["type"].startswith("qbo.payment.")}
        else:
            for note in doc["eventNotifications"]:
                for e in note["dataChangeEvent"]["entities"]:
                    if e["name"] == "Payment":
                        ids.add(f"{note['realmId']}/{e['id']}/{e['operation']}/{e['lastUpdated']}")
    return ids


@pytest.mark.parametrize("fmt", ["cloudevents", "legacy"])
def test_sandbox_payments_reach_the_integration_status(
    cluster: ControlPlane, namespace: str, stack_factory: StackFactory, fmt: str
) -> None:
    s = stack_factory(webhooks=True, webhook_format=fmt, start_gateway=False)
    realm = new_company(s.sb, "Acme Dispensary LLC", payments=20)
    create_integration(cluster, namespace, "acme")
    set_status(cluster, namespace, "acme", {"realmId": realm})
    s.gw.start()  # ready once the realm index holds the integration

    created = s.sb.generate_payments(realm, 60, seed=7)
    created += s.sb.generate_payments(realm, 15, seed=8)
    wait_for(lambda: s.sb.state()["webhooks"]["pending"] == 0, what="every webhook acknowledged")
    deliveries = s.sb.webhook_deliveries
    assert deliveries and all(d.ok and d.attempt == 1 for d in deliveries), "a delivery was not answered 200 at once"
    sent = payment_events_sent(deliveries)
    assert len(sent) >= len(created) == 75  # one per payment created, plus voids

    wait_for(lambda: webhook_count(cluster, namespace, "acme") == len(sent), what=f"{len(sent)} events counted")
    status = get_integration(cluster, namespace, "acme")["status"]
    assert status["webhook"]["lastEventTime"].endswith("Z")
    assert s.gw.metric("qbo_webhook_requests_total", result="accepted") == len(deliveries)
    assert s.gw.metric("qbo_webhook_requests_total", result="bad_signature") == 0
    assert s.gw.metric("qbo_webhook_events_total", entity="Payment", operation="Create") == len(created)
