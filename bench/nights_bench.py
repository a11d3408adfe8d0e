"""A simulated night for N connected companies, 5% of which had webhooks (`nights.<N>.*`, issue #20).

Intuit meters Accounting calls per app (500,000 a month on the Builder tier), so what a night costs is the sum
over every connected company. With webhook-gated nights (docs/sync.md) a company with no Payment or Invoice
webhook since its last read costs nothing; one with webhooks costs its read. This suite measures both, against
the floor of each changed company's night (`bench.sync_census`) and against zero, and projects the month.

The world: N small sandbox companies in one QBO sandbox process, N QuickbooksIntegrations with token Secrets
(real sandbox grants) and status as after last night's read (connected 30 days ago, lastReadTime, the
watermark that read left, a webhook before it that confirmed the subscription), and the gateways' coverage
Lease vouching since before, renewed every 30 s as a gateway's heartbeat. Then a bookkeeper's day in 5% of the
companies, each followed by the webhook time the gateway would write. The night is the sync's real run for
every integration, in a few worker processes (`bench.nights_worker`); the metered calls are the QBO sandbox's
per-realm counters before and after the night, never the client's."""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench import BenchError, Child, Measure, Target, Ticker, for_all, python_module_argv, say, spawn
from bench.sync_bench import API_KINDS, SyncWorld
from bench.sync_census import Census
from qbo_operator.core import names, token_secret, webhook_coverage
from qbo_operator.core.kube import Kube
from qbo_operator.core.models import rfc3339
from qbo_operator.core.oauth import TokenResponse
from qbo_operator.harness.controlplane import ControlPlane
from qbo_operator.reconciler.metrics import READ_BUDGET

NAMESPACE = "bench-nights"  # the integrations and the coverage Lease (the runs' POD_NAMESPACE)
ENVIRONMENT = "sandbox"
CHANGED_SHARE = 0.05  # the night: 5% of the companies had webhooks
HISTORY = 10  # payments each company had before the night (a small company; the night's cost does not grow with it)
BOOKKEEPING_CHANGES = 8  # a bookkeeper's day in a changed company (the sandbox's seeded bookkeeper)
CONNECTED_DAYS = 30  # the integrations connected a month ago
SETTLE = timedelta(minutes=10)  # the sync's default settle time: the watermark a read leaves is its start less this
NIGHTS_A_MONTH = 30
WORKERS = 2  # worker processes (the machine's cores); each runs CONCURRENCY integrations at once
CONCURRENCY = 8
SETUP_CONCURRENCY = 32  # API requests in flight while the fleet is created
HEARTBEAT_SECONDS = webhook_coverage.BEAT_SECONDS


@dataclass
class Member:
    """One connected company: its integration, and for a changed one the night's lower bound."""

    name: str
    realm_id: str
    tokens: TokenResponse
    changed: bool
    census: Census | None = None


def changed_indices(n: int) -> set[int]:
    """round(5% of n) companies (at least 1), spread evenly over the fleet."""
    k = max(1, round(n * CHANGED_SHARE))
    return {math.floor(i * n / k) for i in range(k)}


def _in_batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- the world -----------------------------------------------------------------------------------


def _companies(world: SyncWorld, n: int) -> list[Member]:
    """N sandbox companies with their grants (the sandbox's consent + code exchange in one control call)."""
    changed = changed_indices(n)
    members: list[Member] = []
    for i in range(n):
        created = world.control(
            "POST", "/companies", {"name": f"Night {i:05d} Dispensary", "seed": i, "payments": HISTORY}
        )
        realm = str(created["realmId"])
        tokens = TokenResponse.model_validate(world.control("POST", f"/companies/{realm}/tokens"))
        members.append(Member(f"night-{i:05d}", realm, tokens, i in changed))
        if (i + 1) % 1000 == 0 and i + 1 < n:
            say(f"nights:   {i + 1:,}/{n:,} companies")
    return members


def _fleet(cp: ControlPlane, members: Sequence[Member], connected_at: datetime, read_at: datetime) -> None:
    """Every integration as after last night's read: CR, token Secret, status (connected, read, webhook seen)."""
    confirmed = read_at - timedelta(hours=1)  # a webhook before the last read: the subscription reaches us
    status = {
        "phase": "Connected",
        "connectedAt": rfc3339(connected_at),
        "lastReadTime": rfc3339(read_at),
        "syncWatermark": rfc3339(read_at - SETTLE),
        "lastSuccessfulSyncTime": rfc3339(read_at),
        "webhook": {"lastEventTime": rfc3339(confirmed), "eventsSinceLastSync": 0},
    }
    now = datetime.now(UTC)

    async def create(kube: Kube, m: Member) -> None:
        cr = {
            "apiVersion": names.API_VERSION,
            "kind": names.KIND,
            "metadata": {"name": m.name, "namespace": NAMESPACE},
            "spec": {
                "companyId": str(uuid.uuid5(uuid.NAMESPACE_URL, m.name)),
                "companyName": m.name,
                "environment": ENVIRONMENT,
            },
        }
        await kube.custom.create_namespaced_custom_object(names.GROUP, names.VERSION, NAMESPACE, names.PLURAL, cr)
        stored = m.tokens.to_tokens(m.realm_id, connected_at, now)
        await kube.create_secret(NAMESPACE, token_secret.manifest(NAMESPACE, m.name, stored.to_secret_data()))
        await kube.patch_status(NAMESPACE, m.name, {**status, "realmId": m.realm_id})

    asyncio.run(for_all(cp.kubeconfig, members, create, "nights:   integrations", SETUP_CONCURRENCY))


def _lease(cp: ControlPlane, since: datetime) -> None:
    """The gateways' coverage Lease, vouching since `since`, renewed now."""
    coverage = webhook_coverage.Coverage(
        since=since, renewed=datetime.now(UTC), max_gap=timedelta(seconds=webhook_coverage.MAX_GAP_SECONDS),
        holder="bench-gateway",
    )  # fmt: skip
    cp.kubectl("apply", "-f", "-", input=json.dumps(webhook_coverage.manifest(NAMESPACE, ENVIRONMENT, coverage)))


class Heartbeat:
    """Renews the coverage Lease every 30 s while the night runs, as a live gateway replica does."""

    def __init__(self, cp: ControlPlane, since: datetime) -> None:
        self.cp = cp
        self.since = since
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            _lease(self.cp, self.since)

    def __enter__(self) -> Heartbeat:
        _lease(self.cp, self.since)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def _bookkeeping(world: SyncWorld, cp: ControlPlane, members: Sequence[Member]) -> None:
    """A bookkeeper's day in each changed company, then the webhook time the gateway would write for it."""
    changed = [m for m in members if m.changed]

    async def webhook(kube: Kube, m: Member) -> None:
        at = rfc3339(datetime.now(UTC))
        await kube.patch_status(NAMESPACE, m.name, {"webhook": {"lastEventTime": at, "eventsSinceLastSync": 1}})

    for m in changed:
        world.control(
            "POST", f"/companies/{m.realm_id}/bookkeeping", {"seed": int(m.name[-5:]), "changes": BOOKKEEPING_CHANGES}
        )
    asyncio.run(for_all(cp.kubeconfig, changed, webhook, "nights:   webhooks", SETUP_CONCURRENCY))


def _statuses(cp: ControlPlane) -> dict[str, dict[str, Any]]:
    """Every integration's status after the night, listed 500 at a time."""
    from kubernetes_asyncio import client, config

    async def listing() -> dict[str, dict[str, Any]]:
        await config.load_kube_config(config_file=str(cp.kubeconfig))
        out: dict[str, dict[str, Any]] = {}
        async with client.ApiClient() as api:
            custom = client.CustomObjectsApi(api)
            token: str | None = None
            while True:
                kw: dict[str, Any] = {"limit": 500} | ({"_continue": token} if token else {})
                page = await custom.list_namespaced_custom_object(
                    names.GROUP, names.VERSION, NAMESPACE, names.PLURAL, **kw
                )
                out.update((o["metadata"]["name"], o.get("status") or {}) for o in page["items"])
                token = page["metadata"].get("continue")
                if not token:
                    return out

    return asyncio.run(listing())


# --- the night ---------------------------------------------------------------------------------


@dataclass
class Night:
    seconds: float
    metered: dict[str, Counter[str]]  # realm → metered calls by kind during the night
    token_calls: int
    statuses: dict[str, dict[str, Any]]
    exit_codes: Counter[str]
    greencheck_requests: int


def _run_night(world: SyncWorld, members: Sequence[Member], logs: Path) -> Night:
    """Every integration's nightly run, in WORKERS processes; the sandbox's counters before and after."""
    before, gc_before = world.requests_by_realm(), world.gc_state()
    # Contiguous blocks: the changed companies (every 20th) split evenly; a stride of 2 would give them all to one.
    slices = [members[w * len(members) // WORKERS : (w + 1) * len(members) // WORKERS] for w in range(WORKERS)]
    env = {**world.sync_env("nightly"), "POD_NAMESPACE": NAMESPACE, "QBO_SYNC_TRIGGER": "Schedule"}
    children: list[Child] = []
    started = time.perf_counter()
    for w, part in enumerate(slices):
        if not part:
            continue
        names_file = logs / f"nights-worker-{w}.names"
        names_file.write_text("".join(f"{m.name}\n" for m in part))
        argv = python_module_argv("bench.nights_worker", "--namespace", NAMESPACE, "--names", str(names_file),
                                  "--concurrency", str(CONCURRENCY))  # fmt: skip
        children.append(spawn(f"nights-worker-{w}", argv, env, logs))

    def message() -> str:
        last = [[ln for ln in c.tail(4_000).splitlines() if ln.startswith("progress:")][-1:] for c in children]
        return f"nights: the night has run {time.perf_counter() - started:.0f}s" + "".join(
            f"; {ln}" for ls in last for ln in ls
        )

    with Ticker(message, every=30.0):
        for child in children:
            child.wait_rusage()
    seconds = time.perf_counter() - started
    codes: Counter[str] = Counter()
    for child in children:
        lines = [ln for ln in child.tail(20_000).splitlines() if ln.startswith('{"runs"')]
        if child.returncode != 0 or not lines:
            raise BenchError(f"{child.name} exited {child.returncode}:\n{child.tail()}")
        codes.update(json.loads(lines[-1])["exit_codes"])
    after, gc_after = world.requests_by_realm(), world.gc_state()
    metered = {
        m.realm_id: Counter({k: after[m.realm_id][k] - before[m.realm_id][k] for k in API_KINDS}) for m in members
    }
    tokens = sum(after[m.realm_id]["token"] - before[m.realm_id]["token"] for m in members)
    gc = sum(
        gc_after["requests"].get(k, 0) - gc_before["requests"].get(k, 0) for k in ("auth_token", "invoice_payments")
    )
    return Night(seconds, metered, tokens, _statuses(world.cp), codes, gc)


# --- the suite -----------------------------------------------------------------------------------


def nights_suite(world: SyncWorld, n: int) -> list[Measure]:
    """`nights.<n>.*`: set the fleet up, run one night, compare its metered calls with the floor and zero."""
    world.start()
    cp = world.cp
    cp.kubectl("create", "namespace", NAMESPACE, check=False)
    say(f"nights: {n:,} sandbox companies ({HISTORY} payments of history each) and their grants")
    t0 = time.perf_counter()
    members = _companies(world, n)
    read_at = datetime.now(UTC).replace(microsecond=0)  # last night's read started here, after every history change
    connected_at = read_at - timedelta(days=CONNECTED_DAYS)
    say(f"nights: {n:,} integrations (CR, token Secret, status as after last night's read)")
    _fleet(cp, members, connected_at, read_at)
    time.sleep(1.0)  # the day's changes are stamped after the read's start, not in its second
    with Heartbeat(cp, since=connected_at):
        changed = [m for m in members if m.changed]
        say(
            f"nights: a bookkeeper's day ({BOOKKEEPING_CHANGES} changes) in {len(changed):,} companies, "
            "and their webhooks"
        )
        _bookkeeping(world, cp, members)
        say("nights: the lower bound of each changed company's night (census on the bench's own grant)")
        for m in changed:
            m.census = world.census(m.realm_id, connected_at, read_at - SETTLE)
        setup = time.perf_counter() - t0
        say(f"nights: set up in {setup:.0f}s; the night: {n:,} runs in {WORKERS} workers × {CONCURRENCY} at once")
        night = _run_night(world, members, world.logs)
    return night_measures(n, members, night, setup)


def night_measures(n: int, members: Sequence[Member], night: Night, setup_seconds: float) -> list[Measure]:
    changed = [m for m in members if m.changed]
    quiet = [m for m in members if not m.changed]
    calls = {m.realm_id: sum(night.metered[m.realm_id].values()) for m in members}
    kinds: Counter[str] = Counter()
    for m in changed:
        kinds.update(night.metered[m.realm_id])
    changed_calls = sum(calls[m.realm_id] for m in changed)
    quiet_calls = sum(calls[m.realm_id] for m in quiet)
    floor = sum(m.census.bound.requests for m in changed if m.census is not None)
    gates = {m.name: (night.statuses.get(m.name, {}).get("lastSync") or {}) for m in members}
    read = sum(
        1 for m in changed if gates[m.name].get("gate") == "Webhooks" and gates[m.name].get("result") == "Succeeded"
    )
    skipped = sum(
        1 for m in quiet if gates[m.name].get("gate") == "NoWebhooks" and gates[m.name].get("result") == "Succeeded"
    )
    quiet_gates = Counter(str(gates[m.name].get("gate")) for m in quiet)
    over = [m for m in changed if m.census is not None and calls[m.realm_id] > m.census.bound.requests]
    # Where a changed payment that delivers no record (credit-only after its invoices are read) names its method by
    # id only: the bound needs no PaymentMethod list for it; the sync, which names methods before mapping, does.
    naming = [m for m in changed if m.census is not None and m.census.unnamed_method and not m.census.method_list]
    night_calls = changed_calls + quiet_calls
    ungated = changed_calls + sum(max(calls[m.realm_id], 1) for m in quiet)
    tag = f"nights {n:,}"
    exits = ", ".join(f"exit {k}: {v:,}" for k, v in sorted(night.exit_codes.items()))
    floors = Counter(m.census.bound.requests for m in changed if m.census is not None)
    budget = f"{READ_BUDGET:,} metered calls a month (Intuit's Builder tier)"
    return [
        Measure(
            f"nights.{n}.changed_qbo_requests", f"{tag}: metered QBO calls, companies with webhooks",
            changed_calls, floor, baseline_label="lower bound", target=Target("ratio", "<=", 1.1, "≤ 1.1× the floor"),
            note=f"{len(changed):,} companies after a bookkeeper's day of {BOOKKEEPING_CHANGES} changes: "
            f"{changed_calls:,} calls ({', '.join(f'{kinds[k]:,} {k}' for k in API_KINDS)}; the sandbox's "
            f"per-realm counters) against the sum of each night's lower bound {floor:,} (bench.sync_census: 1 CDC "
            f"call + invoice and payment reads; companies by bound: "
            f"{', '.join(f'{c:,} at {b}' for b, c in sorted(floors.items()))}); "
            f"{len(over):,} companies above their bound. "
            f"{len(naming):,} companies' changed payments that deliver no record name their method by id only "
            f"(one PaymentMethod list each, beyond the bound)",
        ),
        Measure(
            f"nights.{n}.unchanged_qbo_requests", f"{tag}: metered QBO calls, companies without",
            quiet_calls, None, target=Target("value", "==", 0, "no call for a company with no webhook"),
            note=f"{len(quiet):,} companies with no webhook since their last read; token refreshes (OAuth, not "
            f"metered) in the night: {night.token_calls:,}",
        ),
        Measure(
            f"nights.{n}.skipped", f"{tag}: nights skipped (gate NoWebhooks)", skipped, len(quiet),
            baseline_label="companies without webhooks", target=Target("ratio", "==", 1),
            note="gates recorded for companies without webhooks: "
            + ", ".join(f"{g} {c:,}" for g, c in quiet_gates.most_common()) + f"; runs: {exits}",
        ),
        Measure(
            f"nights.{n}.read", f"{tag}: nights read (gate Webhooks)", read, len(changed),
            baseline_label="companies with webhooks", target=Target("ratio", "==", 1),
            note=f"Green Check requests in the night: {night.greencheck_requests:,} (token + batches)",
        ),
        Measure(
            f"nights.{n}.monthly_projection", f"{tag}: metered calls a month (gated)", night_calls * NIGHTS_A_MONTH,
            READ_BUDGET, baseline_label="budget", target=Target("value", "<=", READ_BUDGET, budget),
            note=f"this night's {night_calls:,} metered calls × {NIGHTS_A_MONTH} nights against {budget}",
        ),
        Measure(
            f"nights.{n}.monthly_projection_ungated", f"{tag}: metered calls a month (every night read)",
            ungated * NIGHTS_A_MONTH, READ_BUDGET, baseline_label="budget",
            note=f"computed, not run: the changed companies' {changed_calls:,} calls plus 1 CDC call for each of the "
            f"{len(quiet):,} others (a quiet night's floor, `sync.quiet`), × {NIGHTS_A_MONTH}",
        ),
        Measure(
            f"nights.{n}.wall_seconds", f"{tag}: wall time of the night", night.seconds, unit="s",
            note=f"{n:,} runs of the sync's real run in {WORKERS} worker processes × {CONCURRENCY} at once: "
            f"{night.seconds / n * 1000:.1f} ms a company on this machine (setup took {setup_seconds:.0f}s)",
        ),
    ]  # fmt: skip
