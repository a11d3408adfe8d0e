"""Session-wide fixtures: one real control plane per test session, one namespace per test."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from qbo_operator.harness.controlplane import ControlPlane, ControlPlaneError, ExternalCluster, PodRun, run_job_pods

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"


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


class Kubelet:
    """Plays the kubelet for Jobs: runs the Pod's command here and reports its phase."""

    def __init__(self, cluster: ControlPlane) -> None:
        self.cluster = cluster

    def run(self, namespace: str, job: str, env: dict[str, str] | None = None) -> PodRun:
        venv_bin = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin"
        command_map = {"qbo-operator": str(venv_bin / "qbo-operator")}
        return run_job_pods(self.cluster, namespace, job, env=env, command_map=command_map)


@pytest.fixture
def kubelet(cluster: ControlPlane) -> Kubelet:
    if not cluster.local:
        pytest.skip("a real cluster runs Pods with its own kubelet; the test kubelet is for the local control plane")
    return Kubelet(cluster)


@pytest.fixture
def local_cluster(cluster: ControlPlane) -> ControlPlane:
    """The local control plane, for tests that read its audit log or restart its API server."""
    if not cluster.local:
        pytest.skip("needs the local control plane (audit log / API server restarts), not QBO_E2E_KUBECONFIG")
    return cluster
