"""The files in examples/ work as the README says: the production values render and lint, and every
example resource is accepted by the real API server."""

from __future__ import annotations

import pytest
import yaml

from qbo_operator.core import models, names
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


@pytest.mark.parametrize(
    "example",
    ["quickbooksintegration-minimal.yaml", "quickbooksintegration-full.yaml", "quickbooksintegration-sftp.yaml"],
)
def test_example_resources_are_accepted(cluster: ControlPlane, example: str) -> None:
    cluster.kubectl("create", "namespace", "tenants", check=False)
    path = EXAMPLES / example
    result = cluster.kubectl("apply", "--dry-run=server", "--validate=strict", "-f", str(path))
    documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    assert result.stdout.count("created (server dry run)") == len(documents)


def test_sftp_example_names_its_secret_with_the_keys_the_sync_reads() -> None:
    secret, integration = yaml.safe_load_all((EXAMPLES / "quickbooksintegration-sftp.yaml").read_text())
    sftp = models.IntegrationSpec.model_validate(integration["spec"]).delivery.sftp
    assert sftp is not None and sftp.secret_name == secret["metadata"]["name"]
    assert secret["metadata"]["namespace"] == integration["metadata"]["namespace"]
    assert secret["type"] == "kubernetes.io/ssh-auth"
    assert set(secret["stringData"]) == {names.SFTP_PRIVATE_KEY, names.SFTP_KNOWN_HOSTS}
    assert all(value.startswith("<") for value in secret["stringData"].values())  # placeholders, no key material
