"""The whole product as local processes on a local control plane, for `qbo-operator demo`, the
end-to-end tests and the benchmarks.

It installs the Helm chart (real helm) and then runs the operator and the gateway as processes
under the chart's own ServiceAccounts (real TokenRequest tokens), so the chart's RBAC is what is
exercised. The sandboxes run as `qbo-operator sandbox` processes. Every process has its own
process group and log file, and `stop()` ends them all."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx

from qbo_operator.harness.controlplane import ControlPlane, free_port, terminate_group

RELEASE = "qbo-operator"  # the chart then names its objects qbo-operator-*
SYSTEM_NAMESPACE = "qbo-system"
CHART = Path(__file__).resolve().parents[3] / "charts" / "qbo-operator"


def _inherited() -> dict[str, str]:
    """PATH and HOME, and PYTHONPATH when set: the processes run the same checkout as the caller (a git
    worktree that shares another checkout's editable install points PYTHONPATH at its own code); and the
    operator's memory diagnostic (`reconciler.memtrace`) when the caller turned it on."""
    keep = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/")}
    for name in ("PYTHONPATH", "QBO_TRACEMALLOC", "QBO_TRACEMALLOC_FRAMES"):
        if os.environ.get(name):
            keep[name] = os.environ[name]
    return keep


class StackError(RuntimeError):
    pass


@dataclass(frozen=True)
class Credentials:
    """Throw-away credentials shared by the sandboxes and our processes (never printed)."""

    qbo_client_id: str = field(default_factory=lambda: "demo-" + secrets.token_hex(8))
    qbo_client_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    webhook_verifier_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    state_signing_key: str = field(default_factory=lambda: secrets.token_hex(32))
    greencheck_client_id: str = field(default_factory=lambda: "gc-" + secrets.token_hex(8))
    greencheck_client_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    service_provider_id: str = field(default_factory=lambda: "sp-" + secrets.token_hex(6))

    def secret_values(self) -> list[str]:
        return [
            self.qbo_client_secret,
            self.webhook_verifier_token,
            self.state_signing_key,
            self.greencheck_client_secret,
        ]


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, chars: int = 2000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


class LoopbackUrl:
    """`http://127.0.0.1:<port><path>` of a process we started, read as an attribute (`stack.qbo_url`)
    from the owner's `port_attribute`: our processes listen on loopback only."""

    def __init__(self, port_attribute: str, path: str = "") -> None:
        self.port_attribute = port_attribute
        self.path = path

    def __get__(self, instance: object, owner: type | None = None) -> str:
        return f"http://127.0.0.1:{getattr(instance, self.port_attribute)}{self.path}"


@dataclass
class LocalStack:
    cp: ControlPlane
    workdir: Path
    creds: Credentials = field(default_factory=Credentials)
    qbo_port: int = field(default_factory=free_port)
    greencheck_port: int = field(default_factory=free_port)
    gateway_port: int = field(default_factory=free_port)
    operator_metrics_port: int = field(default_factory=free_port)
    operator_health_port: int = field(default_factory=free_port)
    processes: dict[str, Process] = field(default_factory=dict)

    # --- URLs --------------------------------------------------------------------------------
    qbo_url = LoopbackUrl("qbo_port")
    greencheck_url = LoopbackUrl("greencheck_port")
    gateway_url = LoopbackUrl("gateway_port")
    operator_metrics_url = LoopbackUrl("operator_metrics_port", "/metrics")

    def base_env(self) -> dict[str, str]:
        """What the chart would put in the pods' environment, pointed at the sandboxes."""
        c = self.creds
        return {
            "QBO_CLIENT_ID": c.qbo_client_id,
            "QBO_CLIENT_SECRET": c.qbo_client_secret,
            "QBO_WEBHOOK_VERIFIER_TOKEN": c.webhook_verifier_token,
            "QBO_STATE_SIGNING_KEY": c.state_signing_key,
            "QBO_GATEWAY_URL": self.gateway_url,
            "QBO_REDIRECT_URI": f"{self.gateway_url}/oauth/callback",
            "QBO_AUTH_URL": f"{self.qbo_url}/connect/oauth2",
            "QBO_TOKEN_URL": f"{self.qbo_url}/oauth2/v1/tokens/bearer",
            "QBO_REVOKE_URL": f"{self.qbo_url}/v2/oauth2/tokens/revoke",
            "QBO_API_URL": self.qbo_url,
            "GREENCHECK_API_URL": self.greencheck_url,
            "GREENCHECK_CLIENT_ID": c.greencheck_client_id,
            "GREENCHECK_CLIENT_SECRET": c.greencheck_client_secret,
            "GREENCHECK_SERVICE_PROVIDER_ID": c.service_provider_id,
            "QBO_SYNC_IMAGE": "ghcr.io/greencheck/qbo-operator:0.1.0",
            "QBO_GATEWAY_SERVICE_ACCOUNT": f"{SYSTEM_NAMESPACE}/{self.service_account('gateway')}",
        }

    # --- processes ---------------------------------------------------------------------------
    def spawn(self, name: str, args: list[str], env: Mapping[str, str]) -> Process:
        logs = self.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{name}.log"
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                [sys.executable, "-m", "qbo_operator", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**_inherited(), **env},
                process_group=0,
            )
        proc = Process(name, popen, log_path)
        self.processes[name] = proc
        (self.workdir / "pids").mkdir(exist_ok=True)
        (self.workdir / "pids" / name).write_text(str(popen.pid))
        return proc

    def stop_process(self, name: str, sig: int = signal.SIGTERM, grace: float = 15.0) -> None:
        proc = self.processes.pop(name, None)
        if proc is None:
            return
        terminate_group(proc.popen.pid, proc.popen, grace, sig)
        with contextlib.suppress(FileNotFoundError):
            (self.workdir / "pids" / name).unlink()

    def stop(self) -> None:
        for name in reversed(list(self.processes)):
            self.stop_process(name)

    def wait_http(self, name: str, url: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        proc = self.processes[name]
        while time.monotonic() < deadline:
            if not proc.alive():
                raise StackError(f"{name} exited with {proc.popen.returncode}:\n{proc.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise StackError(f"{name} did not answer {url} within {timeout:.0f}s:\n{proc.tail()}")

    # --- the pieces --------------------------------------------------------------------------
    def start_sandboxes(self, company: str, history: int, seed: int) -> None:
        env = self.base_env()
        self.spawn(
            "qbo-sandbox",
            [
                "sandbox", "qbo", "--port", str(self.qbo_port), "--company", company,
                "--history", str(history), "--payments", "0", "--seed", str(seed),
                "--webhook-url", f"{self.gateway_url}/webhooks/quickbooks",
            ],
            env,
        )  # fmt: skip
        self.spawn("greencheck-sandbox", ["sandbox", "greencheck", "--port", str(self.greencheck_port)], env)
        self.wait_http("qbo-sandbox", f"{self.qbo_url}/_sandbox/state")
        self.wait_http("greencheck-sandbox", f"{self.greencheck_url}/_sandbox/state")

    def install_chart(self) -> None:
        """`helm install` of the real chart; its Deployments stay Pending (no nodes), their
        ServiceAccounts and RBAC are what our local processes run under."""
        c = self.creds
        values = {
            "credentials": {
                "clientId": c.qbo_client_id,
                "clientSecret": c.qbo_client_secret,
                "webhookVerifierToken": c.webhook_verifier_token,
                "stateSigningKey": c.state_signing_key,
                "greencheck": {
                    "clientId": c.greencheck_client_id,
                    "clientSecret": c.greencheck_client_secret,
                },
            },
            "config": {
                "gatewayUrl": self.gateway_url,
                "greencheckApiUrl": self.greencheck_url,
                "serviceProviderId": c.service_provider_id,
                "qboAuthUrl": f"{self.qbo_url}/connect/oauth2",
                "qboTokenUrl": f"{self.qbo_url}/oauth2/v1/tokens/bearer",
                "qboRevokeUrl": f"{self.qbo_url}/v2/oauth2/tokens/revoke",
                "qboApiUrl": self.qbo_url,
            },
        }
        values_file = self.workdir / "values.json"
        values_file.write_text(json.dumps(values))
        values_file.chmod(0o600)
        self.cp.helm(
            "upgrade", "--install", RELEASE, str(CHART), "--namespace", SYSTEM_NAMESPACE, "--create-namespace",
            "--values", str(values_file), "--wait=false",
        )  # fmt: skip

    def service_account(self, component: str) -> str:
        return f"{RELEASE}-{component}"

    def start_operator(self) -> Process:
        proc = self.spawn_operator()
        self.wait_http("operator", f"http://127.0.0.1:{self.operator_health_port}/healthz", timeout=90)
        return proc

    def spawn_operator(self) -> Process:
        """`qbo-operator run` under the chart's ServiceAccount, without waiting for it to answer."""
        kubeconfig = self.cp.service_account_kubeconfig(SYSTEM_NAMESPACE, self.service_account("operator"))
        env = {**self.base_env(), "KUBECONFIG": str(kubeconfig), "POD_NAMESPACE": SYSTEM_NAMESPACE}
        return self.spawn(
            "operator",
            [
                "run", "--standalone", "--all-namespaces",
                "--health-port", str(self.operator_health_port), "--metrics-port", str(self.operator_metrics_port),
            ],
            env,
        )  # fmt: skip

    def start_gateway(self) -> Process:
        kubeconfig = self.cp.service_account_kubeconfig(SYSTEM_NAMESPACE, self.service_account("gateway"))
        env = {**self.base_env(), "KUBECONFIG": str(kubeconfig), "POD_NAMESPACE": SYSTEM_NAMESPACE}
        proc = self.spawn("gateway", ["gateway", "--host", "127.0.0.1", "--port", str(self.gateway_port)], env)
        self.wait_http("gateway", f"{self.gateway_url}/readyz", timeout=90)
        return proc

    # --- sandbox control API -------------------------------------------------------------------
    def qbo_state(self) -> dict[str, Any]:
        data: dict[str, Any] = httpx.get(f"{self.qbo_url}/_sandbox/state", timeout=10).raise_for_status().json()
        return data

    def greencheck_token(self) -> str:
        """A `sales:read` token for Green Check's public read-back API."""
        token: str = (
            httpx.post(
                f"{self.greencheck_url}/auth/token",
                json={
                    "client_id": self.creds.greencheck_client_id,
                    "client_secret": self.creds.greencheck_client_secret,
                    "grant_type": "client_credentials",
                    "scope": ["sales:read"],
                },
                timeout=10,
            )
            .raise_for_status()
            .json()["access_token"]
        )
        return token

    def greencheck_records(self, company_id: str) -> list[dict[str, Any]]:
        """What arrived, through Green Check's public read-back API (not the sandbox's internals)."""
        token = self.greencheck_token()
        out: list[dict[str, Any]] = []
        offset = 0
        while True:
            page = (
                httpx.get(
                    f"{self.greencheck_url}/service-providers/{self.creds.service_provider_id}/crbs/{company_id}/sales",
                    params={"limit": 500, "offset": offset},
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=10,
                )
                .raise_for_status()
                .json()
            )
            out.extend(page["data"])
            offset += len(page["data"])
            if not page["data"] or offset >= page["metadata"]["total"]:
                return out

    def greencheck_versions(self, company_id: str, external_id: str) -> list[dict[str, Any]]:
        """A record's versions for audit, oldest first, through the public API: what changed, and when."""
        sp = self.creds.service_provider_id
        sales = f"{self.greencheck_url}/service-providers/{sp}/crbs/{company_id}/sales"
        resp = httpx.get(
            f"{sales}/invoice-payments/{external_id}/versions",
            headers={"Authorization": f"Bearer {self.greencheck_token()}"},
            timeout=10,
        ).raise_for_status()
        versions: list[dict[str, Any]] = resp.json()["versions"]
        return versions


# --- walking an HTML form like a browser -----------------------------------------------------------


@dataclass
class Form:
    action: str
    method: str
    fields: dict[str, str]
    buttons: list[tuple[str, str, str]]  # (name, value, label)
    selects: dict[str, list[tuple[str, str]]]  # name -> [(value, label)]


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []
        self._select: str | None = None
        self._option: str | None = None
        self._button: tuple[str, str] | None = None
        self._label = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append(Form(a.get("action", ""), a.get("method", "get").lower(), {}, [], {}))
        elif not self.forms:
            return
        form = self.forms[-1] if self.forms else None
        if form is None:
            return
        if tag == "input":
            kind = a.get("type", "text").lower()
            if kind in ("submit", "button") and a.get("name"):
                form.buttons.append((a["name"], a.get("value", ""), a.get("value", "")))
            elif kind == "radio":
                form.selects.setdefault(a.get("name", ""), []).append((a.get("value", ""), a.get("value", "")))
                if "checked" in a:
                    form.fields[a.get("name", "")] = a.get("value", "")
            elif a.get("name"):
                form.fields[a["name"]] = a.get("value", "")
        elif tag == "button":
            self._button = (a.get("name", ""), a.get("value", ""))
            self._label = ""
        elif tag == "select":
            self._select = a.get("name", "")
            form.selects[self._select] = []
        elif tag == "option" and self._select is not None:
            self._option = a.get("value", "")
            form.selects[self._select].append((self._option, ""))
            if "selected" in a:
                form.fields[self._select] = self._option

    def handle_data(self, data: str) -> None:
        if self._button is not None:
            self._label += data.strip()
        if self._option is not None and self._select is not None and self.forms:
            opts = self.forms[-1].selects[self._select]
            opts[-1] = (opts[-1][0], (opts[-1][1] + data).strip())

    def handle_endtag(self, tag: str) -> None:
        if tag == "button" and self._button is not None and self.forms:
            self.forms[-1].buttons.append((self._button[0], self._button[1], self._label))
            self._button = None
        elif tag == "option":
            self._option = None
        elif tag == "select":
            self._select = None


def parse_forms(html: str) -> list[Form]:
    parser = _FormParser()
    parser.feed(html)
    return parser.forms


def submit(client: httpx.Client, page_url: str, form: Form, extra: Mapping[str, str]) -> httpx.Response:
    """Submit `form` as a browser would (hidden fields + chosen values)."""
    url = urljoin(page_url, form.action or page_url)
    data = {**form.fields, **extra}
    if form.method == "post":
        return client.post(url, data=data)
    return client.get(url, params=data)
