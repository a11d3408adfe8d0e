"""Sync efficiency (measure 1) and sync under Intuit's throttle (measure 2).

Our sync runs as the real `qbo-operator sync` process against a real control plane: the
QuickbooksIntegration CR (real CRD) and its token Secret, obtained through the QBO sandbox's OAuth flow
(consent → code → `qbo_operator.core.oauth.exchange_code`, then a refresh with the same client). The QBO
and Green Check sandboxes are their own processes (`qbo-operator sandbox …`, driven through their
control APIs), so the sync's peak RSS, read with wait4(2), is the sync's alone.

Data: the sandbox's seeded generator (invoices with several lines, split, partial and over-payments,
credit memos, voids, sales receipts). New payments arrive in chunks of 1,000, an hour of sandbox time
apart, after the company connected; the counts that the baselines need (payments in the window,
distinct linked invoices, expected records) are read from the sandbox's control API, which is not
metered. Request counts come from the sandboxes' own per-realm counters, never from the client."""

from __future__ import annotations

import json
import math
import secrets
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import yaml
from pydantic import SecretStr

from bench import (
    BenchError,
    Child,
    Measure,
    Target,
    Ticker,
    child_env,
    mib,
    python_module_argv,
    qbo_operator_argv,
    say,
    skipped,
    spawn,
    wait_http,
)
from bench.naive_peer import PeerSpec
from bench.sync_census import CDC_CAP, PAGE, Census, count_payments, finish, payments_to_read, to_read
from bench.sync_rows import kinds, quiet_measures, size_measures
from qbo_operator.core import names, oauth, token_secret
from qbo_operator.core.config import Settings
from qbo_operator.core.models import parse_rfc3339, rfc3339
from qbo_operator.core.oauth import TokenResponse
from qbo_operator.harness.controlplane import ControlPlane, free_port
from qbo_operator.harness.localstack import Credentials, LoopbackUrl
from qbo_operator.sync.qbo import qbo_time

THROTTLED_SIZE = 100_000  # the size measure 2 runs at (full mode); its skipped rows are named after it
CHUNK = 1_000  # new payments per generator call
CHUNK_GAP_SECONDS = 3_600  # sandbox time between chunks: a busy wholesaler, not 1,000 payments a second
HISTORY = 400  # payments before the connection (never synced; they give the company its customers)
NAMESPACE = "bench-sync"
API_KINDS = ("query", "read", "cdc")  # Accounting API calls: what Intuit meters (CorePlus)
INTUIT_PER_MINUTE = 500
INTUIT_PER_SECOND = 10
INTUIT_CONCURRENT = 10


# --- the world: control plane, CRD, sandboxes ---------------------------------------------------


@dataclass
class Company:
    """A sandbox company that connected and then received `size` payments; `census` is its first night."""

    size: int
    realm_id: str
    connected_at: datetime
    tokens: TokenResponse
    census: Census


class SyncWorld:
    """The sandboxes as processes plus the control plane the sync reads its CR and Secret from."""

    def __init__(self, cp: ControlPlane, workdir: Path) -> None:
        self.cp = cp
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.creds = Credentials()
        self.redirect_uri = "http://127.0.0.1:9/oauth/callback"  # the code is exchanged here, never followed
        self.qbo_port = free_port()
        self.gc_port = free_port()
        self.qbo: Child | None = None
        self.gc: Child | None = None
        self.http = httpx.Client(timeout=600)
        self.companies: dict[int, Company] = {}
        self._gc_generation = 0

    qbo_url = LoopbackUrl("qbo_port")
    gc_url = LoopbackUrl("gc_port")

    def sandbox_env(self) -> dict[str, str]:
        c = self.creds
        return child_env(
            {
                "QBO_CLIENT_ID": c.qbo_client_id,
                "QBO_CLIENT_SECRET": c.qbo_client_secret,
                "QBO_REDIRECT_URI": self.redirect_uri,
                "QBO_WEBHOOK_VERIFIER_TOKEN": c.webhook_verifier_token,
                "GREENCHECK_CLIENT_ID": c.greencheck_client_id,
                "GREENCHECK_CLIENT_SECRET": c.greencheck_client_secret,
                "GREENCHECK_SERVICE_PROVIDER_ID": c.service_provider_id,
            }
        )

    def sync_env(self, job_name: str) -> dict[str, str]:
        """What the CronJob's pod gets (docs/design.md §6), pointed at the sandboxes."""
        c = self.creds
        return child_env(
            {
                "KUBECONFIG": str(self.cp.kubeconfig),
                # The bench's integrations are sandbox ones: the sync uses the sandbox app's keys.
                "QBO_SANDBOX_CLIENT_ID": c.qbo_client_id,
                "QBO_SANDBOX_CLIENT_SECRET": c.qbo_client_secret,
                "QBO_TOKEN_URL": f"{self.qbo_url}/oauth2/v1/tokens/bearer",
                "QBO_API_URL": self.qbo_url,
                "GREENCHECK_API_URL": self.gc_url,
                "GREENCHECK_CLIENT_ID": c.greencheck_client_id,
                "GREENCHECK_CLIENT_SECRET": c.greencheck_client_secret,
                "GREENCHECK_SERVICE_PROVIDER_ID": c.service_provider_id,
                "JOB_NAME": job_name,
                "QBO_SYNC_TRIGGER": "Manual",
            }
        )

    @property
    def settings(self) -> Settings:
        c = self.creds
        return Settings(
            qbo_client_id=c.qbo_client_id,
            qbo_client_secret=SecretStr(c.qbo_client_secret),
            qbo_redirect_uri=self.redirect_uri,
            qbo_token_url=f"{self.qbo_url}/oauth2/v1/tokens/bearer",
        )

    def start(self) -> None:
        if self.qbo is not None:
            return
        say("sync: starting the QBO and Green Check sandboxes (separate processes) and the CRD")
        crds = sorted((Path(__file__).resolve().parents[1] / "crds").glob("*.yaml"))
        self.cp.apply_crds(*crds)
        self.cp.kubectl("create", "namespace", NAMESPACE, check=False)
        self.qbo = spawn(
            "qbo-sandbox",
            qbo_operator_argv(
                "sandbox", "qbo", "--port", str(self.qbo_port), "--company", "Bench Warm-up",
                "--history", "0", "--no-throttle",
            ),
            self.sandbox_env(),
            self.logs,
        )  # fmt: skip
        self.start_gc()
        wait_http(self.qbo, f"{self.qbo_url}/_sandbox/state")

    def start_gc(self) -> None:
        """A fresh Green Check sandbox (its records live in memory; a fresh one per run bounds that)."""
        if self.gc is not None:
            self.gc.stop()
        self._gc_generation += 1
        self.gc = spawn(
            f"greencheck-sandbox-{self._gc_generation}",
            qbo_operator_argv("sandbox", "greencheck", "--port", str(self.gc_port)),
            self.sandbox_env(),
            self.logs,
        )
        wait_http(self.gc, f"{self.gc_url}/_sandbox/state")

    def stop(self) -> None:
        for child in (self.gc, self.qbo):
            if child is not None:
                child.stop()
        self.http.close()

    # --- control APIs ---------------------------------------------------------------------------

    def _qbo(self, method: str, path: str, body: Any = None) -> Any:
        resp = self.http.request(method, f"{self.qbo_url}/_sandbox{path}", json=body)
        if resp.status_code >= 300:
            raise BenchError(f"QBO sandbox {method} {path}: HTTP {resp.status_code} {resp.text[:300]}")
        return resp.json()

    def control(self, method: str, path: str, body: Any = None) -> Any:
        """The QBO sandbox's control API (`/_sandbox…`, not metered), for the other suites."""
        return self._qbo(method, path, body)

    def requests_by_realm(self) -> dict[str, Counter[str]]:
        """Every realm's request counters, from one read of the sandbox's state."""
        return {str(r["realmId"]): Counter(r["requests"]) for r in self._qbo("GET", "/state")["realms"]}

    def sandbox_now(self) -> datetime:
        return parse_rfc3339(self._qbo("GET", "/state")["now"])

    def advance(self, seconds: int) -> None:
        self._qbo("POST", "/clock", {"advance": seconds})

    def throttle(self, enabled: bool) -> None:
        self._qbo("POST", "/throttle", {"enabled": enabled} if not enabled else {
            "enabled": True, "per_minute": INTUIT_PER_MINUTE, "per_second": INTUIT_PER_SECOND,
            "concurrent": INTUIT_CONCURRENT,
        })  # fmt: skip

    def realm_requests(self, realm_id: str) -> Counter[str]:
        for realm in self._qbo("GET", "/state")["realms"]:
            if realm["realmId"] == realm_id:
                return Counter(realm["requests"])
        raise BenchError(f"realm {realm_id} is not in the QBO sandbox")

    def gc_state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.http.get(f"{self.gc_url}/_sandbox/state").raise_for_status().json()
        return state

    def issue_tokens(self, realm_id: str) -> TokenResponse:
        """A separate grant for a baseline client (the sandbox's consent+exchange in one call)."""
        return TokenResponse.model_validate(self._qbo("POST", f"/companies/{realm_id}/tokens"))

    # --- a company that connects, then gets paid ---------------------------------------------------

    def company(self, size: int) -> Company:
        if size in self.companies:
            return self.companies[size]
        self.start()
        say(f"sync: generating a company with {size:,} new payments (seeded)")
        created = self._qbo(
            "POST", "/companies", {"name": f"Bench {size} Wholesale", "seed": size, "payments": HISTORY}
        )
        realm = str(created["realmId"])
        connected_at = self.sandbox_now().replace(microsecond=0)
        location = self._qbo("POST", "/approve", {"state": "bench", "realmId": realm})["location"]
        code = parse_qs(urlparse(location).query)["code"][0]
        tokens = oauth.exchange_code(self.settings, code)
        done = 0
        chunk_no = 0
        while done < size:
            n = min(CHUNK, size - done)
            self._qbo("POST", "/clock", {"advance": CHUNK_GAP_SECONDS})
            self._qbo("POST", f"/companies/{realm}/payments", {"n": n, "seed": size * 10_000 + chunk_no})
            done += n
            chunk_no += 1
            if chunk_no % 10 == 0 and done < size:
                say(f"sync:   {done:,}/{size:,} payments generated")
        # Hours of sandbox time passed: refresh once, as the sync would, so the Secret holds a live token.
        tokens = oauth.refresh(self.settings, tokens.refresh_token)
        company = Company(size, realm, connected_at, tokens, self.census(realm, connected_at, connected_at))
        if company.census.payments != size:
            raise BenchError(f"the window holds {company.census.payments} payments, expected {size}")
        self.companies[size] = company
        return company

    def census(self, realm_id: str, connected_at: datetime, since: datetime) -> Census:
        """The night's counts (`bench.sync_census`): payments from the control API, invoices read on the bench's
        own grant, outside any measured run (the per-run request counts are differences around each run)."""
        census = Census(since, connected_at)
        payments: list[dict[str, Any]] = []
        while True:
            page = self._qbo("GET", f"/companies/{realm_id}/payments?offset={len(payments)}&limit=5000")
            payments += page["payments"]
            if not page["payments"] or len(payments) >= page["total"]:
                break
        scope = count_payments(census, payments)
        token = self.issue_tokens(realm_id).access_token
        changed = self._invoice_pages(realm_id, token, f"WHERE Metadata.LastUpdatedTime >= '{qbo_time(since)}'")
        census.changed_invoices = list(changed)
        census.payment_reads = payments_to_read(census, changed.values())
        census.deleted_payments = self._deleted_payments(realm_id, token, since)
        census.linked_invoices, census.invoice_reads = to_read(scope, changed)
        invoices = dict(changed)
        for start in range(0, len(census.invoice_reads), PAGE):
            ids = ",".join(f"'{i}'" for i in census.invoice_reads[start : start + PAGE])
            invoices.update(self._invoice_pages(realm_id, token, f"WHERE Id IN ({ids})"))
        finish(census, scope, invoices)
        return census

    def _api(self, realm_id: str, token: str, method: str, path: str, **kw: Any) -> dict[str, Any]:
        resp = self.http.request(
            method, f"{self.qbo_url}/v3/company/{realm_id}{path}",
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json",
                     "Content-Type": "application/text"}, **kw,
        )  # fmt: skip
        if resp.status_code != 200:
            raise BenchError(f"QBO sandbox {method} {path}: HTTP {resp.status_code} {resp.text[:300]}")
        body: dict[str, Any] = resp.json()
        return body

    def _deleted_payments(self, realm_id: str, token: str, since: datetime) -> int:
        """Payments deleted since `since`: CDC's stubs (no query shows a deleted row), paged forward from the
        newest change of each full answer."""
        deleted: set[str] = set()
        at = since
        while True:
            params = {"entities": "Payment", "changedSince": qbo_time(at), "minorversion": names.QBO_MINOR_VERSION}
            answer = self._api(realm_id, token, "GET", "/cdc", params=params)["CDCResponse"][0]["QueryResponse"]
            rows = [r for part in answer for r in part.get("Payment", [])]
            deleted.update(str(r["Id"]) for r in rows if r.get("status") == "Deleted")
            newest = max((parse_rfc3339(r["MetaData"]["LastUpdatedTime"]) for r in rows), default=at)
            if len(rows) < CDC_CAP:
                return len(deleted)
            if newest <= at:
                raise BenchError(f"more than {CDC_CAP} payments changed at {at}: the census cannot page CDC past it")
            at = newest

    def _invoice_pages(self, realm_id: str, token: str, where: str) -> dict[str, dict[str, Any]]:
        """Invoices matching `where`, paged by Id (a stable order whatever the sandbox does with ties)."""
        found: dict[str, dict[str, Any]] = {}
        while True:
            statement = f"SELECT * FROM Invoice {where} ORDERBY Id STARTPOSITION {len(found) + 1} MAXRESULTS {PAGE}"  # noqa: S608
            body = self._api(
                realm_id, token, "POST", "/query", params={"minorversion": names.QBO_MINOR_VERSION},
                content=statement.encode(),
            )  # fmt: skip
            rows = body["QueryResponse"].get("Invoice", [])
            found.update((str(r["Id"]), r) for r in rows)
            if len(rows) < PAGE:
                return found

    # --- one integration (CR + token Secret) -----------------------------------------------------

    def remove_integration(self, name: str) -> None:
        """Delete a measured integration, so later suites (the operator's) do not reconcile it."""
        self.cp.kubectl("delete", names.PLURAL, name, "-n", NAMESPACE, "--wait=false", check=False)
        self.cp.kubectl("delete", "secret", names.token_secret_name(name), "-n", NAMESPACE, check=False)

    def integration(self, name: str, company: Company, tokens: TokenResponse) -> str:
        """Apply the CR and its token Secret; returns the CR's companyId (the Green Check CRB)."""
        crb = str(uuid.uuid4())
        stored = tokens.to_tokens(company.realm_id, company.connected_at, datetime.now(UTC))
        docs = [
            {
                "apiVersion": names.API_VERSION,
                "kind": names.KIND,
                "metadata": {"name": name, "namespace": NAMESPACE},
                "spec": {"companyId": crb, "companyName": f"Bench {company.size}", "environment": "sandbox"},
            },
            token_secret.manifest(NAMESPACE, name, stored.to_secret_data()),
        ]
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", dir=self.workdir, delete=False) as fh:
            yaml.safe_dump_all(docs, fh)
        Path(fh.name).chmod(0o600)
        try:
            self.cp.kubectl("apply", "-f", fh.name)
        finally:
            Path(fh.name).unlink()
        return crb


# --- running one client ---------------------------------------------------------------------------


@dataclass
class RunResult:
    client: str
    seconds: float
    qbo_requests: int
    qbo_throttled: int
    qbo_token_calls: int
    greencheck_requests: int
    records_held: int  # records Green Check holds for the client's CRB after the run
    maxrss_kb: int | None
    exit_code: int
    last_sync: dict[str, Any] = field(default_factory=dict)
    qbo_kinds: dict[str, int] = field(default_factory=dict)  # query / read / cdc
    record_results: dict[str, int] = field(default_factory=dict)  # Green Check's created / updated / … of the run
    crb: str = ""
    objects_read: dict[str, int] = field(default_factory=dict)  # the floor reader's: payments, deleted, invoices


def _last_line(child: Child, prefix: str) -> str:
    lines = [ln for ln in child.tail(20_000).splitlines() if prefix in ln]
    return lines[-1].strip() if lines else ""


def _wait_child(child: Child, what: str, progress_prefix: str = "progress:") -> tuple[int, float]:
    """wait4 in a thread (peak RSS of this child only) while a ticker relays its progress lines."""
    box: dict[str, int] = {}
    started = time.perf_counter()

    def wait() -> None:
        box["rc"] = child.wait_rusage()

    waiter = threading.Thread(target=wait, daemon=True)

    def message() -> str:
        line = _last_line(child, progress_prefix)
        return f"{what}: {time.perf_counter() - started:.0f}s" + (f" — {line[-160:]}" if line else "")

    with Ticker(message, every=20.0):
        waiter.start()
        waiter.join()
    return box["rc"], time.perf_counter() - started


def _requests_delta(before: Counter[str], after: Counter[str]) -> tuple[int, int, int]:
    api = sum(after[k] - before[k] for k in API_KINDS)
    return api, after["throttled"] - before["throttled"], after["token"] - before["token"]


def _gc_delta(before: dict[str, Any], after: dict[str, Any]) -> tuple[int, dict[str, int]]:
    """Green Check requests (token + ingest) and record results between two control-API states."""
    requests = sum(
        after["requests"].get(k, 0) - before["requests"].get(k, 0) for k in ("auth_token", "invoice_payments")
    )
    results = {k: v - before["results"].get(k, 0) for k, v in after["results"].items()}
    return requests, {k: v for k, v in results.items() if v}


def run_our_sync(
    world: SyncWorld, company: Company, name: str, tokens: TokenResponse | None = None, *, keep: bool = False
) -> RunResult:
    """One `qbo-operator sync` on a new integration (and a fresh Green Check); `keep` leaves the integration
    in place for a second night (`run_again`)."""
    crb = world.integration(name, company, tokens or company.tokens)
    world.start_gc()
    result = _run_sync_process(world, company, name, crb, f"{company.size:,} payments")
    if not keep:
        world.remove_integration(name)
    return result


def run_again(world: SyncWorld, company: Company, name: str, crb: str, watermark: datetime) -> RunResult:
    """A night with no change since the last one: the integration's watermark is set to `watermark` (the
    newest change, where a night a day later would have left it), then the sync runs once more."""
    patch = json.dumps({"status": {"syncWatermark": rfc3339(watermark)}})
    world.cp.kubectl("patch", names.PLURAL, name, "-n", NAMESPACE, "--subresource=status", "--type=merge", "-p", patch)
    try:
        return _run_sync_process(world, company, name, crb, "a night with no changes")
    finally:
        world.remove_integration(name)


def _run_sync_process(world: SyncWorld, company: Company, name: str, crb: str, what: str) -> RunResult:
    before, gc_before = world.realm_requests(company.realm_id), world.gc_state()
    say(f"sync: `qbo-operator sync` for {what} ({name})")
    child = spawn(
        name, qbo_operator_argv("sync", "--namespace", NAMESPACE, "--name", name), world.sync_env(name), world.logs
    )
    rc, seconds = _wait_child(child, f"sync {name}")
    after, gc_after = world.realm_requests(company.realm_id), world.gc_state()
    if rc != 0:
        raise BenchError(f"qbo-operator sync exited {rc}:\n{child.tail()}")
    api, throttled, token = _requests_delta(before, after)
    obj = world.cp.kubectl_json("get", names.PLURAL, name, "-n", NAMESPACE)
    gc_requests, results = _gc_delta(gc_before, gc_after)
    return RunResult(
        "ours", seconds, api, throttled, token, gc_requests, int(gc_after["records"].get(crb, 0)),
        child.maxrss_kb, rc, (obj.get("status") or {}).get("lastSync") or {},
        {k: after[k] - before[k] for k in API_KINDS}, results, crb,
    )  # fmt: skip


def run_peer(world: SyncWorld, company: Company, mode: str) -> RunResult:
    """The naive peer or the floor reader, in its own process, on its own grant (and Green Check CRB)."""
    tokens = world.issue_tokens(company.realm_id)
    crb = str(uuid.uuid4())
    c, census = world.creds, company.census
    spec = PeerSpec(
        api_url=world.qbo_url, realm_id=company.realm_id, access_token=tokens.access_token,
        refresh_token=tokens.refresh_token, token_url=f"{world.qbo_url}/oauth2/v1/tokens/bearer",
        client_id=c.qbo_client_id, client_secret=c.qbo_client_secret, since=rfc3339(company.connected_at),
        greencheck_url=world.gc_url, greencheck_client_id=c.greencheck_client_id,
        greencheck_client_secret=c.greencheck_client_secret, service_provider_id=c.service_provider_id, crb_id=crb,
        invoice_ids=census.invoice_reads, payment_ids=census.payment_reads, method_list=census.method_list,
    )  # fmt: skip
    spec_file = world.workdir / f"peer-{mode}-{company.size}-{secrets.token_hex(4)}.json"
    spec_file.write_text(json.dumps(asdict(spec)))
    spec_file.chmod(0o600)
    if mode == "naive":
        world.start_gc()
    before, gc_before = world.realm_requests(company.realm_id), world.gc_state()
    say(f"sync: {'naive peer' if mode == 'naive' else 'lower-bound reader'} for {company.size:,} payments")
    child = spawn(
        f"{mode}-{company.size}",
        python_module_argv("bench.naive_peer", mode, "--spec", str(spec_file)),
        child_env({}),
        world.logs,
    )
    try:
        rc, seconds = _wait_child(child, f"{mode} {company.size:,}")
    finally:
        spec_file.unlink(missing_ok=True)
    if rc != 0:
        raise BenchError(f"bench.naive_peer {mode} exited {rc}:\n{child.tail()}")
    after, gc_after = world.realm_requests(company.realm_id), world.gc_state()
    api, throttled, token = _requests_delta(before, after)
    reported = json.loads(_last_line(child, '{"qbo_requests"'))
    gc_requests, results = _gc_delta(gc_before, gc_after)
    if reported["qbo_requests"] != api:
        say(f"sync: note: {mode} counted {reported['qbo_requests']} QBO requests, the sandbox {api}")
    return RunResult(
        mode, seconds, api, throttled, token, gc_requests,
        int(gc_after["records"].get(crb, 0)), child.maxrss_kb, rc,
        qbo_kinds={k: after[k] - before[k] for k in API_KINDS}, record_results=results,
        objects_read={k: int(reported[k]) for k in ("payments", "deleted", "invoices")},
    )  # fmt: skip


# --- the suites --------------------------------------------------------------------------------------


def sync_suite(world: SyncWorld | None, sizes: tuple[int, ...], run: tuple[int, ...], naive_max: int) -> list[Measure]:
    """Measure 1 at each of `sizes` (sizes not in `run` print as "skipped (quick)"), and a night with no changes
    for the smallest company run."""
    out: list[Measure] = []
    rss: dict[int, float] = {}
    base = min(run) if run else None
    quiet: list[Measure] = quiet_measures(None, None, None, "skipped (no sync size run)")
    for size in sizes:
        if size not in run or world is None:
            out += size_measures(size, None, None, None, None, rss, base, "skipped (quick)")
            continue
        company = world.company(size)
        ours = run_our_sync(world, company, f"sync-{size}", keep=size == base)
        if size == base:
            quiet = _quiet_night(world, company, ours)
        floor = run_peer(world, company, "floor")
        naive = run_peer(world, company, "naive") if size <= naive_max else None
        rss[size] = mib(ours.maxrss_kb) or math.nan
        out += size_measures(size, company, ours, floor, naive, rss, base)
    return out + quiet


def _quiet_night(world: SyncWorld, company: Company, first: RunResult) -> list[Measure]:
    """The same integration's next night, with nothing changed since: its census is taken from the watermark
    the night starts at, so the bound says what "nothing changed" costs (one CDC call)."""
    world.advance(60)  # a quiet minute: no change shares the watermark's second
    watermark = world.sandbox_now().replace(microsecond=0)
    census = world.census(company.realm_id, company.connected_at, watermark)
    again = run_again(world, company, f"sync-{company.size}", first.crb, watermark)
    return quiet_measures(company, census, again)


def throttle_floor_seconds(
    requests: int, per_minute: int = INTUIT_PER_MINUTE, per_second: int = INTUIT_PER_SECOND
) -> float:
    """The least time `requests` requests take when no more than `per_second` start in any second and no
    more than `per_minute` in any minute (the sandbox's sliding windows, docs/qbo.md §4.2)."""
    if requests <= 0:
        return 0.0
    return float(max(math.ceil(requests / per_second) - 1, 60 * (math.ceil(requests / per_minute) - 1)))


def throttle_suite(world: SyncWorld | None, size: int | None) -> list[Measure]:
    """Measure 2 at `size` payments (None, quick mode without `--throttled`: the rows print as skipped).

    The same company is synced twice on new integrations, without the throttle and then under it; the added
    time (throttled − unthrottled) is compared with the least time the throttle forces on the requests the
    throttled run had admitted, so the ratio says how well the pacing uses Intuit's allowance."""
    n = size or THROTTLED_SIZE
    tag = f"throttled sync {n:,}"
    added_target = Target("ratio", "<=", 1.2, "≤ 1.2× the time the throttle forces")
    same_target = Target("ratio", "==", 1, "the same data asks the same requests")
    rows = [
        (f"throttle.{n}.added_seconds_vs_forced", f"{tag}: added time vs forced", added_target, "s"),
        (f"throttle.{n}.requests", f"{tag}: requests vs unthrottled", same_target, ""),
        (f"throttle.{n}.throttled_responses", f"{tag}: 429 answers", None, ""),
    ]
    if size is None or world is None:
        return [skipped(key, label, "skipped (quick)", target, unit) for key, label, target, unit in rows]
    company = world.company(size)
    free = run_our_sync(world, company, f"unthrottled-{size}", world.issue_tokens(company.realm_id))
    world.throttle(True)
    try:
        ours = run_our_sync(world, company, f"throttled-{size}", world.issue_tokens(company.realm_id))
    finally:
        world.throttle(False)
    admitted = ours.qbo_requests - ours.qbo_throttled
    forced = throttle_floor_seconds(admitted)
    added = ours.seconds - free.seconds
    census = company.census
    naive_requests = census.payments // 100 + census.linked_invoices
    naive_floor = throttle_floor_seconds(naive_requests)
    (added_key, added_label, _, _), (req_key, req_label, _, _), (t_key, t_label, _, _) = rows
    return [
        Measure(
            added_key, added_label, added, forced, unit="s", baseline_label="forced by the throttle",
            target=added_target if forced else None,  # nothing forced: no ratio, nothing to judge
            note=f"throttled {ours.seconds:.1f}s − unthrottled {free.seconds:.1f}s of the same company = "
            f"{added:.1f}s added; the throttle forces ≥ {forced:.0f}s on {admitted} admitted requests (no more "
            f"than {INTUIT_PER_SECOND} starts in any second, {INTUIT_PER_MINUTE} in any minute)"
            + ("" if forced else ", so there is no ratio at this size")
            + f"; records delivered {ours.records_held:,} and {free.records_held:,} of "
            f"{census.expected_records:,}. A naive peer's ≥ {naive_requests:,} requests would need ≥ "
            f"{naive_floor / 3600:.1f} h under the same throttle (computed, not run)",
        ),
        Measure(
            req_key, req_label, ours.qbo_requests, free.qbo_requests, baseline_label="unthrottled",
            target=same_target,
            note=f"metered requests of the throttled run ({kinds(ours)}, 429s included) and of the unthrottled one "
            f"({kinds(free)})",
        ),
        Measure(
            t_key, t_label, ours.qbo_throttled, None,
            note="each 429 costs the client a 60 s wait (Intuit sends no Retry-After)",
        ),
    ]  # fmt: skip
