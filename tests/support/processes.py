"""The operator and the gateway under test as real processes (`qbo-operator run|gateway`) on 127.0.0.1,
their output kept in a file, their /metrics read as the Prometheus text they serve."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from qbo_operator.core import signing
from qbo_operator.harness.controlplane import free_port
from qbo_operator.harness.sandbox.qbo import QboSandbox
from tests.support.paths import QBO_OPERATOR
from tests.support.wait import wait_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_metrics(text: str) -> Samples:
    """(sample name, sorted labels) → value."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


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
                    QBO_OPERATOR,
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

    def metrics(self) -> Samples:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            return parse_metrics(resp.read().decode())

    def samples(self, metric: str, /, **labels: str) -> list[float]:
        want = set(labels.items())
        return [v for (n, lbl), v in self.metrics().items() if n == metric and want <= set(lbl)]

    def writes(self, **labels: str) -> float:
        """The operator's own count of API writes (qbo_operator_api_writes_total, all kinds and verbs unless
        `labels` narrow them)."""
        return sum(self.samples("qbo_operator_api_writes_total", **labels))


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
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [QBO_OPERATOR, "gateway", "--host", "127.0.0.1", "--port", str(self.port), *self.args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            wait_for(f"the gateway's {wait}", lambda: self._ready(wait), timeout=timeout, interval=0.1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}:\n{self.log()[-3000:]}") from None
        return self

    def _ready(self, path: str) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"gateway exited with {self.proc.returncode}")
        try:
            return httpx.get(f"{self.local}{path}", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

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

    def metrics(self) -> Samples:
        return parse_metrics(httpx.get(f"{self.local}/metrics", timeout=10).text)

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


GatewayFactory = Callable[..., Gateway]


@dataclass
class Stack:
    """A QBO sandbox (in a thread) and a gateway process wired to it, as Intuit and the gateway are."""

    sb: QboSandbox
    sb_url: str
    gw: Gateway
    keys: Keys


StackFactory = Callable[..., Stack]
