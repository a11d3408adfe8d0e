"""The gateway over N connected integrations (`gateway.<N>.*`, issue #20: N = 10,000; 200 in quick mode).

Measure 4 (`gateway.*`) connects one integration. Here N QuickbooksIntegrations, each connected to its own realm
with the status a connected, synced integration carries, are created in `bench-gateway-fleet`, and the real
`qbo-operator gateway` (the chart's ServiceAccount, pinned to CPU 0, `--namespace bench-gateway-fleet` so that
what other suites left in the cluster does not count) is started twice over that namespace: once when it holds
one integration (the baseline) and once when it holds N.

- The realm index: process start to the line saying its listing is complete (`listed quickbooksintegrations in
  …: N objects`, the gateway's own log clock), VmRSS a second after it, VmHWM at the end; for comparison, the N
  integrations as the API server serves them in one unpaginated LIST (kubectl; the index lists 500 at a time).
- Webhook recording: wrk rounds of signed deliveries naming one realm (what measure 4 sends, now to a gateway
  indexing N), then rounds spread over SPREAD_REALMS realms among the N (one Payment event each, distinct event
  ids), against the same process. Then, once the gateway's coalesced flush has written everything, the sum of
  `status.webhook.eventsSinceLastSync` over the N integrations against the deliveries the gateway received, and
  its writes from the API server's audit log: status writes, to how many integrations, the least time between
  two writes of one integration (the coalescing keeps it at one flush interval or more), how long a flush takes,
  and how often the webhook coverage Lease, renewed after complete flushes, was renewed."""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import math
import os
import statistics
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench import BenchError, Measure, Target, for_all, mib, proc_status_kb, say
from bench.gateway_bench import (
    LOAD_CPU,
    SERVER_CPU,
    WRK_SCRIPT,
    GatewayRun,
    Round,
    gateway_listening,
    index_synced,
    measure_round,
    metric,
    pin_threads,
    run_wrk,
    write_bodies,
)
from qbo_operator.core import names, webhook_coverage
from qbo_operator.core.kube import Kube
from qbo_operator.core.models import parse_rfc3339, rfc3339
from qbo_operator.harness.controlplane import ControlPlane
from qbo_operator.harness.localstack import SYSTEM_NAMESPACE, LocalStack

NAMESPACE = "bench-gateway-fleet"
SPREAD_REALMS = 2_000  # distinct realms the spread deliveries name (all N when N is smaller)
REALM_BASE = 9_341_000_000_000_000  # realm ids REALM_BASE + i: 16 digits, as Intuit's
FLUSH_SECONDS = 5.0  # the gateway's default --webhook-flush-seconds (gateway/app.py DEFAULT_FLUSH_SECONDS)
MEMORY_LIMIT_MIB = 256.0  # the chart's gateway memory limit (values.yaml gateway.resources.limits.memory)
THROUGHPUT_TARGET = 0.8
SETUP_CONCURRENCY = 32
SYNC_TIMEOUT_SECONDS = 600.0


def fleet_name(i: int) -> str:
    return f"fleet-{i:05d}"


def fleet_realm(i: int) -> str:
    return str(REALM_BASE + i)


def spread_indices(n: int, k: int = SPREAD_REALMS) -> list[int]:
    """min(k, n) integrations spread evenly over the N, whose realms the spread deliveries name."""
    k = min(k, n)
    return [i * n // k for i in range(k)]


def coalescing_bound(written: int, span_seconds: float, flush_seconds: float) -> int:
    """The most status writes `written` integrations can get in `span_seconds` when no integration is written twice
    within `flush_seconds`: ⌊span / flush⌋ + 1 each."""
    return written * (math.floor(span_seconds / flush_seconds) + 1) if written else 0


def connected_status(namespace: str, name: str, realm: str, now: datetime) -> dict[str, Any]:
    """The status of an integration connected a month ago and synced last night, as the operator, the sync and
    the gateway leave it (every field the CRD has for a connected integration, six conditions): what the realm
    index holds per integration in production, not a bare realmId."""
    connected = now - timedelta(days=30)
    started = (now - timedelta(hours=10)).replace(microsecond=0)
    transition = rfc3339(connected)
    message = f"Connected to QuickBooks company {realm}."

    def condition(type_: str, status: str, reason: str, text: str) -> dict[str, Any]:
        return {"type": type_, "status": status, "reason": reason, "message": text,
                "lastTransitionTime": transition, "observedGeneration": 1}  # fmt: skip

    last_sync = {
        "jobName": f"{names.sync_workload_name(namespace, name)}-29371560", "trigger": "Schedule",
        "startedAt": rfc3339(started), "finishedAt": rfc3339(started + timedelta(seconds=4)),
        "result": "Succeeded", "paymentsSynced": 7, "paymentsSkipped": 1, "recordsRejected": 0,
        "recordsCreated": 9, "recordsUpdated": 0, "recordsRetracted": 0, "amountSyncedCents": 1_254_300,
        "qboRequests": 2, "gate": "Webhooks", "greenCheckRequests": 2, "message": "Synced 7 payments.",
    }  # fmt: skip
    return {
        "phase": "Connected",
        "realmId": realm,
        "connectedAt": rfc3339(connected),
        "syncWatermark": rfc3339(started - timedelta(minutes=10)),
        "lastSync": last_sync,
        "lastSuccessfulSyncTime": rfc3339(started + timedelta(seconds=4)),
        "lastReadTime": rfc3339(started),
        "refreshTokenExpiresAt": rfc3339(now + timedelta(days=100)),
        "refreshTokenHardExpiresAt": rfc3339(connected + timedelta(days=5 * 365)),
        "webhook": {"lastEventTime": rfc3339(started - timedelta(hours=2)), "eventsSinceLastSync": 0},
        "cronJobName": names.sync_workload_name(namespace, name),
        "cronJobNamespace": SYSTEM_NAMESPACE,
        "meteredReads": {"month": now.strftime("%Y-%m"), "requests": 31},
        "observedGeneration": 1,
        "conditions": [
            condition("Ready", "True", "Connected", message + " Syncs run on schedule."),
            condition("Connected", "True", "Authorized", message),
            condition("Synced", "True", "Succeeded", "Synced 7 payments."),
            condition("Suspended", "False", "Active", "Syncs run on schedule."),
            condition("Reconciling", "False", "Reconciled", "The operator has reconciled generation 1."),
            condition("Stalled", "False", "Reconciled", "Nothing in the spec or the configuration needs fixing."),
        ],
    }


def _create(cp: ControlPlane, indices: range) -> float:
    """Integrations `indices` of the fleet, each created and given its connected status; seconds it took."""
    now = datetime.now(UTC)

    async def create(kube: Kube, i: int) -> None:
        name = fleet_name(i)
        cr = {
            "apiVersion": names.API_VERSION, "kind": names.KIND,
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"companyId": str(uuid.uuid5(uuid.NAMESPACE_URL, name)), "companyName": f"Fleet {i:05d}"},
        }  # fmt: skip
        await kube.custom.create_namespaced_custom_object(names.GROUP, names.VERSION, NAMESPACE, names.PLURAL, cr)
        await kube.patch_status(NAMESPACE, name, connected_status(NAMESPACE, name, fleet_realm(i), now))

    started = time.perf_counter()
    asyncio.run(for_all(cp.kubeconfig, list(indices), create, "gateway:   integrations", SETUP_CONCURRENCY))
    return time.perf_counter() - started


# --- a gateway start ---------------------------------------------------------------------------------


@dataclass
class Start:
    """One start of the gateway over the fleet namespace: times from the spawn, memory a second after the sync."""

    pid: int
    listening: float | None  # seconds to the `gateway listening` line (imports and set-up)
    synced: float  # seconds to the line saying the index listed everything (or to /readyz when the line is not found)
    indexed: int | None  # integrations the index held then, from that line
    ready: float  # seconds to the first 200 from /readyz
    rss_kb: int | None = None  # VmRSS a second after the sync
    hwm_kb: int | None = None  # VmHWM then


def _start(stack: LocalStack, what: str) -> Start:
    """`qbo-operator gateway --namespace bench-gateway-fleet` under the chart's ServiceAccount, every thread on
    SERVER_CPU, as measure 4 starts it; waits for the index to sync and /readyz."""
    logs = stack.workdir / "logs"
    log = logs / "gateway.log"
    offset = log.stat().st_size if log.exists() else 0
    kubeconfig = stack.cp.service_account_kubeconfig(SYSTEM_NAMESPACE, stack.service_account("gateway"))
    env = {**stack.base_env(), "KUBECONFIG": str(kubeconfig), "POD_NAMESPACE": SYSTEM_NAMESPACE}
    args = ["gateway", "--host", "127.0.0.1", "--port", str(stack.gateway_port), "--namespace", NAMESPACE]
    say(f"gateway: starting `qbo-operator gateway --namespace {NAMESPACE}` over {what}")
    mine = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {SERVER_CPU})  # the child inherits it from its first instruction
    try:
        t0 = time.time()
        proc = stack.spawn("gateway", args, env)
    finally:
        os.sched_setaffinity(0, mine)
    pin_threads(proc.popen.pid, SERVER_CPU)
    url = stack.gateway_url
    ready: float | None = None
    deadline = time.monotonic() + SYNC_TIMEOUT_SECONDS
    while ready is None:
        if not proc.alive():
            raise BenchError(f"the gateway exited with {proc.popen.returncode}:\n{proc.tail()}")
        if time.monotonic() > deadline:
            raise BenchError(f"the gateway's realm index did not sync over {what} in {SYNC_TIMEOUT_SECONDS:.0f}s:\n"
                             f"{proc.tail()}")  # fmt: skip
        try:
            if httpx.get(url + "/readyz", timeout=5).status_code == 200:
                ready = time.time() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    synced = index_synced(log, offset)
    listening = gateway_listening(log, offset)
    start = Start(
        proc.popen.pid, None if listening is None else listening - t0,
        ready if synced is None else synced[0] - t0, None if synced is None else synced[1], ready,
    )  # fmt: skip
    time.sleep(1.0)
    start.rss_kb, start.hwm_kb = proc_status_kb(start.pid, "VmRSS"), proc_status_kb(start.pid, "VmHWM")
    say(f"gateway: index synced {start.synced:.1f}s after the start ({start.indexed} integrations), "
        f"RSS {mib(start.rss_kb) or 0:.0f} MiB")  # fmt: skip
    return start


@dataclass
class ListProbe:
    """The fleet namespace's integrations in one unpaginated LIST, by kubectl: their size as served."""

    seconds: float
    size: int  # bytes of the JSON answer
    items: int


def _list_probe(cp: ControlPlane) -> ListProbe:
    path = f"/apis/{names.GROUP}/{names.VERSION}/namespaces/{NAMESPACE}/{names.PLURAL}"
    started = time.perf_counter()
    out = cp.kubectl("get", "--raw", path, "--request-timeout=120s").stdout
    seconds = time.perf_counter() - started
    return ListProbe(seconds, len(out.encode()), len(json.loads(out).get("items") or []))


# --- webhooks ------------------------------------------------------------------------------------------


def _recorded(cp: ControlPlane) -> tuple[int, int]:
    """(sum of status.webhook.eventsSinceLastSync, integrations with a count) over the fleet, listed 500 at a time."""
    out = cp.kubectl(
        "get", names.PLURAL, "-n", NAMESPACE, "--no-headers", "--chunk-size=500", "--request-timeout=120s",
        "-o", "custom-columns=E:.status.webhook.eventsSinceLastSync",
    ).stdout  # fmt: skip
    counts = [int(x) for x in out.split() if x.isdigit()]
    return sum(counts), sum(1 for c in counts if c)


def _patches(url: str) -> float:
    """Status patches the gateway has made so far, whatever their result (its own counter)."""
    return metric(httpx.get(url + "/metrics", timeout=10).text, "qbo_webhook_status_patches_total")


def _wait_recorded(cp: ControlPlane, url: str, expected: int, timeout: float) -> tuple[int, int, float]:
    """Wait for the coalesced flush to write every count. The gateway's patch counter says when it is between
    flushes (no patch for a second): only then are the fleet's counts listed and added up, once per pause, so
    the listing does not load the API server the flush writes to. Gives up after three flush intervals without
    a patch (a count still missing then is lost) or `timeout`. (sum, integrations with a count, seconds from
    the call to the last patch seen)."""
    started = time.monotonic()
    last, changed, listed = _patches(url), started, -1.0
    recorded = touched = 0
    while True:
        time.sleep(0.5)
        now, total = time.monotonic(), _patches(url)
        if total != last:
            last, changed = total, now
        elif now - changed >= 1.0 and listed != last:
            listed = last
            recorded, touched = _recorded(cp)
            if recorded >= expected:
                return recorded, touched, changed - started
        if now - changed > 3 * FLUSH_SECONDS or now - started > timeout:
            return recorded, touched, changed - started


@dataclass
class Writes:
    """The gateway's requests on the fleet's integrations in the audit log, from the first webhook round on."""

    ok: int = 0  # status patches answered 2xx
    conflicts: int = 0  # status patches answered 409 (re-read and re-applied)
    other: int = 0  # status patches answered anything else
    reads: int = 0  # GETs of one integration (after a 409)
    objects: int = 0  # integrations written
    most: int = 0  # the most writes one integration got
    span: float = 0.0  # seconds from the first write to the last
    min_gap: float | None = None  # least seconds between two writes of the same integration
    by_writes: Counter[int] = field(default_factory=Counter)  # integrations by number of writes
    flushes: list[tuple[int, float]] = field(default_factory=list)  # (writes, seconds) of each flush
    lease_renewals: int = 0  # writes of the webhook coverage Lease (the heartbeat follows a complete flush)
    lease_max_gap: float | None = None  # most seconds between two of them

    @property
    def write_rate(self) -> float | None:
        """Status writes a second while a flush is writing."""
        seconds = sum(d for _, d in self.flushes)
        return sum(c for c, _ in self.flushes) / seconds if seconds > 0 else None


FLUSH_GAP_SECONDS = 2.0  # writes further apart than this belong to different flushes (which sleep 5 s between)


def flushes(times: list[datetime]) -> list[tuple[int, float]]:
    """(writes, seconds from its first write to its last) of each flush, from every write's time."""
    out: list[tuple[int, float]] = []
    ordered = sorted(times)
    start = 0
    for k in range(1, len(ordered) + 1):
        if k == len(ordered) or (ordered[k] - ordered[k - 1]).total_seconds() > FLUSH_GAP_SECONDS:
            out.append((k - start, (ordered[k - 1] - ordered[start]).total_seconds()))
            start = k
    return out


def count_writes(lines: Iterable[bytes], user: str) -> Writes:
    """Status writes of `user` on the fleet namespace's integrations, and its coverage Lease renewals, among audit
    `lines` (JSON, one event each)."""
    times: dict[str, list[datetime]] = defaultdict(list)
    leases: list[datetime] = []
    out = Writes()
    who = user.encode()
    for line in lines:
        if who not in line or (names.PLURAL.encode() not in line and b'"leases"' not in line):
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        ref = event.get("objectRef") or {}
        code = (event.get("responseStatus") or {}).get("code", 0)
        if event.get("stage") != "ResponseComplete" or (event.get("user") or {}).get("username") != user:
            continue
        if ref.get("resource") == "leases":
            if event.get("verb") in ("create", "update", "patch") and 200 <= code < 300:
                leases.append(parse_rfc3339(event["requestReceivedTimestamp"]))
            continue
        if ref.get("resource") != names.PLURAL or ref.get("namespace") != NAMESPACE:
            continue
        if event.get("verb") == "get":
            out.reads += 1
        elif event.get("verb") == "patch" and ref.get("subresource") == "status":
            if 200 <= code < 300:
                out.ok += 1
                times[ref.get("name", "")].append(parse_rfc3339(event["requestReceivedTimestamp"]))
            elif code == 409:
                out.conflicts += 1
            else:
                out.other += 1
    every = sorted(t for ts in times.values() for t in ts)
    out.objects = len(times)
    out.span = (every[-1] - every[0]).total_seconds() if every else 0.0
    gaps = [(b - a).total_seconds() for ts in times.values() for a, b in itertools.pairwise(sorted(ts))]
    out.min_gap = min(gaps) if gaps else None
    out.by_writes = Counter(len(ts) for ts in times.values())
    out.most = max(out.by_writes, default=0)
    out.flushes = flushes(every)
    leases.sort()
    out.lease_renewals = len(leases)
    out.lease_max_gap = max(((b - a).total_seconds() for a, b in itertools.pairwise(leases)), default=None)
    return out


def _audit_writes(cp: ControlPlane, offset: int, user: str) -> Writes:
    with cp.audit_log.open("rb") as fh:
        fh.seek(offset)
        return count_writes(fh, user)


@dataclass
class FleetRun:
    """What the fleet part observed."""

    n: int
    realms: int
    setup_seconds: float = 0.0
    one: Start | None = None
    many: Start | None = None
    probe: ListProbe | None = None
    spread: list[Round] = field(default_factory=list)
    single: list[Round] = field(default_factory=list)
    metrics: str = ""
    hwm_kb: int | None = None  # VmHWM of the N gateway at the end
    recorded: int = 0
    recorded_integrations: int = 0
    flush_wait: float = 0.0
    writes: Writes = field(default_factory=Writes)


def fleet_suite(
    cp: ControlPlane, stack: LocalStack, n: int, base: GatewayRun, load_seconds: float, rounds: int
) -> list[Measure]:
    """`gateway.<n>.*`: the realm index over N integrations and webhook recording spread over many realms."""
    if n < 2:
        raise BenchError("the gateway fleet needs at least 2 integrations (1 is the baseline)")
    logs = stack.workdir / "logs"
    realms = spread_indices(n)
    run = FleetRun(n, len(realms))
    cp.kubectl("create", "namespace", NAMESPACE, check=False)
    run.setup_seconds += _create(cp, range(1))
    run.one = _start(stack, "1 integration")
    stack.stop_process("gateway")
    say(f"gateway: {n - 1:,} more integrations, each connected to its own realm ({SETUP_CONCURRENCY} writes at once)")
    run.setup_seconds += _create(cp, range(1, n))
    run.probe = _list_probe(cp)
    say(f"gateway: {run.probe.items:,} integrations in one LIST: {run.probe.size / 2**20:.1f} MiB of JSON "
        f"in {run.probe.seconds:.1f}s (kubectl)")  # fmt: skip
    # what the rounds can send at 3,000/s (more would only repeat event ids, which the note counts)
    spread, single = (int(load_seconds * r * 3000) for r in (rounds, max(1, rounds - 1)))
    files = {"spread": stack.workdir / "fleet-spread.tsv", "single": stack.workdir / "fleet-single.tsv"}
    say(f"gateway: signing {spread:,} deliveries over {len(realms):,} realms and {single:,} over 1")
    token = stack.creds.webhook_verifier_token
    write_bodies(files["spread"], token, spread, [fleet_realm(i) for i in realms])
    write_bodies(files["single"], token, single, [fleet_realm(0)])
    script = stack.workdir / "webhook.lua"
    script.write_text(WRK_SCRIPT)
    user = f"system:serviceaccount:{SYSTEM_NAMESPACE}:{stack.service_account('gateway')}"
    run.many = _start(stack, f"{n:,} integrations")
    url = stack.gateway_url
    try:
        audit_offset = cp.audit_log.stat().st_size
        _webhook_rounds(run, url, script, files, logs, load_seconds, rounds)
        run.metrics = httpx.get(url + "/metrics", timeout=10).text
        expected = _expected(run.metrics)
        say(f"gateway: waiting for the coalesced flush to write {expected:,} deliveries' counts")
        run.recorded, run.recorded_integrations, run.flush_wait = _wait_recorded(cp, url, expected, 600.0)
        run.metrics = httpx.get(url + "/metrics", timeout=10).text
        run.hwm_kb = proc_status_kb(run.many.pid, "VmHWM")
    finally:
        stack.stop_process("gateway")
    time.sleep(0.5)  # the API server's audit log has the last responses
    run.writes = _audit_writes(cp, audit_offset, user)
    return fleet_measures(run, base)


def _webhook_rounds(
    run: FleetRun, url: str, script: Path, files: dict[str, Path], logs: Path, load_seconds: float, rounds: int
) -> None:
    """wrk with the one-realm deliveries (`rounds` − 1 times, at least once: that row is the diagnosis, and quick
    mode is short), then `rounds` times with the spread ones. Not alternating: a flush of thousands of
    integrations outlasts a round, so a round after a spread one would pay for its writes; this way the one-realm
    rounds measure the index's size alone, the spread ones add the writes."""
    assert run.many is not None
    for kind, times in (("single", max(1, rounds - 1)), ("spread", rounds)):
        offset = 0
        for r in range(times):
            what = "one realm" if kind == "single" else f"spread over {run.realms:,} realms"
            say(f"gateway: fleet round {r + 1}/{times}, {what} ({load_seconds:.0f}s)")
            send = functools.partial(
                run_wrk, url + "/webhooks/quickbooks", script, "webhook", load_seconds, files[kind], offset, logs
            )
            result = measure_round(run.many.pid, url, "webhook", send)
            offset += result.served
            (run.spread if kind == "spread" else run.single).append(result)


def _expected(metrics: str) -> int:
    """Deliveries the gateway received whose event it had not seen (each body holds one event)."""
    received = metric(metrics, "qbo_webhook_requests_total")
    return int(received - metric(metrics, "qbo_webhook_duplicate_events_total"))


# --- the rows ------------------------------------------------------------------------------------------


def fleet_measures(run: FleetRun, base: GatewayRun) -> list[Measure]:
    one, many, probe, w, n = run.one, run.many, run.probe, run.writes, run.n
    assert one is not None and many is not None and probe is not None
    tag = f"gateway ({n:,} integrations)"
    metrics = run.metrics
    received = int(metric(metrics, "qbo_webhook_requests_total"))
    accepted = int(metric(metrics, "qbo_webhook_requests_total", 'result="accepted"'))
    duplicates = int(metric(metrics, "qbo_webhook_duplicate_events_total"))
    expected = received - duplicates
    patch_ok = int(metric(metrics, "qbo_webhook_status_patches_total", 'result="ok"'))
    patch_conflict = int(metric(metrics, "qbo_webhook_status_patches_total", 'result="conflict"'))
    patch_failed = int(metric(metrics, "qbo_webhook_status_patches_total", 'result="failed"'))
    base_rps = max(x.wrk.rps for x in base.wh)
    base_cpu = statistics.median(x.per_cpu_second for x in base.wh)
    spread_rps = max(x.wrk.rps for x in run.spread)
    spread_cpu = statistics.median(x.per_cpu_second for x in run.spread)
    single_cpu = statistics.median(x.per_cpu_second for x in run.single)
    spread_text = ", ".join(f"{x.wrk.rps:,.0f}" for x in run.spread)
    single_text = ", ".join(f"{x.wrk.rps:,.0f}" for x in run.single)
    spread_cpu_text = ", ".join(f"{x.per_cpu_second:,.0f}" for x in run.spread)
    single_cpu_text = ", ".join(f"{x.per_cpu_second:,.0f}" for x in run.single)
    errors = sum(x.wrk.errors for x in [*run.spread, *run.single])
    per_kib = ((many.rss_kb or 0) - (one.rss_kb or 0)) / (n - 1) if many.rss_kb and one.rss_kb else None
    served_kib = probe.size / max(probe.items, 1) / 1024
    bound = coalescing_bound(w.objects, w.span, FLUSH_SECONDS)
    base_index = (
        "" if base.indexed is None
        else f" (its index held {base.indexed:,} integration{'' if base.indexed == 1 else 's'}: every namespace's)"
    )  # fmt: skip
    listing = (
        f"the {probe.items:,} integrations in one unpaginated LIST: {probe.size / 2**20:.1f} MiB of JSON, "
        f"{probe.seconds:.1f}s by kubectl"
    )
    by_writes = ", ".join(f"{c:,} written {k} time{'' if k == 1 else 's'}" for k, c in sorted(w.by_writes.items()))
    rate = f"{w.write_rate:,.0f}" if w.write_rate is not None else "-"
    longest = max(w.flushes, key=lambda f: f[1], default=(0, 0.0))
    lease = (
        f"the coverage Lease was renewed {w.lease_renewals} times, at most {w.lease_max_gap:.0f}s apart (a gap over "
        f"{webhook_coverage.MAX_GAP_SECONDS}s makes every integration's next night read QuickBooks)"
        if w.lease_max_gap is not None else f"the coverage Lease was renewed {w.lease_renewals} times"
    )  # fmt: skip
    return [
        Measure(
            f"gateway.{n}.index_sync_seconds", f"{tag}: start to realm index synced", many.synced, one.synced,
            unit="s", baseline_label="1 integration",
            note=f"process start to the gateway's line saying its index listed all {many.indexed} integrations of "
            f"{NAMESPACE} (its log clock); /readyz answered 200 after {many.ready:.1f}s (1 integration: "
            f"{one.ready:.1f}s); `gateway listening` (imports and set-up) after {many.listening or 0:.1f}s; "
            f"{listing}; the {n:,} integrations were created in {run.setup_seconds:.0f}s",
        ),
        Measure(
            f"gateway.{n}.rss_after_sync", f"{tag}: RSS after the index synced", mib(many.rss_kb), mib(one.rss_kb),
            unit="MiB", baseline_label="1 integration",
            note=f"VmRSS a second after the sync, before any webhook; peak by then (VmHWM) {mib(many.hwm_kb) or 0:.0f} "
            f"MiB (1 integration: {mib(one.hwm_kb) or 0:.0f} MiB)",
        ),
        Measure(
            f"gateway.{n}.rss_per_integration", f"{tag}: RSS per integration", per_kib, served_kib, unit="KiB",
            baseline_label="the object as served",
            note="(RSS after the sync at N − at 1) / (N − 1), against the JSON the API server sends per integration "
            "(with managedFields) in a LIST; each integration has the status of a connected, synced one "
            "(six conditions, lastSync, webhook, meteredReads …)",
        ),
        Measure(
            f"gateway.{n}.peak_rss", f"{tag}: gateway peak RSS", mib(run.hwm_kb), mib(base.rss),
            unit="MiB", baseline_label="measure 4's gateway",
            target=Target("value", "<=", MEMORY_LIMIT_MIB, "the chart's gateway memory limit"),
            note=f"VmHWM after the sync, the webhook rounds and their flushes, against the peak of measure 4's "
            f"gateway after its rounds{base_index}; the chart requests 96 MiB for the gateway and limits it to "
            f"{MEMORY_LIMIT_MIB:.0f} MiB",
        ),
        Measure(
            f"gateway.{n}.webhook_throughput", f"{tag}: signed webhooks/s over {run.realms:,} realms", spread_rps,
            base_rps, unit="req/s", baseline_label="1 realm, 1 integration (measure 4)",
            target=Target("ratio", ">=", THROUGHPUT_TARGET, f"≥ {THROUGHPUT_TARGET:g}× one realm"),
            note=f"wrk -t1 -c32 on CPU {LOAD_CPU}, gateway on CPU {SERVER_CPU}; deliveries round-robin over "
            f"{run.realms:,} of the {n:,} realms, so every flush interval has up to {run.realms:,} integrations to "
            f"write; best of {len(run.spread)} rounds ({spread_text}), which followed {len(run.single)} rounds naming "
            f"one realm on the same gateway ({single_text}); baseline: measure 4's best round; {errors} client errors",
        ),
        Measure(
            f"gateway.{n}.webhook_per_cpu_second", f"{tag}: signed webhooks per CPU-second over {run.realms:,} "
            "realms", spread_cpu, base_cpu, unit="req/s", baseline_label="1 realm, 1 integration (measure 4)",
            target=Target("ratio", ">=", THROUGHPUT_TARGET, f"≥ {THROUGHPUT_TARGET:g}× one realm"),
            note="deliveries served per second of CPU the gateway used, which includes its status writes and the "
            f"watch events they cause; median of {len(run.spread)} rounds ({spread_cpu_text})",
        ),
        Measure(
            f"gateway.{n}.one_realm_per_cpu_second", f"{tag}: signed webhooks per CPU-second, one realm",
            single_cpu, base_cpu, unit="req/s", baseline_label="1 realm, 1 integration (measure 4)",
            note=f"what the size of the index alone costs: the same deliveries as measure 4 (one realm, one status "
            f"write per flush) to a gateway indexing {n:,} integrations; median of {len(run.single)} rounds "
            f"({single_cpu_text}; wrk: {single_text}/s), run before the spread rounds",
        ),
        Measure(
            f"gateway.{n}.webhooks_recorded", f"{tag}: deliveries counted in status", run.recorded, expected,
            baseline_label="deliveries received", target=Target("ratio", "==", 1, "every delivery counted"),
            note=f"sum of status.webhook.eventsSinceLastSync over the {n:,} integrations "
            f"({run.recorded_integrations:,} with a count) once the gateway stopped writing, {run.flush_wait:.0f}s "
            f"after the last round (how late a count can reach status), against the deliveries the gateway "
            f"received ({received:,}; {accepted:,} accepted, {duplicates:,} with a repeated event id, not counted)",
        ),
        Measure(
            f"gateway.{n}.status_writes", f"{tag}: status writes", w.ok, bound,
            baseline_label="one per integration per flush interval",
            target=Target("ratio", "<=", 1, "coalesced"),
            note=f"status patches answered 2xx in the API server's audit log: {w.ok:,} to {w.objects:,} integrations "
            f"over {w.span:.0f}s ({by_writes}), {w.conflicts:,} answered 409 and re-read ({w.reads:,} GETs), "
            f"{w.other} other failures; {expected / max(w.ok, 1):.1f} deliveries a write; {len(w.flushes)} flushes, "
            f"the longest {longest[0]:,} writes in {longest[1]:.1f}s ({rate} writes/s while flushing); {lease}; "
            f"bound: integrations written × (⌊{w.span:.0f}s / {FLUSH_SECONDS:g}s⌋ + 1); the gateway's own count: "
            f"{patch_ok:,} ok, {patch_conflict:,} conflict, {patch_failed:,} failed",
        ),
        Measure(
            f"gateway.{n}.status_write_min_gap", f"{tag}: least time between two writes of one integration",
            w.min_gap, FLUSH_SECONDS, unit="s", baseline_label="flush interval",
            target=Target("ratio", ">=", 1, "at most one write per integration per flush interval"),
            note="the audit log's request times of the 2xx status patches, per integration"
            + ("" if w.min_gap is not None else "; no integration was written twice"),
        ),
    ]  # fmt: skip
