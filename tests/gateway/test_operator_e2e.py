"""The whole Connect story with the real operator: the operator publishes the Connect link, a person
connects in Chromium, the gateway writes the Secret, the operator turns the integration Connected, and
signed webhooks from the sandbox land in its status. Both processes run under the chart's
ServiceAccounts and RBAC (`helm template`), so the chart's gateway Role is proven sufficient too."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from playwright.sync_api import Browser, expect

from qbo_operator.core.models import Tokens
from qbo_operator.harness.controlplane import ControlPlane, free_port
from tests.support.connect import new_company
from tests.support.kube import (
    apply,
    assert_not_readable,
    audit,
    create_integration,
    events_text,
    qbi,
    secret_or_none,
    webhook_count,
)
from tests.support.paths import ROOT
from tests.support.processes import Keys, Operator, Stack, StackFactory
from tests.support.wait import wait_for
from tests.support.webhooks import payment_events_sent

RELEASE_NAMESPACE = "qbo-system"


def chart_accounts(cluster: ControlPlane) -> dict[str, Path]:
    """The chart's operator and gateway ServiceAccounts with their RBAC; a kubeconfig for each."""
    cluster.kubectl("create", "namespace", RELEASE_NAMESPACE, check=False)
    rendered = cluster.helm(
        "template",
        "qbo",
        str(ROOT / "charts" / "qbo-operator"),
        "--namespace",
        RELEASE_NAMESPACE,
        "--show-only",
        "templates/serviceaccounts.yaml",
        "--show-only",
        "templates/operator-rbac.yaml",
        "--show-only",
        "templates/gateway-rbac.yaml",
        "--show-only",
        "templates/realm-claims-rbac.yaml",
    ).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    for doc in docs:
        if doc["kind"] == "ServiceAccount":
            doc["metadata"]["namespace"] = RELEASE_NAMESPACE
    apply(cluster, *docs)
    accounts = {
        d["metadata"]["labels"]["app.kubernetes.io/component"]: d["metadata"]["name"]
        for d in docs
        if d["kind"] == "ServiceAccount"
    }
    return {role: cluster.service_account_kubeconfig(RELEASE_NAMESPACE, sa) for role, sa in accounts.items()} | {
        f"{role}-user": Path(f"system:serviceaccount:{RELEASE_NAMESPACE}:{sa}") for role, sa in accounts.items()
    }


@pytest.fixture
def operator_for(cluster: ControlPlane, tmp_path: Path) -> Iterator[list[Operator]]:
    running: list[Operator] = []
    yield running
    # Delete the integrations while the operator still runs, so its finalizer does not outlive it.
    cluster.kubectl("delete", "quickbooksintegrations", "--all", "--all-namespaces", "--timeout=120s", check=False)
    for op in running:
        op.stop()


def operator_env(s: Stack, keys: Keys, accounts: dict[str, Path]) -> dict[str, str]:
    """The operator's settings, pointed at this stack's sandbox and gateway, as the chart would set them."""
    return {
        "QBO_CLIENT_ID": keys.client_id,
        "QBO_CLIENT_SECRET": keys.client_secret,
        "QBO_STATE_SIGNING_KEY": keys.signing_key,
        "QBO_GATEWAY_URL": s.gw.base,
        "QBO_TOKEN_URL": s.sb.token_url,
        "QBO_REVOKE_URL": s.sb.revoke_url,
        "QBO_API_URL": s.sb.api_url,
        "GREENCHECK_API_URL": f"http://127.0.0.1:{free_port()}",
        "GREENCHECK_CLIENT_ID": "greencheck-client-gw-e2e",
        "GREENCHECK_CLIENT_SECRET": "greencheck-secret-gw-e2e-7c41",
        "GREENCHECK_SERVICE_PROVIDER_ID": "sp-gateway-e2e",
        "QBO_SYNC_IMAGE": "registry.example/qbo-operator:test",
        # as the chart sets it: the operator grants the gateway each token Secret by name
        "QBO_GATEWAY_SERVICE_ACCOUNT": f"{RELEASE_NAMESPACE}/{str(accounts['gateway-user']).rsplit(':', 1)[-1]}",
    }


def approve_in_browser(browser: Browser, link: str, realm: str) -> None:
    """A person opens the Connect link, presses Connect and approves `realm` at Intuit (the sandbox)."""
    context = browser.new_context()
    page = context.new_page()
    page.goto(link)
    expect(page.get_by_role("heading", level=1)).to_have_text("Connect Acme Dispensary to Green Check")
    page.get_by_role("button", name="Connect to QuickBooks").click()
    page.select_option("#realmId", realm)
    page.get_by_role("button", name="Approve").click()
    page.wait_for_url(re.compile(r"/oauth/callback\?"))
    expect(page.get_by_role("heading", level=1)).to_have_text("QuickBooks is connected")
    context.close()


def test_connect_with_the_operator_running(
    cluster: ControlPlane,
    namespace: str,
    stack_factory: StackFactory,
    keys: Keys,
    browser: Browser,
    operator_for: list[Operator],
    tmp_path: Path,
) -> None:
    accounts = chart_accounts(cluster)
    s = stack_factory(host_name="localhost", webhooks=True, start_gateway=False, kubeconfig=accounts["gateway"])
    env = operator_env(s, keys, accounts)
    operator = Operator(accounts["operator"], env, tmp_path / "operator.log")
    operator_for.append(operator)
    operator.start("--namespace", namespace)
    s.gw.start()

    realm = new_company(s.sb, "Acme Dispensary LLC", payments=10)
    create_integration(cluster, namespace, "acme", company_name="Acme Dispensary")
    link = wait_for(
        "the operator's Connect link",
        lambda: (qbi(cluster, namespace, "acme").get("status") or {}).get("authorizationURL"),
        timeout=60,
    )
    assert link.startswith(f"{s.gw.base}/connect/{namespace}/acme?")

    approve_in_browser(browser, link, realm)

    cluster.kubectl(
        "wait",
        "--for=jsonpath={.status.phase}=Connected",
        "quickbooksintegration/acme",
        "-n",
        namespace,
        "--timeout=90s",
    )
    status = qbi(cluster, namespace, "acme")["status"]
    assert status["realmId"] == realm

    # Intuit's webhooks now reach the integration the operator marked connected.
    created = s.sb.generate_payments(realm, 12, seed=3)
    wait_for("webhooks acknowledged", lambda: s.sb.state()["webhooks"]["pending"] == 0)
    sent = payment_events_sent(s.sb.webhook_deliveries)
    assert len(sent) >= len(created)
    wait_for("webhook counts", lambda: webhook_count(cluster, namespace, "acme") == len(sent), timeout=30)

    secret = secret_or_none(cluster, namespace, "acme-qbo-tokens")
    assert secret is not None
    tokens = Tokens.from_secret_data(secret["data"])
    sensitive = [tokens.access_token, tokens.refresh_token, *keys.secret_values(), env["GREENCHECK_CLIENT_SECRET"]]
    readable = {
        "gateway log": s.gw.log(),
        "operator log": operator.output(),
        "events": events_text(cluster, namespace),
        "status": json.dumps(qbi(cluster, namespace, "acme").get("status")),
    }
    assert_not_readable(sensitive, readable)
    gateway_user = str(accounts["gateway-user"])
    refused = [e for e in audit(cluster, namespace, gateway_user) if (e.get("responseStatus") or {}).get("code") == 403]
    assert not refused, [(e["verb"], e["objectRef"]) for e in refused]
