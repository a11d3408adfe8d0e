"""/metrics carries no realm ids unless enabled (issue 17, findings 8 and 15 of the review): the operator's
/metrics is unauthenticated, and a realm id is what a forged Connect callback names. `qbo-operator run
--metrics-realm-ids` (chart value operator.metricsRealmIds, default off) publishes them; the Disconnected
alert reads well either way."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from qbo_operator.harness.controlplane import ControlPlaneError, find_assets
from qbo_operator.reconciler.metrics import OperatorMetrics
from qbo_operator.reconciler.views import snapshot
from tests.support.chart import CHART, Helm, container, one
from tests.support.objects import COMPANY_IDS

REALM = "9130355357483456"


def body(name: str, phase: str, realm: str | None) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if realm:
        status["realmId"] = realm
    return {
        "metadata": {"name": name, "namespace": "tenants", "uid": f"uid-{name}"},
        "spec": {"companyId": COMPANY_IDS[0]},
        "status": status,
    }


@pytest.mark.parametrize(("realm_ids", "published"), [(False, False), (True, True)])
def test_the_operator_metrics_carry_realm_ids_only_when_enabled(realm_ids: bool, published: bool) -> None:
    metrics = OperatorMetrics(lambda: [snapshot(body("acme", "Connected", REALM))], realm_ids=realm_ids)
    text = metrics.exposition().decode()
    assert (
        f'name="acme",company_id="{COMPANY_IDS[0]}",realm_id="{REALM if published else ""}",phase="Connected"' in text
    )
    assert (REALM in text) is published


def test_the_default_publishes_no_realm_id() -> None:
    text = OperatorMetrics(lambda: [snapshot(body("acme", "Connected", REALM))]).exposition().decode()
    assert REALM not in text


@pytest.fixture(scope="module")
def helm() -> Helm:
    try:
        return Helm(find_assets() / "helm")
    except (ControlPlaneError, subprocess.CalledProcessError) as exc:
        pytest.fail(f"no helm binary: {exc} (run `make tools`)")


@pytest.mark.parametrize(("sets", "flag"), [({}, False), ({"operator.metricsRealmIds": True}, True)])
def test_the_chart_value_sets_the_flag(helm: Helm, sets: dict[str, Any], flag: bool) -> None:
    objs = helm.template("--set", "config.gatewayUrl=https://qbo.example.com", sets=sets)
    args = container(one(objs, "Deployment", "-operator"))["args"]
    assert ("--metrics-realm-ids" in args) is flag


DISCONNECTED_TEST = """
rule_files:
  - {alerts}
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'qbo_integration_info{{namespace="tenants",name="acme",company_id="c-1",realm_id="",phase="Disconnected"}}'
        values: '1x30'
    alert_rule_test:
      - eval_time: 20m
        alertname: QuickbooksIntegrationDisconnected
        exp_alerts:
          - exp_labels:
              severity: warning
              namespace: tenants
              name: acme
              company_id: c-1
              phase: Disconnected
            exp_annotations:
              summary: "QuickBooks integration tenants/acme is disconnected"
              description: "QuickbooksIntegration tenants/acme (company c-1) lost its QuickBooks connection (tokens revoked, expired, missing or unusable). No payments are synced until a person at the company connects again with the link in status.authorizationURL. The Connected condition's reason says why."
              runbook_url: "https://github.com/greencheck/qbo-operator/blob/main/docs/runbooks/QuickbooksIntegrationDisconnected.md"
"""  # noqa: E501


def test_the_disconnected_alert_reads_well_without_a_realm_id(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: `make system-packages` installs it (Debian package prometheus)")
    test = tmp_path / "disconnected_test.yaml"
    test.write_text(DISCONNECTED_TEST.format(alerts=CHART / "files" / "alerts.yaml"))
    result = subprocess.run([promtool, "test", "rules", str(test)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
