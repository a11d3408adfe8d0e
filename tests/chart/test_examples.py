"""The files in examples/ work as the README says: the production values render and lint, and both
example resources are accepted by the real API server."""

from __future__ import annotations

import pytest

from qbo_operator.harness.controlplane import ControlPlane
from tests.support.paths import ROOT

EXAMPLES = ROOT / "examples"


def test_production_values_lint_and_render(cluster: ControlPlane) -> None:
    values = str(EXAMPLES / "values-production.yaml")
    chart = str(ROOT / "charts" / "qbo-operator")
    cluster.helm("lint", "--strict", chart, "-f", values)
    # a cluster with the Prometheus Operator (renderMode skipIfMissing renders the monitors only there)
    rendered = cluster.helm(
        "template",
        "qbo-operator",
        chart,
        "-n",
        "qbo-system",
        "-f",
        values,
        "--api-versions",
        "monitoring.coreos.com/v1",
    ).stdout
    for kind in ("Ingress", "PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor", "PrometheusRule"):
        assert f"\nkind: {kind}\n" in rendered, kind


@pytest.mark.parametrize("example", ["quickbooksintegration-minimal.yaml", "quickbooksintegration-full.yaml"])
def test_example_resources_are_accepted(cluster: ControlPlane, example: str) -> None:
    cluster.kubectl("create", "namespace", "tenants", check=False)
    result = cluster.kubectl("apply", "--dry-run=server", "--validate=strict", "-f", str(EXAMPLES / example))
    assert "created (server dry run)" in result.stdout
