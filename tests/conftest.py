"""Session-wide fixtures: one real control plane per test session, one namespace per test, the test
kubelet, and the reliability report and secret-hygiene checks (tests/support/ledger.py)."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from qbo_operator.harness.controlplane import ControlPlane, ControlPlaneError, ExternalCluster
from tests.support import ledger
from tests.support.kubelet import Kubelet
from tests.support.paths import ARTIFACTS, ROOT


@pytest.fixture(scope="session")
def cluster() -> Iterator[ControlPlane]:
    """etcd + kube-apiserver + kube-controller-manager on loopback, with the CRDs installed; or, when
    QBO_E2E_KUBECONFIG is set, that cluster (tests needing local-only powers then skip, saying why)."""
    external = os.environ.get("QBO_E2E_KUBECONFIG")
    if external:
        ext = ExternalCluster(Path(external))
        ext.apply_crds(*sorted((ROOT / "crds").glob("*.yaml")))
        yield ext  # type: ignore[misc]
        ext.stop()
        return
    try:
        cp = ControlPlane()
        cp.start()
    except ControlPlaneError as exc:
        pytest.fail(f"could not start the control plane: {exc}")
    try:
        crds = sorted((ROOT / "crds").glob("*.yaml"))
        if crds:
            cp.apply_crds(*crds)
        # The release namespace the processes default to (POD_NAMESPACE): the realm claims live there.
        cp.kubectl("create", "namespace", "qbo-system", check=False)
        yield cp
    finally:
        if os.environ.get("QBO_KEEP_CLUSTER_LOGS"):
            ARTIFACTS.mkdir(exist_ok=True)
            for log in cp.dir.glob("*.log"):
                (ARTIFACTS / log.name).write_bytes(log.read_bytes())
        cp.stop()


@pytest.fixture
def namespace(cluster: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    base = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    name = f"{base}-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def kubelet(cluster: ControlPlane, tmp_path: Path) -> Kubelet:
    """Runs Jobs' Pods here as the cluster's admin, their output in tmp_path."""
    if not cluster.local:
        pytest.skip("a real cluster runs Pods with its own kubelet; the test kubelet is for the local control plane")
    return Kubelet(cluster, tmp_path / "pods")


@pytest.fixture
def local_cluster(cluster: ControlPlane) -> ControlPlane:
    """The local control plane, for tests that read its audit log or restart its API server."""
    if not cluster.local:
        pytest.skip("needs the local control plane (audit log / API server restarts), not QBO_E2E_KUBECONFIG")
    return cluster


# --- what the reliability and security suites tried, and the secret-hygiene checks -----------------

_reported: list[bool] = []


@pytest.fixture
def report(request: pytest.FixtureRequest) -> ledger.Report:
    """Record what this test tried and what held: `report.row(area, check, tried=..., held=..., **figures)`."""
    return ledger.Report(request.node.nodeid)


@pytest.fixture
def hygiene_snapshot(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test that ran a stack (it registered secrets or output) on the control plane: the cluster's
    Events, every CR status and the token Secrets' values into the ledger."""
    before = ledger.SECRETS.changes
    yield
    if ledger.SECRETS.changes != before and "cluster" in request.fixturenames:
        cluster = request.getfixturevalue("cluster")
        if getattr(cluster, "local", False):
            ledger.snapshot_cluster(cluster, request.node.nodeid)


@pytest.fixture(scope="session")
def secret_hygiene() -> Iterator[None]:
    """The session-level check: no secret value a stack used appears in anything the stacks produced.
    tests/reliability and tests/security take part (their conftest.py); the other suites register nothing."""
    yield
    if _reported or ledger.SECRETS.scanned:
        return  # tests/security/test_secret_hygiene.py ran the scan (and failed there, if it found a leak)
    _reported.append(True)
    hits = ledger.SECRETS.final_scan()
    if hits:
        where = "\n".join(f"  {h.label} in {h.source}" for h in hits[:40])
        pytest.fail(f"{len(hits)} secret leaks (values never printed):\n{where}", pytrace=False)
