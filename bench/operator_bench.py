"""Operator scale on the local control plane (measure 3) and the spread of the default `H` schedule.

The operator runs as the real `qbo-operator run` process under the chart's ServiceAccount (helm-installed
chart, real TokenRequest token), so every write it makes is in the API server's audit log under that
identity. N QuickbooksIntegrations are created at once (one `kubectl create` of a List over ten
namespaces); an integration has settled when its status is written for its generation and its CronJob,
ServiceAccount, Role and RoleBinding exist. Then the operator is left alone for the idle window and every
write it makes there is counted. Peak RSS is the kernel's VmHWM of the operator process."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from bench import ROOT, BenchError, Measure, Target, mib, proc_status_kb, say
from bench.gateway_bench import metric
from qbo_operator.core import names
from qbo_operator.core.config import Settings
from qbo_operator.core.models import parse_rfc3339
from qbo_operator.core.schedule import expand
from qbo_operator.harness.controlplane import ControlPlane
from qbo_operator.harness.localstack import SYSTEM_NAMESPACE, LocalStack

NAMESPACES = 10
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
CHILD_KINDS = ("cronjobs", "serviceaccounts", "roles", "rolebindings")
QUIET_GAP_SECONDS = 5.0  # the idle window starts this long after the last integration settled
SETTLE_TIMEOUT_PER_INTEGRATION = 1.5  # seconds; the wait gives up after N × this (at least 5 minutes)
RECONCILES, WRITES = "qbo_reconcile_total", "qbo_operator_api_writes_total"  # the operator's counters
WRITES_QUIET_SECONDS = 3.0  # the operator counts as quiet (worth a full look) after this long with no write
BATCH = 500  # integrations per `kubectl create`, as a platform's GitOps tool would apply a fleet
RSS_TARGET_MIB = 500.0
FLOOR_TARGET = 3.0


def namespace_of(i: int) -> str:
    return f"bench-tenants-{i % NAMESPACES:02d}"


def integration_keys(n: int) -> list[tuple[str, str]]:
    """(namespace, name) of the N integrations, spread over ten namespaces like tenants of a platform."""
    return [(namespace_of(i), f"company-{i:04d}") for i in range(n)]


# --- the schedule spread (pure) -------------------------------------------------------------------


def start_minute(expanded: str) -> tuple[int, int] | None:
    """(hour, minute) a daily `M H * * *` schedule starts at; None for anything else."""
    fields = expanded.split()
    if len(fields) != 5 or not fields[0].isdigit() or not fields[1].isdigit():
        return None
    return int(fields[1]), int(fields[0])


def slots(schedule: str) -> int:
    """How many distinct start minutes `H` can pick in a daily schedule (60 for `H 2 * * *`)."""
    fields = schedule.split()
    minute = 60 if fields[0] == "H" else 1
    hour = 24 if fields[1] == "H" else 1
    return minute * hour


@dataclass(frozen=True)
class Spread:
    integrations: int
    slots: int
    busiest: int
    unparsed: int

    @property
    def even_share(self) -> float:
        return self.integrations / self.slots


def spread(expanded: Iterable[str], schedule: str) -> Spread:
    counts: Counter[tuple[int, int]] = Counter()
    unparsed = total = 0
    for text in expanded:
        total += 1
        minute = start_minute(text)
        if minute is None:
            unparsed += 1
        else:
            counts[minute] += 1
    return Spread(total, slots(schedule), max(counts.values(), default=0), unparsed)


def spread_measure(name: str, label: str, s: Spread, schedule: str, target: bool, note: str = "") -> Measure:
    return Measure(
        name, label, s.busiest, s.even_share, baseline_label="even share",
        target=Target("ratio", "<=", 2.0, "≤ 2× the even share") if target else None,
        note=(note + "; " if note else "")
        + f"{s.integrations:,} integrations over the {s.slots} start minutes of {schedule!r}"
        + (f"; {s.unparsed} schedules were not daily" if s.unparsed else ""),
    )  # fmt: skip


def schedule_suite(n: int) -> list[Measure]:
    """The spread of the default schedule over N namespace/name seeds, computed with the operator's own
    `schedule.expand` (the same function that writes the CronJobs)."""
    schedule = Settings().qbo_default_schedule
    s = spread((expand(schedule, f"{ns}/{name}") for ns, name in integration_keys(n)), schedule)
    return [
        spread_measure(
            f"schedule.{n}.busiest_minute", f"schedule ({n:,} names): busiest start minute", s, schedule, True,
        )
    ]  # fmt: skip


# --- the audit log --------------------------------------------------------------------------------


def _when(event: dict[str, Any]) -> datetime | None:
    stamp = event.get("stageTimestamp") or event.get("requestReceivedTimestamp")
    if not stamp:
        return None
    return parse_rfc3339(stamp)


@dataclass
class AuditCount:
    writes: int = 0
    reads: int = 0
    failed_writes: int = 0
    objects: int = 0
    by_resource: Counter[str] | None = None
    last_write: datetime | None = None


def count_audit(events: Iterator[dict[str, Any]], user: str, start: datetime, end: datetime) -> AuditCount:
    """Requests by `user` that completed in [start, end): writes (with the distinct objects written) and reads."""
    out = AuditCount(by_resource=Counter())
    objects: set[tuple[str, str, str, str]] = set()
    for event in events:
        if event.get("stage") != "ResponseComplete" or (event.get("user") or {}).get("username") != user:
            continue
        when = _when(event)
        if when is None or not start <= when < end:
            continue
        verb = event.get("verb", "")
        ref = event.get("objectRef") or {}
        if verb in WRITE_VERBS:
            out.writes += 1
            out.last_write = max(out.last_write or when, when)
            resource = ref.get("resource", "?") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
            assert out.by_resource is not None
            out.by_resource[f"{verb} {resource}"] += 1
            if (event.get("responseStatus") or {}).get("code", 200) >= 400:
                out.failed_writes += 1
            name = ref.get("name") or (event.get("responseObject") or {}).get("metadata", {}).get("name") or ""
            objects.add((resource, ref.get("namespace", ""), name, str(event.get("auditID")) if not name else ""))
        else:
            out.reads += 1
    out.objects = len(objects)
    return out


# --- the run --------------------------------------------------------------------------------------


def _manifest(n: int) -> dict[str, Any]:
    items = [
        {
            "apiVersion": names.API_VERSION,
            "kind": names.KIND,
            "metadata": {"name": name, "namespace": ns},
            "spec": {"companyId": str(uuid.UUID(int=i + 1)), "companyName": f"Company {i:04d}"},
        }
        for i, (ns, name) in enumerate(integration_keys(n))
    ]
    return {"apiVersion": "v1", "kind": "List", "items": items}


def _lines(cp: ControlPlane, *args: str) -> list[list[str]]:
    out = cp.kubectl("get", *args, "--no-headers", "--request-timeout=60s").stdout
    return [line.split() for line in out.splitlines() if line.strip()]


def settled_keys(cp: ControlPlane) -> set[tuple[str, str]]:
    """Integrations whose status is written for their generation and whose CronJob and RBAC exist."""
    cr_rows = _lines(
        cp, names.PLURAL, "-A", "-o",
        "custom-columns=NS:.metadata.namespace,N:.metadata.name,G:.metadata.generation,"
        "OG:.status.observedGeneration,P:.status.phase,CJ:.status.cronJobName",
    )  # fmt: skip
    ready = {(r[0], r[1]) for r in cr_rows if len(r) == 6 and r[2] == r[3] and r[4] != "<none>" and r[5] != "<none>"}
    children: dict[str, set[tuple[str, str]]] = {}
    for kind in CHILD_KINDS:
        children[kind] = {(ns, name) for _, ns, name in _owned(cp, kind, ".metadata.name")}
    for kind in CHILD_KINDS:
        ready &= children[kind]
    return ready


@dataclass
class OperatorRun:
    """What the operator suite observed, with the audit-log window boundaries."""

    n: int
    user: str
    idle_seconds: float
    t0: datetime
    create_seconds: float = 0.0
    settle_seconds: float = 0.0
    settled: set[tuple[str, str]] = field(default_factory=set)
    detected: datetime | None = None
    quiet_start: datetime | None = None
    quiet_end: datetime | None = None
    idle_rss: int | None = None
    peak_rss: int | None = None
    schedules: list[str] = field(default_factory=list)
    start_seconds: float = 0.0  # process start to /healthz with no integrations
    restart_seconds: float | None = None  # process start to the first reconcile, all N existing
    restart_rss: int | None = None
    floor_seconds: float | None = None
    floor_writes: int = 0


def operator_suite(cp: ControlPlane, stack: LocalStack, n: int, idle_seconds: float) -> list[Measure]:
    user = f"system:serviceaccount:{SYSTEM_NAMESPACE}:{stack.service_account('operator')}"
    for i in range(min(n, NAMESPACES)):
        cp.kubectl("create", "namespace", namespace_of(i), check=False)
    say("operator: starting `qbo-operator run` under the chart's ServiceAccount")
    s0 = time.monotonic()
    proc = stack.start_operator()
    start_seconds = time.monotonic() - s0
    pid = proc.popen.pid
    try:
        time.sleep(3.0)
        idle_rss = proc_status_kb(pid, "VmRSS")
        say(f"operator: creating {n:,} QuickbooksIntegrations in batches of {BATCH}")
        run = OperatorRun(n, user, idle_seconds, datetime.now(UTC), idle_rss=idle_rss, start_seconds=start_seconds)
        m0 = time.monotonic()
        for b, batch in enumerate(_batches(n)):
            manifest = stack.workdir / f"integrations-{n}-{b}.json"
            manifest.write_text(json.dumps(batch))
            cp.kubectl("create", "-f", str(manifest), "--request-timeout=120s")
        run.create_seconds = time.monotonic() - m0
        run.settle_seconds, run.settled = _wait_settled(cp, stack, proc, set(integration_keys(n)), m0)
        run.detected = datetime.now(UTC)
        time.sleep(QUIET_GAP_SECONDS)
        run.quiet_start = datetime.now(UTC)
        _idle_window(proc, idle_seconds)
        run.quiet_end = datetime.now(UTC)
        run.peak_rss = proc_status_kb(pid, "VmHWM")
        run.schedules = _schedules(cp, {ns for ns, _ in integration_keys(n)})
        stack.stop_process("operator")
        run.restart_seconds, run.restart_rss = _restart(stack, n)
    finally:
        stack.stop_process("operator")
    measures = _operator_measures(cp, run)
    run.floor_seconds, run.floor_writes = _floor(cp, n)
    return [*measures, *_scale_measures(run)]


def _batches(n: int) -> Iterator[dict[str, Any]]:
    items = _manifest(n)["items"]
    for i in range(0, len(items), BATCH):
        yield {"apiVersion": "v1", "kind": "List", "items": items[i : i + BATCH]}


def _scrape(stack: LocalStack) -> str:
    """The operator's /metrics ("" while it does not answer)."""
    try:
        return httpx.get(stack.operator_metrics_url, timeout=30).text
    except httpx.HTTPError:
        return ""


def _restart(stack: LocalStack, n: int) -> tuple[float | None, int | None]:
    """Start the operator again over the N existing integrations: seconds from the process start to its first
    reconcile (the line it logs once the informers have listed every kind), and its peak RSS once it has
    reconciled all N again (the start-up listing queues each one)."""
    say("operator: restarting over the existing integrations")
    log = stack.workdir / "logs" / "operator.log"
    offset = log.stat().st_size if log.exists() else 0
    m0 = time.monotonic()
    proc = stack.spawn_operator()
    deadline = m0 + 600
    while time.monotonic() < deadline:
        if not proc.alive():
            raise BenchError(f"the operator exited after the restart:\n{proc.tail()}")
        with log.open("rb") as fh:
            fh.seek(offset)
            if b"first reconcile" in fh.read():
                seconds = time.monotonic() - m0
                say(f"operator: first reconcile {seconds:.1f}s after the restart; waiting for all {n:,}")
                while (done := metric(_scrape(stack), RECONCILES)) < n and time.monotonic() < deadline and proc.alive():
                    time.sleep(max(1.0, n / 2000))
                say(f"operator: {done:,.0f} reconciles {time.monotonic() - m0:.1f}s after the restart")
                return seconds, proc_status_kb(proc.popen.pid, "VmHWM")
        time.sleep(0.2)
    say("operator: no reconcile within 600s of the restart")
    return None, proc_status_kb(proc.popen.pid, "VmHWM")


def _floor(cp: ControlPlane, n: int) -> tuple[float | None, int]:
    """The bare client (`bench/operator_floor.py`) making the operator's writes for N integrations."""
    for i in range(min(n, NAMESPACES)):
        cp.kubectl("create", "namespace", f"bench-floor-{i:02d}", check=False)
    say(f"operator: the floor, a bare client making the same writes for {n:,} integrations")
    env = cp.env()  # with PYTHONPATH when the caller set one: the floor runs the same checkout
    out = subprocess.run(
        [sys.executable, "-m", "bench.operator_floor", str(cp.kubeconfig), SYSTEM_NAMESPACE, str(n)],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=7200,
    )  # fmt: skip
    if out.returncode != 0:
        raise BenchError(f"the floor client failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    say(f"operator: floor {result['seconds']:.1f}s for {result['writes']:,} writes")
    return float(result["seconds"]), int(result["writes"])


def _scale_measures(run: OperatorRun) -> list[Measure]:
    """The issue's figures at scale: settle time against the floor, RSS per integration, restart."""
    n, tag = run.n, f"operator ({run.n:,} integrations)"
    per = ((run.peak_rss or 0) - (run.idle_rss or 0)) / n if run.peak_rss and run.idle_rss else None
    worst = max(run.peak_rss or 0, run.restart_rss or 0) or None
    return [
        Measure(
            f"operator.{n}.settle_vs_floor", f"{tag}: time to settle vs the API server's floor", run.settle_seconds,
            run.floor_seconds, unit="s", baseline_label="bare client, same writes",
            target=Target("ratio", "<=", FLOOR_TARGET, f"≤ {FLOOR_TARGET:g}× the floor"),
            note=f"floor: {run.floor_writes:,} writes ({run.floor_writes / n:.0f} per integration) by a bare client, "
            "16 integrations at a time, measured in this run after the operator stopped",
        ),
        Measure(
            f"operator.{n}.peak_rss_target", f"{tag}: operator peak RSS against the issue's bound",
            mib(worst), RSS_TARGET_MIB, unit="MiB", baseline_label="the issue's bound",
            target=Target("value", "<=", RSS_TARGET_MIB, f"≤ {RSS_TARGET_MIB:g} MiB"),
            note=f"the higher of two peaks: creating all {n:,}, {mib(run.peak_rss) or 0:.0f} MiB; "
            f"restarting over them until all are reconciled, {mib(run.restart_rss) or 0:.0f} MiB",
        ),
        Measure(
            f"operator.{n}.rss_per_integration", f"{tag}: peak RSS per integration", per, None, unit="KiB",
            note="(peak − idle RSS) / N",
        ),
        Measure(
            f"operator.{n}.restart_to_first_reconcile", f"{tag}: restart to the first reconcile",
            run.restart_seconds, run.start_seconds, unit="s", baseline_label="start with no integrations",
            note="process start to the operator's `first reconcile` log line (no reconcile runs before the "
            "informers have listed every kind); the baseline is process start to /healthz with none",
        ),
    ]  # fmt: skip


def _idle_window(proc: Any, idle_seconds: float) -> None:
    """Wait out the idle window, failing if the operator exits meanwhile."""
    say(f"operator: idle window of {idle_seconds:.0f}s (counting every write the operator makes)")
    deadline = time.monotonic() + idle_seconds
    while time.monotonic() < deadline:
        if not proc.alive():
            raise BenchError(f"the operator exited during the idle window:\n{proc.tail()}")
        left = deadline - time.monotonic()
        time.sleep(min(30.0, max(left, 0.0)))
        if left > 30:
            say(f"operator: idle, {deadline - time.monotonic():.0f}s left")


def _owned(cp: ControlPlane, kind: str, column: str) -> Iterator[tuple[str, str, str]]:
    """(`column`, integration namespace, integration name) of each labelled object of `kind`: the sync CronJob and
    ServiceAccount live in the release namespace and name their integration's namespace in a label."""
    escaped = {k: k.replace(".", "\\.") for k in (names.INTEGRATION_LABEL, names.INTEGRATION_NAMESPACE_LABEL)}
    rows = _lines(
        cp, kind, "-A", "-l", names.INTEGRATION_LABEL, "-o",
        f"custom-columns=NS:.metadata.namespace,INS:.metadata.labels.{escaped[names.INTEGRATION_NAMESPACE_LABEL]},"
        f"I:.metadata.labels.{escaped[names.INTEGRATION_LABEL]},C:{column}",
    )  # fmt: skip
    for r in rows:
        if len(r) >= 4:
            yield " ".join(r[3:]), (r[0] if r[1] == "<none>" else r[1]), r[2]


def _schedules(cp: ControlPlane, ours: set[str]) -> list[str]:
    """The schedules of the CronJobs the operator wrote for the bench's namespaces."""
    return [schedule for schedule, ns, _ in _owned(cp, "cronjobs", ".spec.schedule") if ns in ours]


def _operator_measures(cp: ControlPlane, run: OperatorRun) -> list[Measure]:
    assert run.detected is not None and run.quiet_start is not None and run.quiet_end is not None
    n, user, t0, idle_seconds, settled = run.n, run.user, run.t0, run.idle_seconds, run.settled
    create_seconds, settle_seconds, idle_rss, peak_rss = (
        run.create_seconds,
        run.settle_seconds,
        run.idle_rss,
        run.peak_rss,
    )
    busy = count_audit(cp.audit_events(), user, t0, run.quiet_start)
    settling = count_audit(cp.audit_events(), user, t0, run.detected)
    if settling.last_write is not None and len(settled) >= n:
        settle_seconds = (settling.last_write - t0).total_seconds()  # the audit log's clock, not the polling
        run.settle_seconds = settle_seconds
    idle = count_audit(cp.audit_events(), user, run.quiet_start, run.quiet_end)
    before = count_audit(cp.audit_events(), user, datetime(1970, 1, 1, tzinfo=UTC), t0)
    top = ", ".join(f"{k} {v}" for k, v in (busy.by_resource or Counter()).most_common(8))
    schedule = Settings().qbo_default_schedule
    observed = spread(run.schedules, schedule)
    tag = f"operator ({n:,} integrations)"
    return [
        Measure(
            f"operator.{n}.settle_seconds", f"{tag}: time until all settled", settle_seconds, create_seconds,
            unit="s", baseline_label="kubectl create of all",
            note=f"{len(settled):,}/{n:,} settled (status for their generation, CronJob, ServiceAccount, Role, "
            "RoleBinding); the value is the operator's last write before all were seen settled (audit log), the "
            "baseline how long `kubectl create` took to get the N objects accepted",
        ),
        Measure(
            f"operator.{n}.settled", f"{tag}: integrations settled", len(settled), n, baseline_label="applied",
            target=Target("ratio", "==", 1, "all settled"),
        ),
        Measure(
            f"operator.{n}.writes_per_integration", f"{tag}: API writes per integration", busy.writes / n,
            busy.objects / n, baseline_label="objects written",
            note=f"{busy.writes:,} writes ({busy.failed_writes} refused) to {busy.objects:,} distinct objects "
            f"by {user} until {QUIET_GAP_SECONDS:.0f}s after settling; {busy.reads:,} reads; {before.writes} writes at "
            f"start-up before the integrations existed; top: {top}",
        ),
        Measure(
            f"operator.{n}.idle_writes", f"{tag}: writes in {idle_seconds:.0f} idle seconds", idle.writes, 0,
            target=Target("value", "==", 0, "no writes when nothing changes"),
            note=f"{idle.reads:,} reads (watches and their renewals) in the same window"
            + (f"; writes: {dict(idle.by_resource or {})}" if idle.writes else ""),
        ),
        Measure(
            f"operator.{n}.peak_rss", f"{tag}: operator peak RSS", mib(peak_rss), mib(idle_rss), unit="MiB",
            baseline_label="idle, 0 integrations",
            note=f"VmHWM of the operator process; {((peak_rss or 0) - (idle_rss or 0)) / n:.0f} KiB per integration"
            if peak_rss and idle_rss else "",
        ),
        spread_measure(
            f"operator.{n}.cronjob_busiest_minute", f"{tag}: busiest CronJob start minute", observed, schedule,
            n >= 1_000,
            note="from the CronJobs the operator wrote" + (
                f"; with only {n} integrations the 2× bound is below what hashing can reach, so the target is "
                "checked at 1,000 (full run, and the schedule row)" if n < 1_000 else ""),
        ),
    ]  # fmt: skip


def _wait_settled(
    cp: ControlPlane, stack: LocalStack, proc: Any, wanted: set[tuple[str, str]], started: float
) -> tuple[float, set[tuple[str, str]]]:
    """Wait until every wanted integration is settled. The operator's /metrics says when it has gone quiet (its
    write counter unchanged for WRITES_QUIET_SECONDS after at least N reconciles); only then do we list every CR
    and child to check, since each such look lists 5N objects through kubectl (at 10,000, several seconds of
    both cores, which the operator would otherwise be measured against)."""
    n = len(wanted)
    timeout = max(300.0, n * SETTLE_TIMEOUT_PER_INTEGRATION)
    last_report, writes, quiet_since = 0.0, -1.0, time.monotonic()
    settled: set[tuple[str, str]] = set()
    while True:
        if not proc.alive():
            raise BenchError(f"the operator exited:\n{proc.tail()}")
        elapsed = time.monotonic() - started
        text = _scrape(stack)
        now_writes, reconciles = metric(text, WRITES), metric(text, RECONCILES)
        if now_writes != writes:
            writes, quiet_since = now_writes, time.monotonic()
        quiet = reconciles >= n and time.monotonic() - quiet_since >= WRITES_QUIET_SECONDS
        if quiet or elapsed > timeout:
            settled = settled_keys(cp) & wanted
            if len(settled) >= n:
                say(f"operator: all {n:,} settled after {elapsed:.1f}s")
                return elapsed, settled
            if elapsed > timeout:
                say(f"operator: gave up after {elapsed:.0f}s with {len(settled):,}/{n:,} settled")
                return elapsed, settled
            say(f"operator: quiet, but {len(settled):,}/{n:,} settled after {elapsed:.0f}s")
            quiet_since = time.monotonic()
        if elapsed - last_report >= 15:
            say(f"operator: {reconciles:,.0f} reconciles, {writes:,.0f} writes after {elapsed:.0f}s")
            last_report = elapsed
        time.sleep(max(1.0, n / 2000))  # a scrape of 10,000 integrations costs the operator about 0.2 s
