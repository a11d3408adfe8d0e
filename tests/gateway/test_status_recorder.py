"""The coalesced status.webhook write against the real API server: optimistic concurrency never loses
an increment, deleted or re-created integrations drop their counts, and failures keep them pending."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest_asyncio
from kubernetes_asyncio import config

from qbo_operator.core import names
from qbo_operator.core.kube import Kube
from qbo_operator.gateway.metrics import GatewayMetrics
from qbo_operator.gateway.realm_index import RealmIndex
from qbo_operator.gateway.webhooks import StatusRecorder
from qbo_operator.harness.controlplane import ControlPlane, free_port
from tests.support.kube import create_integration, qbi, set_status, webhook_count

NOW = datetime.now(UTC).replace(microsecond=0)


async def kube_for(kubeconfig: Path) -> AsyncIterator[Kube]:
    api = await config.new_client_from_config(config_file=str(kubeconfig))
    try:
        yield Kube(api)
    finally:
        await api.close()


@pytest_asyncio.fixture(loop_scope="function")
async def kube(cluster: ControlPlane) -> AsyncIterator[Kube]:
    async for k in kube_for(cluster.kubeconfig):
        yield k


async def indexed(kube: Kube, namespace: str) -> RealmIndex:
    """A realm index filled by one list (the watch is not needed to test the writer)."""
    index = RealmIndex(kube, [namespace])
    listing = await kube.custom.list_namespaced_custom_object(names.GROUP, names.VERSION, namespace, names.PLURAL)
    for item in listing["items"]:
        index.state.apply(None, item)
    return index


def patches(metrics: GatewayMetrics, result: str) -> float:
    return metrics.webhook_status_patches.labels(result)._value.get()


async def test_a_concurrent_writer_forces_a_reread_and_no_count_is_lost(
    cluster: ControlPlane, namespace: str, kube: Kube
) -> None:
    create_integration(cluster, namespace, "acme")
    set_status(cluster, namespace, "acme", {"realmId": "1", "webhook": {"eventsSinceLastSync": 7}})
    index = await indexed(kube, namespace)
    cached = index.get(namespace, "acme")
    assert cached is not None and cached.status.webhook is not None
    # Another writer (the sync resetting, another replica adding) moves the object on.
    set_status(cluster, namespace, "acme", {"webhook": {"eventsSinceLastSync": 2}})

    metrics = GatewayMetrics()
    recorder = StatusRecorder(kube, index, metrics, flush_seconds=1)
    recorder.record(cached, 3, NOW)
    recorder.record(cached, 1, NOW)
    await recorder.flush()
    assert webhook_count(cluster, namespace, "acme") == 2 + 4
    assert (patches(metrics, "conflict"), patches(metrics, "ok")) == (1, 1)
    assert recorder.pending == {}
    last = qbi(cluster, namespace, "acme")["status"]["webhook"]["lastEventTime"]
    assert last == NOW.strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_deleted_and_recreated_integrations_drop_their_counts(
    cluster: ControlPlane, namespace: str, kube: Kube
) -> None:
    create_integration(cluster, namespace, "gone")
    create_integration(cluster, namespace, "reborn")
    index = await indexed(kube, namespace)
    gone, reborn = index.get(namespace, "gone"), index.get(namespace, "reborn")
    assert gone is not None and reborn is not None
    cluster.kubectl("delete", "quickbooksintegrations", "gone", "reborn", "-n", namespace, "--wait=true")
    create_integration(cluster, namespace, "reborn")  # same name, new uid

    metrics = GatewayMetrics()
    recorder = StatusRecorder(kube, index, metrics, flush_seconds=1)
    recorder.record(gone, 5, NOW)
    recorder.record(reborn, 5, NOW)
    await recorder.flush()
    assert recorder.pending == {}
    assert patches(metrics, "gone") == 2 and patches(metrics, "ok") == 0
    assert "webhook" not in (qbi(cluster, namespace, "reborn").get("status") or {})


async def test_counts_stay_pending_while_the_api_server_is_away(
    cluster: ControlPlane, namespace: str, kube: Kube, tmp_path: Path
) -> None:
    create_integration(cluster, namespace, "acme")
    index = await indexed(kube, namespace)
    integration = index.get(namespace, "acme")
    assert integration is not None
    unreachable = json.loads(cluster.kubeconfig.read_text())
    unreachable["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{free_port()}"
    (tmp_path / "away.kubeconfig").write_text(json.dumps(unreachable))

    metrics = GatewayMetrics()
    async for away in kube_for(tmp_path / "away.kubeconfig"):
        recorder = StatusRecorder(away, index, metrics, flush_seconds=1)
        recorder.record(integration, 2, NOW)
        await recorder.flush()
        recorder.record(integration, 1, NOW)  # more arrive while it is away
        await recorder.flush()
        assert patches(metrics, "failed") == 2
        pending = recorder.pending[(namespace, "acme")]
        assert pending.count == 3

        recorder.kube = kube  # back
        await recorder.flush()
    assert webhook_count(cluster, namespace, "acme") == 3
    assert patches(metrics, "ok") == 1


async def test_a_backlog_over_the_limit_writes_the_urgent_count_first_then_the_oldest(
    cluster: ControlPlane, namespace: str, kube: Kube
) -> None:
    """`max_writes` 1: the integration whose count turns a skipped night into a read goes first, however recent;
    the others follow one per flush, oldest first; every count arrives."""
    read = "2026-12-03T02:00:00Z"
    for name in ("old", "new", "urgent"):
        create_integration(cluster, namespace, name)
    set_status(
        cluster, namespace, "urgent", {"lastReadTime": read, "webhook": {"lastEventTime": "2026-12-02T02:00:00Z"}}
    )
    for name in ("old", "new"):  # a webhook since the read is in status already: another changes no night
        set_status(cluster, namespace, name, {"lastReadTime": read, "webhook": {"lastEventTime": read}})
    index = await indexed(kube, namespace)
    recorder = StatusRecorder(kube, index, GatewayMetrics(), flush_seconds=1, max_writes=1)
    for name, count in (("old", 2), ("new", 3), ("urgent", 4)):
        integration = index.get(namespace, name)
        assert integration is not None
        recorder.record(integration, count, NOW)

    written = []
    for _ in range(3):
        assert await recorder.flush()  # everything it took was written: the heartbeat may vouch
        index = await indexed(kube, namespace)
        recorder.index = index
        written.append({n for n in ("old", "new", "urgent") if webhook_count(cluster, namespace, n)})
    assert written == [{"urgent"}, {"urgent", "old"}, {"urgent", "old", "new"}]
    assert [webhook_count(cluster, namespace, n) for n in ("old", "new", "urgent")] == [2, 3, 4]
    assert recorder.pending == {}
