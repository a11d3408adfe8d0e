"""A month of bookkeeping, model-based: 30 nights in which a seeded bookkeeper creates, applies later,
re-applies, edits, voids and deletes payments and invoices and applies credits (the QBO sandbox's
`bookkeeping_day`), while the real `qbo-operator sync` runs each night against the real control plane,
SIGKILLed at a random point on about a third of the nights and then run again.

Webhook-gated nights are on (docs/sync.md): the sandbox sends Intuit's signed webhooks to a real gateway
process, which records them in status and vouches for them in its coverage Lease. Some nights are quiet (no
bookkeeping: the night must make no metered QuickBooks call), on some the gateway is down while the books
change (Intuit retries; the restarted gateway's coverage makes the night read), and on some Intuit drops the
webhooks outright (nobody can know: the changes wait for the next read).

After every night, Green Check's current records must equal the projection of QuickBooks' books as they
are (payments created after the connection), computed by `tests.support.sync.expected_records` from the
sandbox's raw JSON, never with the product's mapping, unless webhooks were dropped since the last read; and
after the month's last, requested run, always. Several seeds run in `make test`; 100 run under the `slow`
mark."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from qbo_operator.harness.controlplane import free_port
from tests.support.ledger import Report
from tests.support.processes import Gateway, Keys
from tests.support.sync import CRB, E2E, mismatches, sandboxes
from tests.support.webhooks import sync_events_sent

pytestmark = pytest.mark.e2e

NIGHTS = 30
# Small pages and batches, so that a night is several requests and a kill can fall between them.
NIGHT_ENV = {"QBO_SYNC_SETTLE_SECONDS": "0", "QBO_SYNC_PAGE_SIZE": "10", "QBO_SYNC_BATCH_SIZE": "4"}
KINDS = ("books", "quiet", "gateway_down", "dropped")
WEIGHTS = (14, 6, 2, 3)


@asynccontextmanager
async def books(cluster: Any, namespace: str, seed: int, tmp_path: Path) -> AsyncIterator[tuple[E2E, Gateway]]:
    """A small company (history before the connection) whose ties come back shuffled, Green Check, and a
    gateway receiving the company's webhooks (its coverage Lease in the test's namespace, where the sync reads it)."""
    keys, port = Keys(verifier_token="verifier-token"), free_port()
    async with sandboxes(
        cluster, namespace, name=f"month-{seed}", payments=30, history_days=10, seed=seed, tie_shuffle_seed=seed,
        webhook_url=f"http://127.0.0.1:{port}/webhooks/quickbooks",
    ) as e:  # fmt: skip
        e.create_integration()
        gw = Gateway(cluster.kubeconfig, keys, tmp_path / f"gateway-{seed}.log", port=port,
                     args=["--webhook-flush-seconds", "0.2"], extra_env={"POD_NAMESPACE": namespace})  # fmt: skip
        await asyncio.to_thread(gw.start)
        try:
            yield e, gw
        finally:
            await asyncio.to_thread(gw.stop)


async def webhooks_recorded(e: E2E, before: int, counted: int) -> None:
    """Every webhook the sandbox sent is acknowledged, and the gateway has written its count to status."""
    assert await e.qbo.webhooks.wait_idle(60), "the sandbox's webhooks were not all acknowledged"
    want = counted + len(sync_events_sent(e.qbo.webhook_deliveries[before:]))
    for _ in range(500):
        if ((e.status().get("webhook") or {}).get("eventsSinceLastSync") or 0) >= want:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"the gateway did not record {want} events")


async def bookkeeping_night(e: E2E, gw: Gateway, kind: str, seed: int, changes: int) -> list[str]:
    """The day's bookkeeping as `kind` says, its webhooks delivered (or not) before the night's run."""
    if kind == "quiet":
        return []
    before = len(e.qbo.webhook_deliveries)
    counted = int((e.status().get("webhook") or {}).get("eventsSinceLastSync") or 0)
    url = e.qbo.webhooks.url
    if kind == "dropped":
        e.qbo.configure_webhooks(None)  # Intuit loses the day's events: nobody is told
    elif kind == "gateway_down":
        await asyncio.to_thread(gw.stop)
    done = e.qbo.bookkeep(e.realm, seed, changes=changes)
    if kind == "dropped":
        e.qbo.configure_webhooks(url)
        return done
    if kind == "gateway_down":
        await asyncio.sleep(0.5)  # Intuit's first retries fail
        await asyncio.to_thread(gw.start)
    await webhooks_recorded(e, before, counted)
    return done


async def killed_run(e: E2E, rng: random.Random, env: dict[str, str]) -> int:
    """One sync killed (SIGKILL) at a random point: before or after Green Check takes the k-th batch, or
    after the k-th QuickBooks read. Returns its exit code (-9 when the kill fell inside the run)."""
    kind, k = rng.choice(["gc_before", "gc_after", "qbo"]), rng.randint(1, 4)
    proc = await e.start(measure_rss=False, **env)
    calls: list[int] = []

    async def hook(crb: str, items: list[dict[str, Any]]) -> None:
        calls.append(1)
        if len(calls) == k and proc.returncode is None:
            proc.kill()

    e.gc.before_ingest = hook if kind == "gc_before" else None
    e.gc.after_ingest = hook if kind == "gc_after" else None
    start = e.qbo.requests["query"] + e.qbo.requests["cdc"]

    async def watch() -> None:
        while proc.returncode is None:
            if e.qbo.requests["query"] + e.qbo.requests["cdc"] - start >= k:
                proc.kill()
                return
            await asyncio.sleep(0.002)

    watcher = asyncio.ensure_future(watch()) if kind == "qbo" else None
    try:
        run = await e.finish(proc)
    finally:
        if watcher is not None:
            watcher.cancel()
        e.gc.before_ingest = e.gc.after_ingest = None
    assert run.rc in (0, -9), run.stderr
    return run.rc


async def a_month(cluster: Any, namespace: str, seed: int, report: Report, tmp_path: Path) -> dict[str, int]:
    rng = random.Random(seed)
    tally = {"nights": 0, "kills": 0, "changes": 0, "records": 0, "skipped": 0, "dropped": 0, "gateway_down": 0}
    env = {**NIGHT_ENV, "POD_NAMESPACE": namespace}
    async with books(cluster, namespace, seed, tmp_path) as (e, gw):
        owed = False  # webhooks dropped since the last read: Green Check may lag the books until the next read
        for night in range(NIGHTS):
            kind = "books" if night == 0 else rng.choices(KINDS, WEIGHTS)[0]
            done = await bookkeeping_night(e, gw, kind, seed * 1000 + night, rng.randint(2, 10))
            tally["changes"] += len(done)
            tally[kind] = tally.get(kind, 0) + 1
            owed = owed or (kind == "dropped" and bool(done))
            killed = rng.random() < 1 / 3
            if killed:  # the killed run may still have read and finished: then the rerun rightly skips
                tally["kills"] += await killed_run(e, rng, env) == -9
            metered = e.qbo.requests["query"] + e.qbo.requests["cdc"]
            run = await e.sync(measure_rss=False, **env)
            assert run.rc == 0, run.stderr
            gate = e.status()["lastSync"]["gate"]
            if gate == "NoWebhooks":
                tally["skipped"] += 1
                assert e.qbo.requests["query"] + e.qbo.requests["cdc"] == metered, "a skipped night read QuickBooks"
                assert killed or kind in ("quiet", "dropped"), f"night {night + 1} ({kind}) skipped: {done}"
            else:
                owed = False
            wrong = [] if owed else mismatches(e)
            report.record_night(len(wrong))
            assert not wrong, f"seed {seed}, night {night + 1} ({kind}, {gate}): {wrong[:5]}\nthe bookkeeper: {done}"
            tally["nights"] += 1
        # Nothing is lost: the month's last run, requested by a person, reads and catches up on every change.
        run = await e.sync(measure_rss=False, QBO_SYNC_TRIGGER="Manual", **env)
        assert run.rc == 0, run.stderr
        wrong = mismatches(e)
        assert not wrong, f"seed {seed}, after the month: {wrong[:5]}"
        tally["records"] = len(e.gc.records.get(CRB, {}))
        e.assert_no_secrets_leaked()
    return tally


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_a_month_of_bookkeeping_green_check_matches_the_books_every_night(
    cluster: Any, namespace: str, seed: int, report: Report, tmp_path: Path
) -> None:
    tally = await a_month(cluster, namespace, seed, report, tmp_path)
    assert tally["nights"] == NIGHTS and tally["changes"] >= NIGHTS
    assert tally["skipped"] >= tally["quiet"] > 0  # the quiet nights made no QuickBooks call
    print(f"\n[measure] seed {seed}: {tally} mismatches=0")


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(100, 200))
async def test_a_month_of_bookkeeping_100_seeds(
    cluster: Any, namespace: str, seed: int, report: Report, tmp_path: Path
) -> None:
    tally = await a_month(cluster, namespace, seed, report, tmp_path)
    assert tally["nights"] == NIGHTS
