"""The chart's preflight (templates/preflight.yaml): values that each fit the schema but contradict one
another fail `helm template` and `helm install` with a message that says what to change."""

from __future__ import annotations

import pytest

from qbo_operator.harness.controlplane import ControlPlane
from tests.support.chart import CHART, Helm

MONITORING_PREFLIGHT = (
    "qbo-operator preflight: prometheusRule.enabled is true but serviceMonitor.enabled is false. The alerts "
    'QuickbooksOperatorDown and QuickbooksGatewayDown match up{job="qbo-operator"} and up{job="qbo-gateway"}, '
    "series that only the ServiceMonitors produce, so they could never fire: set serviceMonitor.enabled=true, "
    "or prometheusRule.enabled=false."
)


def https_preflight(key: str, url: str) -> str:
    return (
        f'qbo-operator preflight: config.{key} is "{url}", but Intuit\'s production endpoints are in use (no '
        "config.qboDiscoveryUrl, qboAuthUrl or qboTokenUrl override) and Intuit accepts only https redirect URIs "
        "and webhook URLs outside localhost: use an https URL (e.g. https://qbo.example.com behind gateway.ingress "
        "with TLS)."
    )


REFUSED: list[tuple[str, dict[str, str | bool], str]] = [
    ("alerts without their series", {"prometheusRule.enabled": True}, MONITORING_PREFLIGHT),
    (
        "alerts without their series, job names followed",
        {"prometheusRule.enabled": True, "serviceMonitor.jobNames.operator": "ops"},
        MONITORING_PREFLIGHT.replace('job="qbo-operator"', 'job="ops"'),
    ),
    (
        "http gateway with Intuit's endpoints",
        {"config.gatewayUrl": "http://qbo.example.com"},
        https_preflight("gatewayUrl", "http://qbo.example.com"),
    ),
    (
        "http redirect URI with Intuit's endpoints",
        {"config.gatewayUrl": "https://qbo.example.com", "config.redirectUri": "http://qbo.example.com/cb"},
        https_preflight("redirectUri", "http://qbo.example.com/cb"),
    ),
    (
        "http on a look-alike of localhost",
        {"config.gatewayUrl": "http://localhost.example.com:8000"},
        https_preflight("gatewayUrl", "http://localhost.example.com:8000"),
    ),
    (
        "only the API overridden is still Intuit's OAuth",
        {"config.gatewayUrl": "http://qbo.example.com", "config.qboApiUrl": "http://127.0.0.1:9001"},
        https_preflight("gatewayUrl", "http://qbo.example.com"),
    ),
]

ACCEPTED: list[tuple[str, dict[str, str | bool]]] = [
    ("defaults", {}),
    ("alerts with their series", {"prometheusRule.enabled": True, "serviceMonitor.enabled": True}),
    ("series without alerts", {"serviceMonitor.enabled": True}),
    ("https gateway", {"config.gatewayUrl": "https://qbo.example.com"}),
    ("http on localhost (Intuit's development keys allow it)", {"config.gatewayUrl": "http://localhost:8000"}),
    ("http on 127.0.0.1", {"config.gatewayUrl": "http://127.0.0.1:8000"}),
    (
        "http against a sandbox (the endpoints are overridden)",
        {"config.gatewayUrl": "http://qbo.test:8000", "config.qboAuthUrl": "http://127.0.0.1:9001/connect/oauth2"},
    ),
    (
        "http against a sandbox's discovery document",
        {"config.gatewayUrl": "http://qbo.test", "config.qboDiscoveryUrl": "http://127.0.0.1:9001/.well-known/x"},
    ),
]


@pytest.mark.parametrize(("case", "sets", "message"), REFUSED, ids=[r[0] for r in REFUSED])
def test_contradictory_values_are_refused(helm: Helm, case: str, sets: dict[str, str | bool], message: str) -> None:
    error = helm.template_error(sets=sets)  # type: ignore[arg-type]
    assert message in error


@pytest.mark.parametrize(("case", "sets"), ACCEPTED, ids=[a[0] for a in ACCEPTED])
def test_consistent_values_pass(helm: Helm, case: str, sets: dict[str, str | bool]) -> None:
    assert helm.template(sets=sets)  # type: ignore[arg-type]


@pytest.mark.e2e
def test_helm_install_fails_with_the_preflight_message(cluster: ControlPlane, namespace: str) -> None:
    """Through the real `helm install` against the API server: nothing is installed."""
    result = cluster.helm(
        "install", "preflight", str(CHART), "--namespace", namespace, "--set", "prometheusRule.enabled=true",
        check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert MONITORING_PREFLIGHT in result.stderr
    assert cluster.helm("list", "--namespace", namespace, "-q").stdout.strip() == ""
