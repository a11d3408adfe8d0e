"""The rows of measure 1 (sync efficiency) from the runs' counts: each size's seven rows and the quiet night's two.

Kept apart from the runs (`bench.sync_bench`) so the arithmetic reads on its own: every QBO row compares the
sandbox's count with the census's lower bound (`bench.sync_census`), as value / bound."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from bench import Measure, Target, skipped

if TYPE_CHECKING:
    from bench.sync_bench import Company, RunResult
    from bench.sync_census import Census

Row = tuple[str, str, Target | None, str]  # key, label, target, unit
GC_BATCH = 500  # payment sets and records in one Green Check request


def per_1000(count: int, of: int) -> float:
    return count * 1000.0 / of if of else math.nan


def kinds(run: RunResult) -> str:
    """`2 query + 1 cdc`: the run's metered requests by kind."""
    return " + ".join(f"{n} {k}" for k, n in run.qbo_kinds.items() if n) or "none"


def size_rows(n: int) -> list[Row]:
    """The seven rows of one size, with the targets that apply at that size."""
    return [
        ("qbo_requests_per_1000_payments", "QBO requests / 1,000 payments",
         Target("ratio", "<=", 1.1, "≤ 1.1× the lower bound"), ""),
        ("qbo_requests_vs_naive", "QBO requests vs naive peer",
         Target("ratio", "<=", 0.01, "≥ 100× fewer than the naive peer") if n == 10_000 else None, ""),
        ("greencheck_requests_per_1000_records", "Green Check requests / 1,000 records", None, ""),
        ("records_delivered", "records at Green Check / expected",
         Target("ratio", "==", 1, "nothing lost or duplicated"), ""),
        ("wall_seconds_vs_floor", "wall time vs lower-bound reads", None, "s"),
        ("wall_seconds_vs_naive", "wall time vs naive peer", None, "s"),
        ("peak_rss", "sync peak RSS",
         Target("ratio", "<=", 1.5, "≤ 1.5× the RSS at 1,000") if n == 100_000 else None, "MiB"),
    ]  # fmt: skip


def size_measures(
    n: int,
    company: Company | None,
    ours: RunResult | None,
    floor: RunResult | None,
    naive: RunResult | None,
    rss: dict[int, float],
    base: int | None,
    why_skipped: str = "",
) -> list[Measure]:
    """The seven rows of one size; all of them skipped (with `why_skipped`) when `ours` is None."""
    key, tag = f"sync.{n}", f"sync {n:,}"
    rows = size_rows(n)
    if ours is None or company is None or floor is None:
        return [skipped(f"{key}.{k}", f"{tag}: {label}", why_skipped, t, u) for k, label, t, u in rows]
    t = {k: target for k, _, target, _ in rows}
    lbl = {k: f"{tag}: {label}" for k, label, _, _ in rows}
    return _request_measures(key, t, lbl, company, ours, floor, naive) + _outcome_measures(
        n, key, t, lbl, company, ours, floor, naive, rss, base
    )


def _request_measures(
    key: str,
    t: dict[str, Target | None],
    lbl: dict[str, str],
    company: Company,
    ours: RunResult,
    floor: RunResult,
    naive: RunResult | None,
) -> list[Measure]:
    """Requests to QBO and Green Check against their lower bounds and the naive peer."""
    c = company.census
    p, bound, records = c.payments, c.bound, c.expected_records
    gc_floor = 1 + math.ceil(max(p, records) / GC_BATCH)
    mismatch = "" if floor.qbo_requests == bound.requests else f" (the floor reader made {floor.qbo_requests})"
    got = floor.objects_read
    wanted = {"payments": c.changed_payments, "deleted": c.deleted_payments, "invoices": len(c.changed_invoices)}
    floor_read = ", ".join(f"{got.get(k)}/{v} {k}" for k, v in wanted.items())
    if got != wanted:
        floor_read += " (NOT everything: the bound is not reached by a correct client)"
    return [
        Measure(
            f"{key}.qbo_requests_per_1000_payments", lbl["qbo_requests_per_1000_payments"],
            per_1000(ours.qbo_requests, p), per_1000(bound.requests, p), baseline_label="lower bound",
            target=t["qbo_requests_per_1000_payments"],
            note=f"{ours.qbo_requests} requests ({kinds(ours)}; {ours.qbo_throttled} throttled) against the lower "
            f"bound {bound.requests} = {bound.formula}{mismatch}: ratio {ours.qbo_requests / bound.requests:.3f}; "
            f"the floor reader read {floor_read}; {p:,} changed payments in scope link {c.linked_invoices:,} "
            f"invoices; the sync's own count (status.lastSync.qboRequests): {ours.last_sync.get('qboRequests')}",
        ),
        Measure(
            f"{key}.qbo_requests_vs_naive", lbl["qbo_requests_vs_naive"],
            ours.qbo_requests, naive.qbo_requests if naive else None, baseline_label="naive peer",
            target=t["qbo_requests_vs_naive"],
            note=f"the naive peer made {naive.qbo_requests / max(ours.qbo_requests, 1):,.0f}× as many"
            if naive else "naive peer not run at this size",
        ),
        Measure(
            f"{key}.greencheck_requests_per_1000_records", lbl["greencheck_requests_per_1000_records"],
            per_1000(ours.greencheck_requests, records),
            per_1000(naive.greencheck_requests, records) if naive else None, baseline_label="naive peer",
            note=f"{ours.greencheck_requests} requests (token + batches of ≤ {GC_BATCH} payment sets and records) "
            f"for {p:,} payment sets holding {records:,} records; lower bound 1 + ⌈{max(p, records)}/{GC_BATCH}⌉ "
            f"= {gc_floor}",
        ),
    ]  # fmt: skip


def _outcome_measures(
    n: int,
    key: str,
    t: dict[str, Target | None],
    lbl: dict[str, str],
    company: Company,
    ours: RunResult,
    floor: RunResult,
    naive: RunResult | None,
    rss: dict[int, float],
    base: int | None,
) -> list[Measure]:
    """What Green Check holds, how long it took, and the sync's memory."""
    records = company.census.expected_records
    rss_base = rss.get(base) if base is not None and base != n else None
    results = ", ".join(f"{v:,} {k}" for k, v in sorted(ours.record_results.items())) or "none"
    return [
        Measure(
            f"{key}.records_delivered", lbl["records_delivered"], ours.records_held, records,
            baseline_label="expected", target=t["records_delivered"],
            note=f"Green Check's results for our run: {results}; money is cash (the bench's own projection)"
            + (f"; the naive peer's CRB holds {naive.records_held:,}" if naive else ""),
        ),
        Measure(
            f"{key}.wall_seconds_vs_floor", lbl["wall_seconds_vs_floor"], ours.seconds, floor.seconds, unit="s",
            baseline_label="lower-bound reads",
            note=f"the floor reader made exactly {floor.qbo_requests} reads and delivered nothing; ours includes "
            "process start, token handling, mapping, delivery and status writes",
        ),
        Measure(
            f"{key}.wall_seconds_vs_naive", lbl["wall_seconds_vs_naive"], ours.seconds,
            naive.seconds if naive else None, unit="s", baseline_label="naive peer",
            note="loopback sandboxes answer in about a millisecond; against Intuit every request also pays an "
            "Internet round trip, so the naive peer's real cost grows with its request count" if naive else "",
        ),
        Measure(
            f"{key}.peak_rss", lbl["peak_rss"], rss[n], rss_base, unit="MiB",
            baseline_label=f"at {base:,}" if rss_base is not None and base is not None else "",
            target=t["peak_rss"], note="ru_maxrss of the `qbo-operator sync` process (wait4)",
        ),
    ]  # fmt: skip


def quiet_measures(
    company: Company | None, census: Census | None, run: RunResult | None, why_skipped: str = ""
) -> list[Measure]:
    """A tenant with no change since its last night: metered QBO requests against the bound (1 CDC call) and
    Green Check requests (none)."""
    qbo_label, gc_label = "quiet night: QBO requests", "quiet night: Green Check requests"
    qbo_target = Target("ratio", "<=", 1, "one CDC call, nothing else")
    gc_target = Target("value", "==", 0, "nothing to send, no call")
    if company is None or census is None or run is None:
        return [
            skipped("sync.quiet.qbo_requests", qbo_label, why_skipped, qbo_target),
            skipped("sync.quiet.greencheck_requests", gc_label, why_skipped, gc_target),
        ]
    bound = census.bound
    return [
        Measure(
            "sync.quiet.qbo_requests", qbo_label, run.qbo_requests, bound.requests, baseline_label="lower bound",
            target=qbo_target,
            note=f"the {company.size:,}-payment company's next night, its watermark past every change: "
            f"{run.qbo_requests} requests ({kinds(run)}) against {bound.requests} = {bound.formula}",
        ),
        Measure(
            "sync.quiet.greencheck_requests", gc_label, run.greencheck_requests, None, target=gc_target,
            note=f"token and ingest requests; Green Check's results: "
            f"{', '.join(f'{v} {k}' for k, v in sorted(run.record_results.items())) or 'none'}",
        ),
    ]  # fmt: skip
