"""Fifty integrations: the operator is killed half-way through its first pass, converges after the restart
with no duplicate Job, and then, once settled, makes no API write at all for a minute (counted both by
the API server's audit log and by the operator itself)."""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime

from qbo_operator.core import names
from qbo_operator.harness.controlplane import ControlPlane
from qbo_operator.reconciler import manifests
from tests.support.kube import apply, audit_writes, manual_jobs, sync_cronjob
from tests.support.objects import fake_tokens, integration, token_secret
from tests.support.operator import Account, StartOperator
from tests.support.wait import wait_for

COUNT = 50
IDLE_SECONDS = 60


def population(cluster: ControlPlane, namespace: str, secret_values: list[str]) -> tuple[list[str], set[str], set[str]]:
    """COUNT integrations, every other one connected (a token Secret), ten of those with a sync request.
    Returns (their names, the connected ones, the requested ones)."""
    names_ = [f"co-{i:02d}" for i in range(COUNT)]
    connected = set(names_[::2])
    requested = set(sorted(connected)[:10])
    objects = []
    for name in names_:
        obj = integration(namespace, name)
        if name in requested:
            obj["metadata"]["annotations"] = {names.SYNC_REQUESTED_ANNOTATION: f"req-{name}"}
        objects.append(obj)
    for i, name in enumerate(sorted(connected)):
        tokens = fake_tokens(f"81000000000{i:05d}")
        secret_values.extend([tokens.access_token, tokens.refresh_token])
        objects.append(token_secret(namespace, name, tokens))
    apply(cluster, *objects)
    return names_, connected, requested


def test_restart_converges_without_duplicates_and_idles_without_writes(
    cluster: ControlPlane,
    namespace: str,
    start_operator: StartOperator,
    operator_account: Account,
    secret_values: list[str],
) -> None:
    names_, connected, requested = population(cluster, namespace, secret_values)

    def done() -> list[str]:
        items = cluster.kubectl_json("get", names.PLURAL, "-n", namespace)["items"]
        return [
            o["metadata"]["name"]
            for o in items
            if (o.get("status") or {}).get("observedGeneration") == o["metadata"]["generation"]
            and o["status"].get("phase") == ("Connected" if o["metadata"]["name"] in connected else "Pending")
            and (o["metadata"]["name"] not in requested or o["status"].get("lastHandledSyncRequest"))
        ]

    started = time.monotonic()
    op = start_operator(f"--namespace={namespace}")
    wait_for("the first integrations handled", lambda: len(done()) >= 3, timeout=60, interval=0.05)
    op.stop(signal.SIGKILL)  # a crash half-way
    assert len(done()) < COUNT, "the operator finished before it could be interrupted; the test proves nothing"
    op.start(*op.args)
    wait_for(f"all {COUNT} integrations settled", lambda: len(done()) == COUNT, timeout=180)
    settle_seconds = time.monotonic() - started

    manual = sorted(j["metadata"]["name"] for j in manual_jobs(cluster, namespace))
    expected = sorted(manifests.manual_job_name(names.sync_workload_name(namespace, n), f"req-{n}") for n in requested)
    assert manual == expected  # one Job per request, none twice
    for name in names_:
        cron = sync_cronjob(cluster, namespace, name)
        assert cron is not None and cron["spec"]["suspend"] is (name not in connected)

    # Settled: restart once more and listen for a minute. Nothing may be written, not even on start-up.
    since = datetime.now(UTC)
    op.restart()
    time.sleep(IDLE_SECONDS)
    writes = audit_writes(cluster, operator_account.username, since)
    assert writes == [], writes
    assert op.writes() == 0
    reconciles = sum(op.samples("qbo_reconcile_total", result="success"))
    assert reconciles >= COUNT  # it did look at every integration after the restart
    assert sum(op.samples("qbo_reconcile_total", result="error")) == 0
    assert sum(op.samples("qbo_integrations", phase="Connected")) == len(connected)
    assert sum(op.samples("qbo_integrations", phase="Pending")) == COUNT - len(connected)
    print(
        f"\n[measure] {COUNT} integrations settled in {settle_seconds:.1f}s including a kill -9 and restart; "
        f"{len(writes)} writes and {reconciles:.0f} reconciles in {IDLE_SECONDS}s idle after a restart"
    )
