"""What Flux and kstatus make of a QuickbooksIntegration, judged by the real library: tools/kstatus runs
sigs.k8s.io/cli-utils/pkg/kstatus/status (what Flux, kpt and cli-utils pollers use) and Flux's
healthCheckExprs evaluation over the object as the live API server serves it, in every phase and
in-flight state, with the status the operator computes for that phase. docs/operator.md prints this table."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from qbo_operator.harness.controlplane import ControlPlane
from tests.support import phases
from tests.support.chart import CHART
from tests.support.paths import ROOT

pytestmark = pytest.mark.e2e

FLUX = yaml.safe_load((CHART / "files" / "flux-healthcheck.yaml").read_text())[0]
READY = "Resource is Ready"

# row -> (kstatus status, kstatus message, Flux status with the healthCheckExprs)
TABLE: dict[str, tuple[str, str, str]] = {
    "just created": ("Current", "Resource is current", "Unknown"),
    "spec edited, not yet reconciled": (
        "InProgress",
        "QuickbooksIntegration generation is 2, but latest observed generation is 1",
        "InProgress",
    ),
    "pending": (
        "InProgress",
        "Waiting for a person at the company to open the Connect link in status.authorizationURL and grant "
        "access at Intuit.",
        "Current",
    ),
    "pending, suspended": (
        "InProgress",
        "Waiting for a person at the company to open the Connect link in status.authorizationURL and grant "
        "access at Intuit.",
        "Current",
    ),
    "connected, never synced": ("Current", READY, "Current"),
    "connected, synced": ("Current", READY, "Current"),
    "connected, last sync failed": ("InProgress", "QuickBooks Online did not answer.", "Current"),
    "connected, suspended": ("Current", READY, "Current"),
    "disconnected, refresh token expired": (
        "InProgress",
        "The refresh token expired at 2026-11-25T11:59:00Z and Intuit no longer accepts it. Send the Connect "
        "link in status.authorizationURL to a person at the company to connect again.",
        "Current",
    ),
    "disconnected, secret deleted": (
        "InProgress",
        "The token Secret acme-qbo-tokens is missing. Send the Connect link in status.authorizationURL to a "
        "person at the company to connect again.",
        "Current",
    ),
    "error, environment changed": (
        "Failed",
        "spec.environment changed from production to sandbox after a QuickBooks company was connected in "
        "production. Set spec.environment back to production, or create a new QuickbooksIntegration for sandbox.",
        "Failed",
    ),
    "error, duplicate realm": (
        "Failed",
        "QuickBooks company 9130355357483456 already belongs to QuickbooksIntegration tenants/first; one company "
        "can be connected to one integration only. Delete this integration or its token Secret acme-qbo-tokens, "
        "or connect a different company.",
        "Failed",
    ),
}


@pytest.fixture(scope="session")
def kstatus() -> Path:
    build = subprocess.run(
        ["bash", str(ROOT / "tools" / "kstatus" / "build.sh")], capture_output=True, text=True, check=False
    )
    if build.returncode != 0:
        pytest.fail(f"tools/kstatus/build.sh failed: {build.stderr[-2000:]}")
    return Path(build.stdout.strip())


def judge(kstatus: Path, obj: dict[str, Any]) -> dict[str, Any]:
    args = ["--current", FLUX["current"], "--failed", FLUX["failed"], "--in-progress", FLUX["inProgress"]]
    result = subprocess.run(
        [str(kstatus), *args], input=json.dumps(obj), capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    out: dict[str, Any] = json.loads(result.stdout)
    return out


def served(cluster: ControlPlane, namespace: str, row: str) -> dict[str, Any]:
    """Create the object, write the operator's status for `row` through the status subresource (as the
    operator's reconcile does), and read the object back from the API server."""
    edited = row == "spec edited, not yet reconciled"
    state = None if row == "just created" else phases.STATES["connected, synced" if edited else row]()
    obj = phases.integration("acme", namespace, state.spec if state is not None else {})
    del obj["metadata"]["generation"]  # the API server's to set
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(obj))
    if state is not None:
        generation = cluster.kubectl_json("get", "qbi", "acme", "-n", namespace)["metadata"]["generation"]
        cluster.patch_status("qbi", "acme", namespace, phases.status_of(state, generation))
    if edited:
        edit = '{"spec":{"schedule":"0 3 * * *"}}'
        cluster.kubectl("patch", "qbi", "acme", "-n", namespace, "--type=merge", "-p", edit)
    result: dict[str, Any] = cluster.kubectl_json("get", "qbi", "acme", "-n", namespace)
    return result


def test_the_table_covers_every_phase_row() -> None:
    assert set(phases.STATES) <= set(TABLE)


@pytest.mark.parametrize("row", TABLE)
def test_kstatus_and_flux_from_the_live_api_server(
    cluster: ControlPlane, namespace: str, kstatus: Path, row: str
) -> None:
    obj = served(cluster, namespace, row)
    verdict = judge(kstatus, obj)
    assert (verdict["status"], verdict["message"], verdict["flux"]) == TABLE[row]
    for condition in obj.get("status", {}).get("conditions", []):
        assert "observedGeneration" in condition, condition
