"""The operator under test as a real process, plus small helpers for the operator tests."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import yaml
from prometheus_client.parser import text_string_to_metric_families

from qbo_operator.core import names
from qbo_operator.core.models import Tokens
from qbo_operator.core.oauth import TokenResponse
from qbo_operator.harness.controlplane import ControlPlane, free_port
from qbo_operator.harness.sandbox.qbo import QboSandbox

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin"
COMPANY_ID = "5f0c3a2e-8d1b-4c7e-9a61-2b7f3c9d4e10"
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}
T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.2) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what` (and the last value) otherwise."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


class Operator:
    """`qbo-operator run` as a subprocess under a ServiceAccount kubeconfig, its output kept in a file."""

    def __init__(self, kubeconfig: Path, env: Mapping[str, str], log: Path) -> None:
        self.kubeconfig = kubeconfig
        self.env = dict(env)
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.health_port = 0
        self.metrics_port = 0
        self.args: list[str] = []

    def start(self, *args: str) -> Operator:
        self.args = list(args) or ["--all-namespaces"]
        self.health_port, self.metrics_port = free_port(), free_port()
        env = {**os.environ, **self.env, "KUBECONFIG": str(self.kubeconfig)}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    str(VENV_BIN / "qbo-operator"),
                    "run",
                    "--standalone",
                    *self.args,
                    "--bind-address=127.0.0.1",
                    f"--health-port={self.health_port}",
                    f"--metrics-port={self.metrics_port}",
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                process_group=0,
            )
        wait_for("the operator's /healthz", self._healthy, timeout=60)
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"the operator exited with {self.proc.returncode}:\n{self.output()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/healthz", timeout=2) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc is None:
            return 0
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            code = self.proc.wait()
        self.proc = None
        return code

    def restart(self, sig: int = signal.SIGTERM) -> Operator:
        self.stop(sig)
        return self.start(*self.args)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return out

    def samples(self, metric: str, /, **labels: str) -> list[float]:
        want = set(labels.items())
        return [v for (n, lbl), v in self.metrics().items() if n == metric and want <= set(lbl)]

    def writes(self) -> float:
        """The operator's own count of API writes (qbo_operator_api_writes_total, all kinds and verbs)."""
        return sum(self.samples("qbo_operator_api_writes_total"))


def audit_writes(cluster: ControlPlane, username: str, since: datetime, namespace: str | None = None) -> list[str]:
    """Write requests `username` made since `since`, from the API server's audit log."""
    out = []
    for event in cluster.audit_events():
        if event.get("stage") != "ResponseComplete" or event.get("verb") not in WRITE_VERBS:
            continue
        if (event.get("user") or {}).get("username") != username:
            continue
        stamp = datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00"))
        if stamp < since:
            continue
        ref = event.get("objectRef") or {}
        if namespace is not None and ref.get("namespace") != namespace:
            continue
        out.append(
            f"{event['verb']} {ref.get('resource')}/{ref.get('subresource') or ''} {ref.get('namespace')}/"
            f"{ref.get('name')} -> {(event.get('responseStatus') or {}).get('code')}"
        )
    return out


# --- objects -----------------------------------------------------------------------------------


def integration(namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"companyId": COMPANY_ID, "companyName": f"{name} Co", **spec},
    }


def issued_tokens(sb: QboSandbox, realm: str, **over: Any) -> Tokens:
    """Tokens the QBO sandbox really issued for `realm` (a live grant), as the gateway would store them."""
    now = datetime.now(UTC).replace(microsecond=0)
    tokens = TokenResponse.model_validate(sb.issue_tokens(realm)).to_tokens(realm, now, now)
    return tokens.model_copy(update=over) if over else tokens


def fake_tokens(realm: str, **over: Any) -> Tokens:
    now = datetime.now(UTC).replace(microsecond=0)
    values: dict[str, Any] = {
        "access_token": f"at-{realm}-{now.timestamp():.0f}-opaque-value",
        "refresh_token": f"rt-{realm}-{now.timestamp():.0f}-opaque-value",
        "realm_id": realm,
        "scope": names.ACCOUNTING_SCOPE,
        "connected_at": now,
        "expires_at": now + timedelta(hours=1),
        "refresh_token_expires_at": now + timedelta(days=100),
        "refresh_token_hard_expires_at": now + timedelta(days=1800),
        "refreshed_at": now,
        **over,
    }
    return Tokens(**values)


def token_secret(
    namespace: str,
    integration_name: str,
    tokens: Tokens | None,
    data: dict[str, str] | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """The token Secret as the gateway writes it (DESIGN §3), without an owner: the operator adopts it."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": name or names.token_secret_name(integration_name),
            "namespace": namespace,
            "labels": {names.MANAGED_BY_LABEL: names.MANAGED_BY, names.INTEGRATION_LABEL: integration_name},
        },
        "data": data if data is not None else (tokens.to_secret_data() if tokens else {}),
    }


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def apply(cluster: ControlPlane, *objects: Mapping[str, Any]) -> None:
    cluster.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(o) for o in objects))


def get(cluster: ControlPlane, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    result = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    if result.returncode != 0:
        if "NotFound" in result.stderr or "not found" in result.stderr:
            return None
        raise AssertionError(result.stderr)
    obj: dict[str, Any] = json.loads(result.stdout)
    return obj


def qbi(cluster: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    obj = get(cluster, names.PLURAL, namespace, name)
    assert obj is not None, f"{namespace}/{name} is gone"
    return obj


def conditions(obj: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def settled(cluster: ControlPlane, namespace: str, name: str, phase: str, **cond: str) -> dict[str, Any] | None:
    """The CR once the operator reconciled its current generation into `phase` (and condition reasons)."""
    obj = get(cluster, names.PLURAL, namespace, name)
    if obj is None:
        return None
    status = obj.get("status") or {}
    if status.get("phase") != phase or status.get("observedGeneration") != obj["metadata"]["generation"]:
        return None
    conds = conditions(obj)
    for type_, reason in cond.items():
        if (conds.get(type_) or {}).get("reason") != reason:
            return None
    return obj


def events(cluster: ControlPlane, namespace: str, name: str) -> list[dict[str, Any]]:
    items = cluster.kubectl_json("get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}")
    return list(items["items"])


def jobs(cluster: ControlPlane, namespace: str) -> list[dict[str, Any]]:
    return list(cluster.kubectl_json("get", "jobs", "-n", namespace)["items"])


def render_chart_rbac(cluster: ControlPlane, namespace: str) -> tuple[list[dict[str, Any]], str]:
    """The chart's operator ServiceAccount and RBAC (`helm template`), and the ServiceAccount's name."""
    rendered = cluster.helm(
        "template",
        "qbo",
        str(ROOT / "charts" / "qbo-operator"),
        "--namespace",
        namespace,
        "--show-only",
        "templates/operator-rbac.yaml",
        "--show-only",
        "templates/serviceaccounts.yaml",
    ).stdout
    docs = [
        d
        for d in yaml.safe_load_all(rendered)
        if d and (d["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == "operator"
    ]
    accounts = [d for d in docs if d["kind"] == "ServiceAccount"]
    assert len(accounts) == 1, [d["metadata"]["name"] for d in docs]
    for doc in docs:
        if doc["kind"] == "ServiceAccount":
            doc["metadata"]["namespace"] = namespace
    return docs, accounts[0]["metadata"]["name"]


def scan_for_secrets(text: str, secrets: Iterable[str]) -> list[str]:
    return [s for s in secrets if s and s in text]


def names_of(items: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    for item in items:
        yield item["metadata"]["name"]
