"""The sync end to end: a QuickbooksIntegration and its token Secret on the real control plane, the two
sandboxes in this event loop (or in threads), and `qbo-operator sync` run as a real process against all
three; a token source backed by the sandbox's real token endpoint; and the records Green Check must end up
holding, computed from the sandbox's raw Intuit JSON without the product's mapping code."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from pydantic import SecretStr

from qbo_operator.core import names, oauth
from qbo_operator.core.config import Settings
from qbo_operator.core.models import Tokens, parse_rfc3339, rfc3339
from qbo_operator.core.oauth import TokenResponse
from qbo_operator.harness.controlplane import KubeClients
from qbo_operator.harness.sandbox.greencheck import GreenCheckSandbox
from qbo_operator.harness.sandbox.qbo import QboSandbox
from qbo_operator.harness.sandbox.qbo_store import parse_time
from tests.support.kube import apply, conditions, get, qbi, set_status
from tests.support.objects import COMPANY_ID, decoded, integration, token_secret
from tests.support.paths import QBO_OPERATOR

QBO_CLIENT_ID = "ABsync-test-client-0001"
QBO_CLIENT_SECRET = "qbo-client-secret-3c1d9e8f7a6b"
REDIRECT_URI = "http://127.0.0.1:8000/oauth/callback"


def make_qbo(**kw: Any) -> QboSandbox:
    return QboSandbox(QBO_CLIENT_ID, QBO_CLIENT_SECRET, REDIRECT_URI, "verifier-token", **kw)


def qbo_settings(sb: QboSandbox) -> Settings:
    return Settings(
        qbo_client_id=QBO_CLIENT_ID,
        qbo_client_secret=SecretStr(QBO_CLIENT_SECRET),
        qbo_token_url=sb.token_url,
        qbo_api_url=sb.api_url,
    )


@dataclass
class SandboxTokens:
    """A TokenSource for client tests: refreshes through the sandbox's token endpoint (oauth.refresh)."""

    settings: Settings
    access: str
    refresh: str
    refreshes: int = 0
    rejected: list[str] = field(default_factory=list)

    @classmethod
    def issue(cls, sb: QboSandbox, realm: str) -> SandboxTokens:
        reply = sb.issue_tokens(realm)
        return cls(qbo_settings(sb), reply["access_token"], reply["refresh_token"])

    async def access_token(self) -> str:
        return self.access

    async def refreshed_access_token(self, rejected: str) -> str:
        self.rejected.append(rejected)
        reply = await asyncio.to_thread(oauth.refresh, self.settings, self.refresh)
        self.access, self.refresh = reply.access_token, reply.refresh_token
        self.refreshes += 1
        return self.access


def cents(value: Any) -> int:
    return int((Decimal(str(value)) * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def expected_records(sb: QboSandbox, realm: str, connected_at: datetime) -> dict[str, dict[str, Any]]:
    """external_id → {payment, invoice, amount (cash cents), credit (cents), doc_number, total, balance}: what
    Green Check must hold now, given the company's books as they are.

    Written from the sandbox's raw Intuit JSON without the product's mapping code: payments created at or
    after connectedAt and not voided; a line linked to an Invoice is owed money settled, any other link is a
    credit; the credit is taken by the invoices in the order the lines name them, each as much as it can,
    and what is left on each invoice is cash. A payment with no cash on any invoice delivers nothing."""
    company = sb.companies[realm]
    out: dict[str, dict[str, Any]] = {}
    for pay in company.payments.values():
        if parse_time(pay["MetaData"]["CreateTime"]) < connected_at:
            continue
        if str(pay.get("PrivateNote", "")).startswith("Voided") and Decimal(str(pay["TotalAmt"])) == 0:
            continue
        owed: dict[str, int] = {}
        credit = 0
        for line in pay.get("Line", []):
            kinds = {link["TxnType"] for link in line.get("LinkedTxn", [])}
            for link in line.get("LinkedTxn", []):
                if link["TxnType"] == "Invoice":
                    owed[link["TxnId"]] = owed.get(link["TxnId"], 0) + cents(line["Amount"])
            if kinds - {"Invoice"}:
                credit += cents(line["Amount"])
        shares: list[tuple[str, int, int]] = []
        for inv_id, amount in owed.items():
            take = min(credit, max(amount, 0))
            credit -= take
            shares.append((inv_id, amount - take, take))
        if all(cash == 0 for _, cash, _ in shares):
            continue
        for inv_id, cash, take in shares:
            invoice = company.invoices.get(inv_id)
            if invoice is None:
                continue
            out[f"qbo:{realm}:payment:{pay['Id']}:invoice:{inv_id}"] = {
                "payment": pay["Id"],
                "invoice": inv_id,
                "amount": cash,
                "credit": take,
                "doc_number": invoice.get("DocNumber"),
                "total": cents(invoice["TotalAmt"]),
                "balance": cents(invoice["Balance"]),
            }
    return out


def utc(text: str) -> datetime:
    return parse_rfc3339(text).astimezone(UTC)


# --- end to end --------------------------------------------------------------------------------

GC_CLIENT_ID = "gc-sync-client"
GC_CLIENT_SECRET = "gc-sync-secret-8a7b6c5d4e3f"
SP_ID = "sp-e2e"
CRB = COMPANY_ID
# Measures the sync's peak RSS: the wrapper's only child is the sync, so RUSAGE_CHILDREN is the sync's.
RSS_WRAPPER = (
    "import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
    "print(f'MAXRSS_KB {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}', file=sys.stderr); sys.exit(rc)"
)


@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("qbo-operator sync: error:")]

    @property
    def max_rss_kb(self) -> int:
        line = next(x for x in self.stderr.splitlines() if x.startswith("MAXRSS_KB "))
        return int(line.split()[1])


@dataclass
class E2E:
    cluster: KubeClients
    namespace: str
    qbo: QboSandbox
    gc: GreenCheckSandbox
    gc_url: str
    name: str = "acme"
    realm: str = ""
    connected_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    token_reply: dict[str, Any] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    qbo_api_url: str | None = None

    # --- set-up -------------------------------------------------------------------------------

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl("-n", self.namespace, *args, input=input, check=check)

    def create_integration(
        self,
        *,
        suspend: bool = False,
        with_secret: bool = True,
        delivery: dict[str, Any] | None = None,
        **secret_over: Any,
    ) -> None:
        """The CR (status Connected, realm, connectedAt) and a token Secret from a real sandbox grant."""
        spec = {"companyId": CRB, "companyName": "Acme Dispensary", "suspend": suspend, "delivery": delivery}
        apply(self.cluster, integration(self.namespace, self.name, **spec))
        self.token_reply = self.qbo.issue_tokens(self.realm)
        if with_secret:
            self.write_secret(**secret_over)
        status = {"phase": "Connected", "realmId": self.realm, "connectedAt": rfc3339(self.connected_at)}
        self.patch_status(status)

    def tokens(self, **over: Any) -> Tokens:
        now = datetime.now(UTC)
        tokens = TokenResponse.model_validate(self.token_reply).to_tokens(self.realm, self.connected_at, now)
        return tokens.model_copy(update=over)

    def write_secret(self, **over: Any) -> None:
        """The integration's token Secret (the operator's, owned by its uid) holding these tokens, `over`
        changed: as the gateway fills it after a Connect."""
        apply(self.cluster, token_secret(self.namespace, self.name, self.tokens(**over)))

    def patch_status(self, status: dict[str, Any]) -> None:
        set_status(self.cluster, self.namespace, self.name, status)

    def add_payments(self, n: int, seed: int) -> dict[str, dict[str, Any]]:
        """`n` new payments in the company; returns the records Green Check must then hold."""
        self.qbo.generate_payments(self.realm, n, seed=seed)
        return expected_records(self.qbo, self.realm, self.connected_at)

    def expire_access_token(self) -> None:
        """The Secret's access token looks expired, so the next sync refreshes first."""
        self.write_secret(expires_at=datetime.now(UTC) - timedelta(minutes=1))

    # --- reading ------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return dict(qbi(self.cluster, self.namespace, self.name).get("status") or {})

    def condition(self, type_: str) -> dict[str, Any] | None:
        return conditions({"status": self.status()}).get(type_)

    def secret_data(self) -> dict[str, str]:
        secret = get(self.cluster, "secret", self.namespace, names.token_secret_name(self.name))
        assert secret is not None, f"{self.namespace}/{self.name} has no token Secret"
        return decoded(secret)

    def events(self) -> list[dict[str, Any]]:
        """Every Event in the namespace (the CR's, the Secret's, the Job's)."""
        return list(self.cluster.kubectl_json("get", "events", "-n", self.namespace)["items"])

    def secret_values(self) -> list[str]:
        """Every secret value that must never show up in output, status or Events."""
        values = [QBO_CLIENT_SECRET, GC_CLIENT_SECRET, self.token_reply.get("access_token", ""),
                  self.token_reply.get("refresh_token", "")]  # fmt: skip
        try:
            data = self.secret_data()
            values += [data["access_token"], data["refresh_token"]]
        except Exception:  # noqa: S110 - no Secret in this test
            pass
        values += list(self.gc._tokens)  # Green Check access tokens issued to the sync
        return [v for v in values if v]

    def assert_no_secrets_leaked(self) -> None:
        haystacks = [*self.outputs, json.dumps(self.status()), json.dumps(self.events())]
        for value in self.secret_values():
            for text in haystacks:
                assert value not in text, "a secret value leaked into output, status or an Event"

    # --- running ------------------------------------------------------------------------------

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": os.environ.get("HOME", "/tmp"),
            "KUBECONFIG": str(self.cluster.kubeconfig),
            "QBO_CLIENT_ID": QBO_CLIENT_ID,
            "QBO_CLIENT_SECRET": QBO_CLIENT_SECRET,
            "QBO_TOKEN_URL": self.qbo.token_url,
            "QBO_API_URL": self.qbo_api_url or self.qbo.api_url,
            "GREENCHECK_API_URL": self.gc_url,
            "GREENCHECK_CLIENT_ID": GC_CLIENT_ID,
            "GREENCHECK_CLIENT_SECRET": GC_CLIENT_SECRET,
            "GREENCHECK_SERVICE_PROVIDER_ID": SP_ID,
            "JOB_NAME": "acme-qbo-sync-29123456",
            "QBO_THROTTLE_WAIT_SECONDS": "0.5",
            "QBO_SYNC_BACKOFF_SECONDS": "0.05",
            "QBO_SYNC_BACKOFF_MAX_SECONDS": "0.2",
            "QBO_SYNC_RETRIES": "2",
        }
        env.update(extra)
        return env

    def command(self, *args: str) -> list[str]:
        return [QBO_OPERATOR, "sync", "--namespace", self.namespace, "--name", self.name, *args]

    async def start(self, *args: str, measure_rss: bool = False, **env: str) -> asyncio.subprocess.Process:
        cmd = self.command(*args)
        if measure_rss:
            cmd = [sys.executable, "-c", RSS_WRAPPER, *cmd]
        return await asyncio.create_subprocess_exec(
            *cmd, env=self.env(**env), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )

    async def finish(self, proc: asyncio.subprocess.Process, timeout: float = 300) -> Run:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
        run = Run(proc.returncode if proc.returncode is not None else -1, out.decode(), err.decode())
        self.outputs += [run.stdout, run.stderr]
        return run

    async def sync(self, *args: str, measure_rss: bool = False, **env: str) -> Run:
        return await self.finish(await self.start(*args, measure_rss=measure_rss, **env))


# --- the books and Green Check -------------------------------------------------------------


def mismatches(e: E2E, expected: dict[str, dict[str, Any]] | None = None) -> list[str]:
    """Where Green Check's current records differ from the projection of the books (missing, unexpected,
    misstated: cash, credit, invoice number, total, open balance)."""
    want = expected_records(e.qbo, e.realm, e.connected_at) if expected is None else expected
    held = e.gc.records.get(CRB, {})
    out = [f"missing {eid}" for eid in sorted(set(want) - set(held))]
    out += [f"unexpected {eid}" for eid in sorted(set(held) - set(want))]
    for eid in sorted(set(want) & set(held)):
        rec, w = held[eid], want[eid]
        got = (rec["payment"]["id"], rec["invoice"]["id"], rec["payment"]["amount"], rec["payment"]["credit_applied"],
               rec["invoice"]["number"], rec["invoice"]["total"], rec["invoice"]["open_balance"])  # fmt: skip
        if got != (w["payment"], w["invoice"], w["amount"], w["credit"], w["doc_number"], w["total"], w["balance"]):
            out.append(f"misstated {eid}: {got} != {w}")
    return out


def assert_exact(e: E2E, expected: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Green Check's current records are exactly the projection of the books (now, or `expected`)."""
    want = expected_records(e.qbo, e.realm, e.connected_at) if expected is None else expected
    wrong = mismatches(e, want)
    assert not wrong, wrong[:5]
    return want


@asynccontextmanager
async def sandboxes(
    cluster: KubeClients,
    namespace: str,
    *,
    name: str = "acme",
    payments: int = 120,
    history_days: int = 20,
    seed: int = 1,
    **qbo_kw: Any,
) -> AsyncIterator[E2E]:
    """Both sandboxes serving in this loop, one company with `payments` of history; connectedAt is the
    CreateTime of the middle history payment (the integration is not created yet)."""
    qbo = make_qbo(**qbo_kw)
    realm = qbo.add_company("Acme Dispensary", seed=seed, payments=payments, history_days=history_days)
    history = sorted(parse_time(p["MetaData"]["CreateTime"]) for p in qbo.companies[realm].payments.values())
    connected_at = history[len(history) // 2].astimezone(UTC) if history else datetime.now(UTC)
    gc = GreenCheckSandbox(GC_CLIENT_ID, GC_CLIENT_SECRET, SP_ID)
    async with qbo.serve(), gc.serve() as gc_url:
        yield E2E(cluster, namespace, qbo, gc, gc_url, name=name, realm=realm, connected_at=connected_at)
