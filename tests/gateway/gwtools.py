"""Helpers for the gateway tests: run `qbo-operator gateway` as a real process, make integrations on
the real control plane, sign webhooks, read metrics."""

from __future__ import annotations

import base64
import contextlib
import html
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families

from qbo_operator.core import signing
from qbo_operator.harness.controlplane import ControlPlane, free_port

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
QBO_OPERATOR = str(Path(sys.executable).parent / "qbo-operator")
GROUP = "integrations.greencheckverified.com"


@dataclass(frozen=True)
class Keys:
    """The gateway's secrets for one test run: random, so a leak is found by scanning for them."""

    client_id: str = field(default_factory=lambda: "app-" + secrets.token_hex(6))
    client_secret: str = field(default_factory=lambda: "csecret-" + secrets.token_urlsafe(18))
    verifier_token: str = field(default_factory=lambda: str(uuid.uuid4()))
    signing_key: str = field(default_factory=lambda: secrets.token_hex(32))

    def secret_values(self) -> list[str]:
        return [self.client_secret, self.verifier_token, self.signing_key]


class Gateway:
    """`qbo-operator gateway` as a subprocess on 127.0.0.1, its output in a log file."""

    def __init__(
        self,
        kubeconfig: Path,
        keys: Keys,
        log_path: Path,
        *,
        token_url: str = "http://127.0.0.1:9/oauth2/v1/tokens/bearer",  # noqa: S107 - a URL, nothing listens
        auth_url: str = "http://127.0.0.1:9/connect/oauth2",
        host_name: str = "127.0.0.1",
        args: Sequence[str] = (),
        extra_env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.base = f"http://{host_name}:{self.port}"
        self.keys = keys
        self.log_path = log_path
        self.args = list(args)
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", "/tmp"),
            "KUBECONFIG": str(kubeconfig),
            "QBO_CLIENT_ID": keys.client_id,
            "QBO_CLIENT_SECRET": keys.client_secret,
            "QBO_WEBHOOK_VERIFIER_TOKEN": keys.verifier_token,
            "QBO_STATE_SIGNING_KEY": keys.signing_key,
            "QBO_GATEWAY_URL": self.base,
            "QBO_REDIRECT_URI": f"{self.base}/oauth/callback",
            "QBO_AUTH_URL": auth_url,
            "QBO_TOKEN_URL": token_url,
            **(extra_env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: str = "/readyz", timeout: float = 60) -> Gateway:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [QBO_OPERATOR, "gateway", "--host", "127.0.0.1", "--port", str(self.port), *self.args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}{wait}", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gateway not ready within {timeout}s:\n{self.log()[-3000:]}")

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def local(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = httpx.get(f"{self.local}/metrics", timeout=10).text
        out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return out

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics().get((name, tuple(sorted(labels.items()))), 0.0)

    def connect_link(self, namespace: str, name: str, uid: str, expires: int | None = None) -> str:
        exp = int(time.time()) + 3600 if expires is None else expires
        return signing.connect_link(self.base, self.keys.signing_key, namespace, name, uid, exp)

    def post_webhook(
        self, body: bytes, signature: str | None = None, content_type: str = "application/json", **kw: Any
    ) -> httpx.Response:
        sig = signing.webhook_signature(self.keys.verifier_token, body) if signature is None else signature
        headers = {"content-type": content_type, "intuit-signature": sig}
        return httpx.post(f"{self.local}/webhooks/quickbooks", content=body, headers=headers, timeout=30, **kw)


# --- integrations on the control plane -------------------------------------------------------------


def new_company_id() -> str:
    return str(uuid.uuid4())


def create_integration(
    cluster: ControlPlane,
    namespace: str,
    name: str,
    company_name: str | None = "Acme Dispensary",
    token_secret_name: str | None = None,
    kubeconfig: Path | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"companyId": new_company_id()}
    if company_name:
        spec["companyName"] = company_name
    if token_secret_name:
        spec["tokenSecretName"] = token_secret_name
    obj = {
        "apiVersion": f"{GROUP}/v1alpha1",
        "kind": "QuickbooksIntegration",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }
    cluster.kubectl("create", "-f", "-", input=json.dumps(obj), kubeconfig=kubeconfig)
    return get_integration(cluster, namespace, name)


def get_integration(cluster: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = cluster.kubectl_json("get", "quickbooksintegration", name, "-n", namespace)
    return obj


def set_status(cluster: ControlPlane, namespace: str, name: str, status: dict[str, Any]) -> None:
    cluster.kubectl(
        "patch",
        "quickbooksintegration",
        name,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


def webhook_count(cluster: ControlPlane, namespace: str, name: str) -> int:
    status = get_integration(cluster, namespace, name).get("status") or {}
    return int((status.get("webhook") or {}).get("eventsSinceLastSync", 0))


def wait_for(predicate: Any, timeout: float = 30, interval: float = 0.2, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def secret_or_none(cluster: ControlPlane, namespace: str, name: str) -> dict[str, Any] | None:
    result = cluster.kubectl("get", "secret", name, "-n", namespace, "-o", "json", check=False)
    if result.returncode != 0:
        assert "NotFound" in result.stderr, result.stderr
        return None
    obj: dict[str, Any] = json.loads(result.stdout)
    return obj


def decoded(secret: dict[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


def events_text(cluster: ControlPlane, namespace: str) -> str:
    return cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout


# --- webhook bodies --------------------------------------------------------------------------------


def cloudevent(
    realm: str, entity_id: str, entity: str = "payment", verb: str = "created", **extra: Any
) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": extra.pop("id", str(uuid.uuid4())),
        "source": "intuit.test",
        "type": f"qbo.{entity}.{verb}.v1",
        "datacontenttype": "application/json",
        "time": "2026-11-24T17:03:11.179851517Z",
        "intuitentityid": entity_id,
        "intuitaccountid": realm,
        "data": {},
        **extra,
    }


def legacy(realm_entities: Iterable[tuple[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    return {
        "eventNotifications": [
            {"realmId": realm, "dataChangeEvent": {"entities": entities}} for realm, entities in realm_entities
        ]
    }


def legacy_entity(
    entity_id: str, name: str = "Payment", operation: str = "Create", when: str | None = None
) -> dict[str, Any]:
    return {"name": name, "id": entity_id, "operation": operation, "lastUpdated": when or "2026-11-24T17:03:11.000Z"}


def dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


# --- the Connect flow without a browser ----------------------------------------------------------------

STATE_COOKIE = "__Host-qbo_state"


def heading(html_text: str) -> str:
    match = re.search(r"<h1>(.*?)</h1>", html_text, re.S)
    return html.unescape(match.group(1)) if match else ""


def retry_link(html_text: str) -> str | None:
    match = re.search(r'<a class="button" href="([^"]+)">Start again</a>', html_text)
    return html.unescape(match.group(1)) if match else None


def press_connect(link: str) -> tuple[str, str]:
    """POST the Connect button: returns (Intuit authorization URL, state cookie value)."""
    resp = httpx.post(link, timeout=30)
    assert resp.status_code == 303, (resp.status_code, heading(resp.text))
    cookie = SimpleCookie()
    cookie.load(resp.headers["set-cookie"])
    morsel = cookie[STATE_COOKIE]
    assert morsel["secure"] and morsel["httponly"] and morsel["samesite"] == "Lax" and morsel["path"] == "/"
    return resp.headers["location"], morsel.value


def consent(auth_url: str, decision: str, realm: str | None = None) -> str:
    """Answer the sandbox's consent form as a person would; returns the redirect back to the gateway."""
    page = httpx.get(auth_url, timeout=30)
    assert page.status_code == 200 and 'name="decision"' in page.text, page.text[:500]
    query = dict(parse_qsl(urlsplit(auth_url).query))
    form = {k: query[k] for k in ("client_id", "redirect_uri", "response_type", "scope", "state")}
    form["decision"] = decision
    if realm is not None:
        form["realmId"] = realm
    resp = httpx.post(auth_url.split("?")[0], data=form, timeout=30)
    assert resp.status_code == 302, resp.text[:500]
    return resp.headers["location"]


def callback(url: str, cookie: str | None) -> httpx.Response:
    headers = {"Cookie": f"{STATE_COOKIE}={cookie}"} if cookie else {}
    return httpx.get(url, headers=headers, timeout=60)


def connect_via_http(link: str, realm: str, decision: str = "approve") -> httpx.Response:
    auth_url, cookie = press_connect(link)
    return callback(consent(auth_url, decision, realm), cookie)


def new_company(sb: Any, name: str = "Acme Dispensary LLC", payments: int = 0) -> str:
    """A sandbox company with a realm id no other test uses (the gateway watches every namespace)."""
    realm: str = sb.add_company(name, seed=secrets.randbelow(10**9), payments=payments)
    return realm


class TcpProxy:
    """A loopback TCP forwarder that can be cut and restored: the API server "goes away" for one
    client without touching the shared control plane."""

    def __init__(self, target_port: int, port: int | None = None) -> None:
        self.target_port = target_port
        self.port = port or free_port()
        self._server: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> TcpProxy:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()
        return self

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        """Refuse new connections and cut every open one."""
        if self._server is not None:
            self._server.close()
            self._server = None
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


def kubeconfig_via(cluster: ControlPlane, source: Path, port: int, dest: Path) -> Path:
    """A copy of `source` that reaches the API server through 127.0.0.1:`port`."""
    config = json.loads(source.read_text())
    for entry in config["clusters"]:
        entry["cluster"]["server"] = f"https://127.0.0.1:{port}"
    dest.write_text(json.dumps(config))
    dest.chmod(0o600)
    return dest


# --- a gateway ServiceAccount with exactly the documented permissions ---------------------------------

GATEWAY_ROLE_RULES: list[dict[str, Any]] = [
    {"apiGroups": [GROUP], "resources": ["quickbooksintegrations"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [GROUP], "resources": ["quickbooksintegrations/status"], "verbs": ["get", "patch"]},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "get", "update", "patch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
]


def gateway_service_account(cluster: ControlPlane, namespace: str, name: str = "qbo-gateway") -> Path:
    """ServiceAccount + Role (GATEWAY_ROLE_RULES, nothing more) + RoleBinding; returns its kubeconfig."""
    objects = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}},
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": name, "namespace": namespace},
                "rules": GATEWAY_ROLE_RULES,
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": name, "namespace": namespace},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
            },
        ],
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(objects))
    return cluster.service_account_kubeconfig(namespace, name)


def audit(cluster: ControlPlane, namespace: str, username: str) -> list[dict[str, Any]]:
    """The API server's audit events for one user in one namespace (a watch is logged when it starts)."""
    return [
        e
        for e in cluster.audit_events()
        if (e.get("stage") == "ResponseComplete" or (e.get("stage") == "ResponseStarted" and e.get("verb") == "watch"))
        and (e.get("user") or {}).get("username") == username
        and (e.get("objectRef") or {}).get("namespace") == namespace
    ]
