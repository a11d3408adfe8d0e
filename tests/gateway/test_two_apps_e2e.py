"""Two Intuit apps side by side (issue 18): Intuit gives each app development keys for sandbox companies and
production keys for real ones, so the operator, the gateway and the sync hold one app per environment.

Two QBO sandboxes stand for the two apps, each knowing only its own client id and secret and signing its
webhooks with its own verifier token: an integration that used the other environment's app would fail at
the sandbox's consent page, code exchange, refresh or API call. Both integrations live in one namespace, are
connected through the gateway's Connect flow and synced by the Job the operator makes (run by the test
kubelet with the Pod's environment, so the sync sees only the credentials the operator mirrored for it)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from pathlib import Path

import httpx
import pytest

from qbo_operator.core import names
from qbo_operator.harness.controlplane import ControlPlane, free_port
from qbo_operator.harness.sandbox.qbo import QboSandbox
from qbo_operator.reconciler.manifests import manual_job_name
from tests.support.connect import connect_via_http, heading, new_company
from tests.support.kube import HOME, apply, conditions, create_integration, get, qbi, settled, webhook_count
from tests.support.kubelet import Kubelet
from tests.support.objects import decoded, integration, new_company_id
from tests.support.paths import QBO_OPERATOR
from tests.support.processes import Gateway, GatewayFactory, Keys, Operator
from tests.support.wait import wait_for

GREENCHECK = {
    "GREENCHECK_CLIENT_ID": "greencheck-client-two-apps",
    "GREENCHECK_CLIENT_SECRET": "greencheck-secret-two-apps-5d1e",
    "GREENCHECK_SERVICE_PROVIDER_ID": "sp-two-apps",
}
PAYMENT_EVENT = {"name": "Payment", "id": "990001", "operation": "Create", "lastUpdated": "2026-12-01T10:00:00.000Z"}


@dataclass
class App:
    """One Intuit app: its keys and the QBO sandbox that knows only them."""

    keys: Keys
    sb: QboSandbox

    def env(self, prefix: str) -> dict[str, str]:
        """The app's variables as the chart sets them (`QBO_` production, `QBO_SANDBOX_` sandbox)."""
        return {
            f"{prefix}CLIENT_ID": self.keys.client_id,
            f"{prefix}CLIENT_SECRET": self.keys.client_secret,
            f"{prefix}WEBHOOK_VERIFIER_TOKEN": self.keys.verifier_token,
            f"{prefix}AUTH_URL": self.sb.auth_url,
            f"{prefix}TOKEN_URL": self.sb.token_url,
            f"{prefix}REVOKE_URL": self.sb.revoke_url,
            f"{prefix}API_URL": self.sb.api_url,
        }


@dataclass
class TwoApps:
    production: App
    sandbox: App
    gateway_port: int
    greencheck_url: str


@pytest.fixture
def two_apps(tmp_path: Path) -> Iterator[TwoApps]:
    """Two QBO sandboxes (one per app) redirecting and sending webhooks to one gateway port, and Green Check."""
    port, gc_port = free_port(), free_port()
    with ExitStack() as stack:
        apps = []
        for _ in ("production", "sandbox"):
            keys = Keys()
            sb = QboSandbox(
                keys.client_id,
                keys.client_secret,
                redirect_uri=f"http://127.0.0.1:{port}/oauth/callback",
                webhook_verifier_token=keys.verifier_token,
                webhook_url=f"http://127.0.0.1:{port}/webhooks/quickbooks",
            )
            stack.enter_context(sb.serve_in_thread())
            apps.append(App(keys, sb))
        log = (tmp_path / "greencheck.log").open("wb")
        stack.callback(log.close)
        gc = subprocess.Popen(
            [QBO_OPERATOR, "sandbox", "greencheck", "--port", str(gc_port)],
            env={"PATH": "/usr/bin:/bin", **GREENCHECK},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        stack.callback(gc.wait, 30)
        stack.callback(gc.terminate)
        url = f"http://127.0.0.1:{gc_port}"
        wait_for("the Green Check sandbox", lambda: _answers(f"{url}/_sandbox/state"), timeout=60)
        yield TwoApps(apps[0], apps[1], port, url)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def operators(cluster: ControlPlane) -> Iterator[list[Operator]]:
    running: list[Operator] = []
    yield running
    # Delete the integrations while the operator still runs, so its finalizer does not outlive it.
    cluster.kubectl("delete", "quickbooksintegrations", "--all", "--all-namespaces", "--timeout=120s", check=False)
    for op in running:
        op.stop()


def start_operator(
    cluster: ControlPlane, operators: list[Operator], env: dict[str, str], gateway: Gateway, namespace: str, log: Path
) -> Operator:
    op = Operator(
        cluster.kubeconfig,
        {
            **env,
            "QBO_STATE_SIGNING_KEY": gateway.keys.signing_key,
            "QBO_GATEWAY_URL": gateway.base,
            "QBO_SYNC_IMAGE": "registry.example/qbo-operator:test",
        },
        log,
    )
    operators.append(op)
    return op.start("--namespace", namespace)


def gateway_with(gateway_factory: GatewayFactory, keys: Keys, port: int, env: dict[str, str]) -> Gateway:
    """A gateway whose environment is exactly `env` for the apps (the factory's own QBO_* values replaced)."""
    gw = gateway_factory(keys, port=port, start=False)
    for var in [v for v in gw.env if v.startswith(("QBO_CLIENT", "QBO_WEBHOOK", "QBO_AUTH", "QBO_TOKEN"))]:
        del gw.env[var]
    gw.env.update(env)
    return gw.start()


def link_of(cluster: ControlPlane, namespace: str, name: str) -> str:
    return str(
        wait_for(
            f"{name}'s Connect link",
            lambda: (qbi(cluster, namespace, name).get("status") or {}).get("authorizationURL"),
            timeout=60,
        )
    )


def has_webhook(cluster: ControlPlane, namespace: str, name: str) -> bool:
    return webhook_count(cluster, namespace, name) >= 1


def pay_an_open_invoice(sb: QboSandbox, realm: str) -> str:
    """A payment created now (after connectedAt, so the sync delivers it); returns its id."""
    company = sb.companies[realm]
    open_invoice = next(i for i, inv in company.invoices.items() if Decimal(str(inv["Balance"])) > 0)
    return str(sb.create_payment(realm, [open_invoice])["Id"])


def _sync_each_with_its_own_app(
    cluster: ControlPlane, namespace: str, two_apps: TwoApps, payments: dict[str, str], tmp_path: Path
) -> None:
    """A manual Job per integration: each talks to its own app's QBO and delivers its new payment."""
    prod, dev = two_apps.production, two_apps.sandbox
    kubelet = Kubelet(cluster, tmp_path / "pods")
    for name, app in (("real", prod), ("trial", dev)):
        cluster.kubectl("annotate", names.PLURAL, name, "-n", namespace, f"{names.SYNC_REQUESTED_ANNOTATION}=both-apps")
        job = manual_job_name(names.sync_workload_name(namespace, name), "both-apps")
        before = dict(app.sb.requests)
        run = kubelet.run(HOME, job)
        assert run.exit_code == 0, run.stderr[-2000:]
        assert sum(app.sb.requests.values()) > sum(before.values())  # the sync talked to its own app's QBO
        obj = wait_for(f"{name} synced", partial(settled, cluster, namespace, name, "Connected", Synced="Succeeded"))
        assert obj["status"]["lastSync"]["result"] == "Succeeded"
        company_id = obj["spec"]["companyId"]
        records = httpx.get(f"{two_apps.greencheck_url}/_sandbox/records/{company_id}", timeout=30).json()["records"]
        assert any(f":payment:{payments[name]}:" in r["external_id"] for r in records), records


def test_a_sandbox_and_a_production_integration_each_use_their_own_app(
    cluster: ControlPlane,
    namespace: str,
    two_apps: TwoApps,
    gateway_factory: GatewayFactory,
    operators: list[Operator],
    tmp_path: Path,
) -> None:
    prod, dev = two_apps.production, two_apps.sandbox
    env = {**prod.env("QBO_"), **dev.env("QBO_SANDBOX_"), "GREENCHECK_API_URL": two_apps.greencheck_url, **GREENCHECK}
    gw = gateway_with(gateway_factory, prod.keys, two_apps.gateway_port, env)
    start_operator(cluster, operators, env, gw, namespace, tmp_path / "operator.log")

    realms = {"real": new_company(prod.sb, "Real Dispensary LLC", payments=5)}
    realms["trial"] = new_company(dev.sb, "Trial Dispensary LLC", payments=5)
    create_integration(cluster, namespace, "real", company_name="Real Dispensary")
    apply(cluster, integration(namespace, "trial", companyId=new_company_id(), environment="sandbox"))

    for name, app in (("real", prod), ("trial", dev)):
        link = link_of(cluster, namespace, name)
        # Connect sends the person to the app's own authorization page, with its client id (the sandbox
        # refuses any other), and the gateway exchanges the code with that app's secret.
        done = connect_via_http(link, realms[name])
        assert done.status_code == 200 and heading(done.text) == "QuickBooks is connected", done.text[:300]
        assert app.sb.requests["authorize"] >= 1 and app.sb.requests["token"] >= 1
        wait_for(f"{name} Connected", partial(settled, cluster, namespace, name, "Connected", Ready="Connected"))
    assert qbi(cluster, namespace, "trial")["status"]["realmId"] == realms["trial"]

    # Each environment's sync credentials (one Secret at home per environment, the one its Jobs' pods read) hold
    # only that environment's app, under that app's names.
    for environment, present, absent in (
        ("production", "QBO_CLIENT_ID", "QBO_SANDBOX_CLIENT_ID"),
        ("sandbox", "QBO_SANDBOX_CLIENT_ID", "QBO_CLIENT_ID"),
    ):
        secret = get(cluster, "secret", HOME, names.sync_credentials_name(environment))
        assert secret is not None
        data = decoded(secret)
        assert present in data and absent not in data, sorted(data)

    # Webhooks signed by each app reach its integration: the gateway verifies each with the right token.
    payments = {name: pay_an_open_invoice(app.sb, realms[name]) for name, app in (("real", prod), ("trial", dev))}
    for name in ("real", "trial"):
        wait_for(f"{name}'s webhook", partial(has_webhook, cluster, namespace, name), timeout=60)
    # A realm never crosses environments: the sandbox company's realm signed by the production app is unknown.
    crossed = {"realmId": realms["trial"], "dataChangeEvent": {"entities": [PAYMENT_EVENT]}}
    answer = gw.post_webhook(json.dumps({"eventNotifications": [crossed]}).encode())  # the production token
    assert answer.status_code == 200
    assert gw.metric("qbo_webhook_requests_total", result="unknown_realm") == 1

    _sync_each_with_its_own_app(cluster, namespace, two_apps, payments, tmp_path)


def test_an_environment_without_credentials_is_refused_naming_the_variables(
    cluster: ControlPlane,
    namespace: str,
    two_apps: TwoApps,
    gateway_factory: GatewayFactory,
    operators: list[Operator],
    tmp_path: Path,
) -> None:
    """A sandbox-only installation (the production app absent): a production integration is phase Error with
    the reason and the exact message, its Connect link sends no one to Intuit, and its sync refuses to run."""
    dev = two_apps.sandbox
    env = {**dev.env("QBO_SANDBOX_"), "GREENCHECK_API_URL": two_apps.greencheck_url, **GREENCHECK}
    gw = gateway_with(gateway_factory, dev.keys, two_apps.gateway_port, env)
    start_operator(cluster, operators, env, gw, namespace, tmp_path / "operator.log")

    create_integration(cluster, namespace, "real", company_name="Real Dispensary")
    obj = wait_for("Error", lambda: settled(cluster, namespace, "real", "Error", Ready="MissingCredentials"))
    ready = conditions(obj)["Ready"]
    assert ready["status"] == "False"
    assert ready["message"] == (
        "spec.environment is production, but the operator has no credentials for it: QBO_CLIENT_ID and "
        "QBO_CLIENT_SECRET are not set. Put the Intuit app's production keys there (the operator's credentials "
        "Secret), or use the other environment."
    )

    link = link_of(cluster, namespace, "real")
    refused = httpx.post(link, timeout=30)
    assert refused.status_code == 503 and heading(refused.text) == "QuickBooks cannot be connected yet"
    assert "location" not in refused.headers
    assert gw.metric("qbo_connect_requests_total", result="not_configured") == 1
    assert dev.sb.requests["authorize"] == 0
