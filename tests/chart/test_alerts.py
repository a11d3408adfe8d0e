"""The alerts of docs/design.md §7 (charts/qbo-operator/files/alerts.yaml, the one copy the chart embeds):
promtool accepts them, every alert has firing and quiet test cases, a runbook, and uses only the metric
names of docs/design.md §7. The Grafana dashboard is held to the same metric names."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.chart import CHART
from tests.support.paths import ROOT

ALERTS = CHART / "files" / "alerts.yaml"
DASHBOARD = CHART / "files" / "dashboard.json"
TESTS = [Path(__file__).parent / "alerts_test.yaml", Path(__file__).parent / "alerts_long_test.yaml"]
RUNBOOKS = ROOT / "docs" / "runbooks"
RUNBOOK_BASE = "https://github.com/greencheck/qbo-operator/blob/main/docs/runbooks/"

REQUIRED_ALERTS = {
    "QuickbooksSyncFailed",
    "QuickbooksSyncStale",
    "QuickbooksIntegrationDisconnected",
    "QuickbooksIntegrationPendingTooLong",
    "QuickbooksRefreshTokenExpiringSoon",
    "QuickbooksIntegrationSuspendedTooLong",
    "QuickbooksWebhookSignatureFailures",
    "QuickbooksOperatorDown",
    "QuickbooksGatewayDown",
    "QuickbooksAppCredentialsInvalid",
    "QuickbooksReadBudget",
}
# docs/design.md §7, exactly; histograms also as their _bucket/_sum/_count series.
METRICS = {
    "qbo_integrations",
    "qbo_integration_info",
    "qbo_integration_connected",
    "qbo_integration_suspended",
    "qbo_integration_last_sync_success",
    "qbo_integration_last_successful_sync_timestamp_seconds",
    "qbo_integration_last_sync_payments",
    "qbo_integration_last_sync_rejected",
    "qbo_integration_rejected_payments",
    "qbo_integration_refresh_token_expiry_timestamp_seconds",
    "qbo_reconcile_total",
    "qbo_webhook_requests_total",
    "qbo_webhook_events_total",
    "qbo_oauth_callbacks_total",
    "qbo_app_credentials_rejected",
    "qbo_integration_metered_reads",
    "qbo_app_metered_reads",
    "qbo_app_read_budget",
}
HISTOGRAMS = {"qbo_reconcile_duration_seconds", "qbo_http_request_duration_seconds"}
KNOWN = METRICS | {f"{h}{s}" for h in HISTOGRAMS for s in ("_bucket", "_sum", "_count")}


@pytest.fixture(scope="module")
def rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(ALERTS.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def test_promtool_check_rules(promtool: str) -> None:
    result = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_test_rules(promtool: str) -> None:
    result = subprocess.run(
        [promtool, "test", "rules", *map(str, TESTS)], capture_output=True, text=True, check=False, cwd=TESTS[0].parent
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(TESTS)


def test_the_design_alerts_are_all_there(rules: list[dict[str, Any]]) -> None:
    alerts = [r["alert"] for r in rules]
    assert len(alerts) == len(set(alerts))
    assert set(alerts) >= REQUIRED_ALERTS


def test_every_alert_has_severity_summary_description_and_runbook(rules: list[dict[str, Any]]) -> None:
    for rule in rules:
        assert rule["labels"]["severity"] in ("info", "warning", "critical"), rule["alert"]
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url"}, rule["alert"]
        assert annotations["runbook_url"] == f"{RUNBOOK_BASE}{rule['alert']}.md"
        assert rule.get("for"), f"{rule['alert']} fires on a single evaluation"


def test_every_alert_has_a_runbook_and_every_runbook_an_alert(rules: list[dict[str, Any]]) -> None:
    alerts = {r["alert"] for r in rules}
    pages = {p.stem for p in RUNBOOKS.glob("*.md")} - {"README"}
    assert pages == alerts
    index = (RUNBOOKS / "README.md").read_text()
    for alert in alerts:
        text = (RUNBOOKS / f"{alert}.md").read_text()
        assert text.startswith(f"# {alert}\n")
        for section in ("## What it means", "## How to check", "## What to do"):
            assert section in text, f"{alert}.md lacks {section}"
        assert "kubectl " in text
        assert f"[{alert}]({alert}.md)" in index


def test_every_alert_is_tested_firing_and_quiet(rules: list[dict[str, Any]]) -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case["alert_rule_test"]:
                (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    alerts = {r["alert"] for r in rules}
    assert alerts - firing == set(), "alerts with no firing case"
    assert alerts - quiet == set(), "alerts with no quiet case"


def _metric_names(expr: str) -> set[str]:
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    return set(re.findall(r"\bqbo_[a-z_]+\b", without_strings))


def test_alerts_use_only_the_design_metric_names(rules: list[dict[str, Any]]) -> None:
    used = set().union(*(_metric_names(r["expr"]) for r in rules))
    assert used - KNOWN == set()
    down = [r["expr"] for r in rules if r["alert"] in ("QuickbooksOperatorDown", "QuickbooksGatewayDown")]
    assert 'up{job="qbo-operator"}' in down[0] and 'up{job="qbo-gateway"}' in down[1]


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def test_dashboard_panels_and_metric_names() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in _panels(dashboard) if p["type"] != "row"]
    titles = {p["title"] for p in panels}
    assert {
        "Integrations by phase",
        "Time since last successful sync",
        "Payments synced per night",
        "Webhook requests by result",
    } <= titles
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    used = set().union(*map(_metric_names, exprs))
    assert used - KNOWN == set()
    assert {"qbo_integrations", "qbo_integration_last_successful_sync_timestamp_seconds"} <= used
    assert {"qbo_integration_last_sync_payments", "qbo_webhook_requests_total"} <= used
    ids = [p["id"] for p in _panels(dashboard)]
    assert len(ids) == len(set(ids))
    assert all(p["datasource"] == {"type": "prometheus", "uid": "${datasource}"} for p in panels)
