"""The gateway's webhook coverage Lease (core/webhook_coverage.py), written by real gateway processes.

Coverage starts when a replica starts, stays put while heartbeats keep coming, and moves to the moment a
delivery was refused (it may have been Intuit's): each of these is what lets a sync skip QuickBooks, or not."""

from __future__ import annotations

from datetime import datetime

from qbo_operator.core import webhook_coverage
from qbo_operator.core.webhook_coverage import Coverage
from qbo_operator.harness.controlplane import ControlPlane
from tests.support.kube import create_integration, get, set_status
from tests.support.processes import GatewayFactory, Keys
from tests.support.wait import wait_for
from tests.support.webhooks import cloudevent, dumps

FLUSH = ["--webhook-flush-seconds", "0.3"]


def read(cluster: ControlPlane, namespace: str) -> Coverage | None:
    lease = get(cluster, "lease", namespace, webhook_coverage.lease_name("production"))
    return None if lease is None else webhook_coverage.from_lease(lease)


def test_coverage_starts_with_each_replica_and_moves_past_a_refused_delivery(
    cluster: ControlPlane, namespace: str, gateway_factory: GatewayFactory
) -> None:
    create_integration(cluster, namespace, "acme")
    set_status(cluster, namespace, "acme", {"realmId": "4620816365000000001"})
    keys = Keys()
    env = {"POD_NAMESPACE": namespace}  # this test's own release namespace: no other gateway writes here
    first = gateway_factory(keys, args=FLUSH, extra_env=env)
    wait_for("the first heartbeat", lambda: read(cluster, namespace) is not None)
    started = read(cluster, namespace)
    assert started is not None and started.fresh(started.renewed)

    # A verified delivery changes nothing about coverage.
    body = dumps([cloudevent("4620816365000000001", "1", "payment", "created")])
    assert first.post_webhook(body).status_code == 200
    # A refused one (a wrong signature: perhaps Intuit's, signed with a verifier token we lack) moves it.
    refused_at = datetime.now(started.since.tzinfo)
    assert first.post_webhook(body, signature="AAAA").status_code == 403
    wait_for("coverage past the refused delivery", lambda: _since(cluster, namespace) > started.since)
    after_refusal = _since(cluster, namespace)
    assert after_refusal >= refused_at.replace(microsecond=0)

    # A second replica starts: it cannot know what a crashed predecessor held, so coverage starts again.
    second = gateway_factory(keys, args=FLUSH, extra_env=env)
    wait_for("coverage from the new replica", lambda: _since(cluster, namespace) > after_refusal)
    assert second.stop() == 0 and first.stop() == 0


def _since(cluster: ControlPlane, namespace: str) -> datetime:
    coverage = read(cluster, namespace)
    assert coverage is not None
    return coverage.since
