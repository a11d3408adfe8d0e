"""The control plane itself going away: kube-apiserver SIGKILLed during a reconcile and during a sync, and
started again on the same port a few seconds later. The operator, the gateway and the sync must recover
on their own: no process restarted by hand, no object touched by hand. What needed the API server while
it was down happens once it is back (the operator's reconcile, the gateway's webhook counts, the Job
controller's retry of a sync that could not record its progress), and nothing is lost or doubled."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from qbo_operator.core import names
from qbo_operator.core.models import parse_rfc3339
from qbo_operator.harness.controlplane import ControlPlane, wait_for_pods
from tests.support.faults import PAYMENT_SIDE, audit, payments_projection
from tests.support.kube import HOME, merge_patch
from tests.support.kubelet import Kubelet
from tests.support.ledger import Report
from tests.support.objects import COMPANY_IDS
from tests.support.stack import Product, product
from tests.support.wait import STACK_TIMEOUT, wait_for

pytestmark = pytest.mark.e2e

NAMESPACE = "cp-restart"
OUTAGE_SECONDS = 4.0


@pytest.fixture(scope="module")
def connected(cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Product, Kubelet]]:
    if not cluster.local:
        pytest.skip("restarts the API server: needs the local control plane")
    workdir = tmp_path_factory.mktemp("cp-restart")
    with product(cluster, workdir, companies=1, history=20, seed=13) as p:
        p.create_integration(NAMESPACE, "acme", COMPANY_IDS[0])
        p.connect(NAMESPACE, "acme", p.realms[0])
        p.record_secrets(NAMESPACE, "acme")
        yield p, p.kubelet
        p.record_secrets(NAMESPACE, "acme")


def outage(cp: ControlPlane) -> None:
    cp.kill_apiserver()
    time.sleep(OUTAGE_SECONDS)
    cp.start_apiserver()


def alive(p: Product) -> None:
    """Both long-running components are the same processes as before, healthy again."""
    for name in ("operator", "gateway"):
        proc = p.stack.processes[name]
        assert proc.alive(), f"the {name} exited during the outage:\n{proc.tail()}"
    wait_for(
        "operator /healthz",
        lambda: _ok(f"http://127.0.0.1:{p.stack.operator_health_port}/healthz"),
        timeout=STACK_TIMEOUT,
        interval=0.25,
    )
    wait_for("gateway /readyz", lambda: _ok(f"{p.stack.gateway_url}/readyz"), timeout=STACK_TIMEOUT, interval=0.25)


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def test_apiserver_restart_during_a_reconcile(connected: tuple[Product, Kubelet], report: Report) -> None:
    p, _ = connected
    cp = p.cp
    pids = {n: p.stack.processes[n].popen.pid for n in ("operator", "gateway")}
    # Changes the operator must act on, then the API server dies under its reconcile ...
    p.create_integration(NAMESPACE, "newcomer", COMPANY_IDS[1])
    merge_patch(cp, names.PLURAL, NAMESPACE, "acme", {"spec": {"schedule": "7 3 * * *"}})
    time.sleep(0.3)
    cp.kill_apiserver()
    # ... and while it is down, payments are made: Intuit's webhooks still reach the gateway, which answers them.
    p.qbo("POST", f"/companies/{p.realms[0]}/payments", json={"n": 5, "seed": 99})
    time.sleep(OUTAGE_SECONDS)
    cp.start_apiserver()

    alive(p)
    assert {n: p.stack.processes[n].popen.pid for n in pids} == pids  # nobody restarted anything
    acme = wait_for("acme reconciled at its new generation", lambda: _observed(p, "acme"), timeout=180, interval=0.25)
    cron = cp.kubectl_json("get", "cronjob", names.sync_workload_name(NAMESPACE, "acme"), "-n", HOME)
    assert cron["spec"]["schedule"] == "7 3 * * *"
    assert acme["status"]["phase"] == "Connected"
    newcomer = wait_for("newcomer Pending with its link", lambda: _observed(p, "newcomer"), timeout=180, interval=0.25)
    assert newcomer["status"]["phase"] == "Pending" and newcomer["status"]["authorizationURL"]
    wait_for(
        "the newcomer's CronJob",
        lambda: (
            cp.kubectl(
                "get", "cronjob", names.sync_workload_name(NAMESPACE, "newcomer"), "-n", HOME, check=False
            ).returncode
            == 0
        ),
        timeout=STACK_TIMEOUT,
        interval=0.25,
    )
    webhook = wait_for(
        "the outage's webhooks counted in status",
        lambda: (p.integration(NAMESPACE, "acme")["status"].get("webhook") or {}).get("eventsSinceLastSync"),
        timeout=120,
        interval=0.25,
    )
    assert webhook >= 5
    report.row("control plane", "kube-apiserver killed during a reconcile (and webhooks)", tried=1, held=1)


def _observed(p: Product, name: str) -> dict[str, Any] | None:
    obj = p.integration(NAMESPACE, name)
    status = obj.get("status") or {}
    return obj if status.get("observedGeneration") == obj["metadata"]["generation"] and status.get("phase") else None


def test_apiserver_restart_during_a_sync(connected: tuple[Product, Kubelet], report: Report) -> None:
    p, kubelet = connected
    cp = p.cp
    realm = p.realms[0]
    p.qbo("POST", f"/companies/{realm}/payments", json={"n": 150, "seed": 7})
    httpx.post(
        f"{p.stack.greencheck_url}/_sandbox/faults",
        json={"kind": "latency", "path": "invoice-payments", "seconds": 0.5},
        timeout=10,
    ).raise_for_status()
    before = p.greencheck_state()["requests"].get("invoice_payments", 0)
    job = p.request_sync(NAMESPACE, "acme", "during-outage")
    pod = kubelet.start(HOME, job)
    wait_for(
        "two batches delivered",
        lambda: p.greencheck_state()["requests"].get("invoice_payments", 0) >= before + 2,
        timeout=120,
        interval=0.05,
    )
    outage(cp)
    rc = kubelet.finish(pod)
    log = pod.log.read_text()
    assert "Traceback" not in log, f"the sync crashed instead of saying why it stopped:\n{log[-3000:]}"
    attempts = 1
    if rc != 0:
        errors = [line for line in log.splitlines() if line.startswith("qbo-operator sync: error:")]
        assert len(errors) == 1, log[-2000:]  # one line saying why it stopped
        # No manual action: the Job controller starts the Pod again, and this time it completes.
        assert wait_for_pods(cp, HOME, job, timeout=180), "the Job controller started no retry Pod"
        run = kubelet.run(HOME, job)
        rc, log = run.exit_code, run.stdout + run.stderr
        attempts += 1
        assert rc == 0, log[-3000:]
    httpx.delete(f"{p.stack.greencheck_url}/_sandbox/faults", timeout=10)
    alive(p)
    cp.kubectl("wait", "--for=condition=Complete", f"job/{job}", "-n", HOME, "--timeout=120s")
    status = p.integration(NAMESPACE, "acme")["status"]
    connected_at = parse_rfc3339(status["connectedAt"])
    expected = payments_projection(realm, p.payments(realm), connected_at)
    books = audit({r["external_id"]: r for r in p.greencheck_store(COMPANY_IDS[0])}, expected, PAYMENT_SIDE)
    assert books.mismatches == 0, books
    assert status["lastSync"]["result"] == "Succeeded" and status["phase"] == "Connected"
    report.row(
        "control plane", f"kube-apiserver killed during a sync (recovered in {attempts} Job attempts)", tried=1, held=1
    )
