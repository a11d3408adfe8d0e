"""`make cluster` / `make cluster-down`, as the README tells developers to use them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from qbo_operator.harness.controlplane import pid_alive
from tests.support.paths import ROOT


def test_make_cluster_starts_a_usable_control_plane_and_cluster_down_stops_it(tmp_path: Path) -> None:
    directory = tmp_path / "cluster"
    env = {**os.environ, "CLUSTER_DIR": str(directory)}
    up = subprocess.run(["make", "-s", "cluster"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stderr
    assert f"export KUBECONFIG={directory / 'kubeconfig'}" in up.stdout
    serve_pid = int((directory / "serve.pid").read_text())
    kubectl = Path(os.environ["KUBEBUILDER_ASSETS"]) / "kubectl"
    crd = subprocess.run(
        [str(kubectl), f"--kubeconfig={directory / 'kubeconfig'}", "get", "crd", "-o", "name"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "quickbooksintegrations.integrations.greencheckverified.com" in crd.stdout
    again = subprocess.run(["make", "-s", "cluster"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert "already running" in again.stdout
    down = subprocess.run(["make", "-s", "cluster-down"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert down.returncode == 0 and "stopped" in down.stdout
    assert not pid_alive(serve_pid)
    pids = [int(p.read_text()) for p in directory.glob("*.pid")]
    assert not any(pid_alive(pid) for pid in pids)
