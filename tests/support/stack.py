"""The whole product as processes (qbo_operator.harness.localstack: the chart installed with helm, the operator
and the gateway under its ServiceAccounts, both sandboxes as `qbo-operator sandbox` processes), plus what the
chaos, restart and least-privilege tests need on top: a kubelet running each Pod as its own ServiceAccount,
respawning a killed component without waiting for it, the Connect flow as a browser walks it, and the
expected records computed from the QBO sandbox's raw data through its control API."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from qbo_operator.core import names
from qbo_operator.core.models import parse_rfc3339
from qbo_operator.harness.controlplane import ControlPlane
from qbo_operator.harness.localstack import SYSTEM_NAMESPACE, LocalStack, parse_forms, submit
from qbo_operator.reconciler.manifests import manual_job_name
from tests.support.kube import apply, get, qbi
from tests.support.kubelet import Kubelet
from tests.support.ledger import SECRETS, snapshot_cluster
from tests.support.objects import decoded, integration
from tests.support.wait import STACK_TIMEOUT, wait_for

# Sync tuning for the test's pods: small pages and batches (many checkpoints to land between), short waits.
SYNC_TUNING = {
    "QBO_SYNC_PAGE_SIZE": "50",
    "QBO_SYNC_BATCH_SIZE": "20",
    "QBO_SYNC_BACKOFF_SECONDS": "0.1",
    "QBO_SYNC_BACKOFF_MAX_SECONDS": "0.5",
    "QBO_THROTTLE_WAIT_SECONDS": "0.5",
    "QBO_SYNC_RETRIES": "3",
    "QBO_SYNC_TIMEOUT_SECONDS": "10",
    "QBO_SYNC_SETTLE_SECONDS": "1",  # the tests' changes are seconds old: let the watermark follow them
}


# --- the product ------------------------------------------------------------------------------------


@dataclass
class Product:
    """A LocalStack with its components restartable by name, and the integrations made on it."""

    stack: LocalStack
    cp: ControlPlane
    realms: list[str] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    _kubeconfigs: dict[tuple[str, str], Path] = field(default_factory=dict)

    # components ---------------------------------------------------------------------------------
    def kubeconfig_for(self, namespace: str, account: str) -> Path:
        key = (namespace, account)
        if key not in self._kubeconfigs:
            self._kubeconfigs[key] = self.cp.service_account_kubeconfig(namespace, account)
        return self._kubeconfigs[key]

    @functools.cached_property
    def kubelet(self) -> Kubelet:
        """Runs each sync Pod as its own ServiceAccount, with SYNC_TUNING, its log in the stack's logs."""
        logs = self.stack.workdir / "logs"
        return Kubelet(self.cp, logs, env=SYNC_TUNING, identity=self.kubeconfig_for, on_log=SECRETS.add_file)

    def respawn(self, name: str) -> None:
        """Start the operator or gateway again (as LocalStack does), without waiting for it to be ready."""
        s = self.stack
        account = s.service_account(name)
        env = {
            **s.base_env(),
            "KUBECONFIG": str(self.kubeconfig_for(SYSTEM_NAMESPACE, account)),
            "POD_NAMESPACE": SYSTEM_NAMESPACE,
        }
        if name == "operator":
            args = [
                "run",
                "--standalone",
                "--all-namespaces",
                "--health-port",
                str(s.operator_health_port),
                "--metrics-port",
                str(s.operator_metrics_port),
            ]
        else:
            args = ["gateway", "--host", "127.0.0.1", "--port", str(s.gateway_port)]
        s.spawn(name, args, env)

    def kill(self, name: str) -> bool:
        """SIGKILL a component (its whole process group); True if it was running."""
        proc = self.stack.processes.get(name)
        alive = proc is not None and proc.alive()
        self.stack.stop_process(name, signal.SIGKILL)
        return alive

    def ready(self, name: str, timeout: float = 120) -> None:
        s = self.stack
        url = f"http://127.0.0.1:{s.operator_health_port}/healthz" if name == "operator" else f"{s.gateway_url}/readyz"
        if name not in s.processes or not s.processes[name].alive():
            self.respawn(name)
        s.wait_http(name, url, timeout=timeout)

    # integrations ---------------------------------------------------------------------------------
    def integration(self, namespace: str, name: str) -> dict[str, Any]:
        return qbi(self.cp, namespace, name)

    def create_integration(self, namespace: str, name: str, company_id: str) -> None:
        if namespace not in self.namespaces:
            self.cp.kubectl("create", "namespace", namespace, check=False)
            self.namespaces.append(namespace)
        apply(self.cp, integration(namespace, name, companyId=company_id, companyName=f"{name.title()} Dispensary"))

    def phase(self, namespace: str, name: str) -> str | None:
        return (self.integration(namespace, name).get("status") or {}).get("phase")

    def connect(self, namespace: str, name: str, realm: str) -> None:
        """A person opens the Connect link, presses Connect and approves at Intuit (the sandbox)."""
        link: str = wait_for(
            f"{namespace}/{name}'s Connect link",
            lambda: (self.integration(namespace, name).get("status") or {}).get("authorizationURL"),
            STACK_TIMEOUT,
            0.25,
        )
        with httpx.Client(follow_redirects=False, timeout=60) as browser:
            page = browser.get(link)
            assert page.status_code == 200, page.text[:500]
            pressed = submit(browser, str(page.url), parse_forms(page.text)[0], {})
            assert pressed.status_code == 303, pressed.text[:500]
            # Browsers keep the `__Host-` cookie on http://127.0.0.1 (a secure context); httpx does not.
            cookies = "; ".join(c.split(";", 1)[0] for c in pressed.headers.get_list("set-cookie"))
            consent = browser.get(pressed.headers["location"])
            form = parse_forms(consent.text)[0]
            approve = next(b for b in form.buttons if b[1] == "approve")
            answer = submit(browser, str(consent.url), form, {approve[0]: approve[1], "realmId": realm})
            done = browser.get(answer.headers["location"], headers={"Cookie": cookies})
            assert done.status_code == 200, done.text[:500]
        wait_for(
            f"{namespace}/{name} Connected", lambda: self.phase(namespace, name) == "Connected", STACK_TIMEOUT, 0.25
        )

    def request_sync(self, namespace: str, name: str, token: str) -> str:
        """The sync-now annotation; returns the name of the Job the operator makes for it."""
        self.cp.kubectl(
            "annotate", "--overwrite", names.PLURAL, name, "-n", namespace, f"{names.SYNC_REQUESTED_ANNOTATION}={token}"
        )
        return manual_job_name(names.sync_workload_name(namespace, name), token)

    def token_secret(self, namespace: str, name: str) -> dict[str, str]:
        secret = get(self.cp, "secret", namespace, names.token_secret_name(name))
        assert secret is not None, f"{namespace}/{name} has no token Secret"
        return decoded(secret)

    def record_secrets(self, namespace: str, name: str) -> None:
        with contextlib.suppress(Exception):
            data = self.token_secret(namespace, name)
            SECRETS.add_secret(data.get("access_token"), "QBO access token (token Secret)")
            SECRETS.add_secret(data.get("refresh_token"), "QBO refresh token (token Secret)")

    # the sandboxes ------------------------------------------------------------------------------------
    def qbo(self, method: str, path: str, **kw: Any) -> Any:
        resp = httpx.request(method, f"{self.stack.qbo_url}/_sandbox{path}", timeout=120, **kw)
        resp.raise_for_status()
        return resp.json()

    def payments(self, realm: str) -> list[dict[str, Any]]:
        """Every payment of the company as QBO holds it (the control API pages them)."""
        out: list[dict[str, Any]] = []
        while True:
            page = self.qbo("GET", f"/companies/{realm}/payments", params={"offset": len(out), "limit": 1000})
            out += page["payments"]
            if not page["payments"] or len(out) >= page["total"]:
                return out

    def greencheck_store(self, company_id: str) -> list[dict[str, Any]]:
        resp = httpx.get(f"{self.stack.greencheck_url}/_sandbox/records/{company_id}", timeout=60)
        return list(resp.raise_for_status().json()["records"])

    def greencheck_state(self) -> dict[str, Any]:
        data: dict[str, Any] = httpx.get(f"{self.stack.greencheck_url}/_sandbox/state", timeout=30).json()
        return data

    def expected_records(self, realm: str, connected_at: dt.datetime) -> dict[str, int]:
        """external_id -> cents applied, from the QBO sandbox's raw Intuit JSON (not the product's mapping):
        payments created at or after connectedAt, not voided, one record per invoice they pay."""
        payments = self.payments(realm)
        out: dict[str, int] = {}
        for pay in payments:
            created = parse_rfc3339(pay["MetaData"]["CreateTime"])
            if created < connected_at:
                continue
            if str(pay.get("PrivateNote") or "").startswith("Voided") and Decimal(str(pay["TotalAmt"])) == 0:
                continue
            for line in pay.get("Line") or []:
                for link in line.get("LinkedTxn") or []:
                    if link["TxnType"] == "Invoice":
                        eid = f"qbo:{realm}:payment:{pay['Id']}:invoice:{link['TxnId']}"
                        out[eid] = out.get(eid, 0) + int(Decimal(str(line["Amount"])) * 100)
        return out

    def metrics(self) -> str:
        texts = []
        for url in (self.stack.operator_metrics_url, f"{self.stack.gateway_url}/metrics"):
            with contextlib.suppress(httpx.HTTPError):
                texts.append(httpx.get(url, timeout=10).text)
        return "\n".join(texts)

    def clean_up(self) -> None:
        """Delete this product's integrations while its operator still runs (it removes their finalizers and
        revokes their grants), so no realm stays claimed for the next test's gateway."""
        with contextlib.suppress(Exception):
            self.ready("operator", timeout=60)
        for namespace in self.namespaces:
            self.cp.kubectl(
                "delete", names.PLURAL, "--all", "-n", namespace, "--wait=true", "--timeout=120s", check=False
            )
            self.cp.kubectl("delete", "namespace", namespace, "--wait=false", check=False)

    def register_for_hygiene(self, label: str) -> None:
        """Everything this product printed, served and stored, for the session's secret scan."""
        SECRETS.add_secrets(self.stack.creds.secret_values(), f"{label}: client secret or signing key")
        SECRETS.add_dir(self.stack.workdir / "logs")
        SECRETS.add_text(f"{label}: /metrics of operator and gateway", self.metrics())
        snapshot_cluster(self.cp, label)


@contextlib.contextmanager
def product(cp: ControlPlane, workdir: Path, companies: int = 1, history: int = 30, seed: int = 7) -> Iterator[Product]:
    """The chart installed and every component running; `companies` QBO companies in the sandbox."""
    stack = LocalStack(cp, workdir)
    p = Product(stack, cp)
    try:
        stack.start_sandboxes(f"Acme Dispensary {seed}", history=history, seed=seed)
        p.realms.append(stack.qbo_state()["realms"][0]["realmId"])
        for i in range(1, companies):
            created = p.qbo(
                "POST", "/companies", json={"name": f"Company {seed}-{i}", "seed": seed + i, "payments": history}
            )
            p.realms.append(created["realmId"])
        stack.install_chart()
        stack.start_gateway()
        stack.start_operator()
        yield p
    finally:
        with contextlib.suppress(Exception):
            p.register_for_hygiene(workdir.name)
        p.clean_up()
        stack.stop()
