"""End to end on the real control plane: payments created in the QBO sandbox → signed webhooks (both
formats, Intuit's delivery rules) → the integration's status.webhook.eventsSinceLastSync."""

from __future__ import annotations

import pytest

from qbo_operator.harness.controlplane import ControlPlane
from tests.support.connect import new_company
from tests.support.kube import create_integration, qbi, set_status, webhook_count
from tests.support.processes import StackFactory
from tests.support.wait import wait_for
from tests.support.webhooks import payment_events_sent


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
    wait_for("every webhook acknowledged", lambda: s.sb.state()["webhooks"]["pending"] == 0)
    deliveries = s.sb.webhook_deliveries
    assert deliveries and all(d.ok and d.attempt == 1 for d in deliveries), "a delivery was not answered 200 at once"
    sent = payment_events_sent(deliveries)
    assert len(sent) >= len(created) == 75  # one per payment created, plus voids

    wait_for(f"{len(sent)} events counted", lambda: webhook_count(cluster, namespace, "acme") == len(sent))
    status = qbi(cluster, namespace, "acme")["status"]
    assert status["webhook"]["lastEventTime"].endswith("Z")
    assert s.gw.metric("qbo_webhook_requests_total", result="accepted") == len(deliveries)
    assert s.gw.metric("qbo_webhook_requests_total", result="bad_signature") == 0
    assert s.gw.metric("qbo_webhook_events_total", entity="Payment", operation="Create") == len(created)
