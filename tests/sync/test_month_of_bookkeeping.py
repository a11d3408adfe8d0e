"""A month of bookkeeping, model-based: 30 nights in which a seeded bookkeeper creates, applies later,
re-applies, edits, voids and deletes payments and invoices and applies credits (the QBO sandbox's
`bookkeeping_day`), while the real `qbo-operator sync` runs each night against the real control plane,
SIGKILLed at a random point on about a third of the nights and then run again.

After every night, Green Check's current records must equal the projection of QuickBooks' books as they
are (payments created after the connection), computed by `tests.support.sync.expected_records` from the
sandbox's raw JSON, never with the product's mapping. Several seeds run in `make test`; 100 run under the
`slow` mark."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from tests.support.ledger import Report
from tests.support.sync import CRB, E2E, mismatches, sandboxes

pytestmark = pytest.mark.e2e

NIGHTS = 30
# Small pages and batches, so that a night is several requests and a kill can fall between them.
NIGHT_ENV = {"QBO_SYNC_SETTLE_SECONDS": "0", "QBO_SYNC_PAGE_SIZE": "10", "QBO_SYNC_BATCH_SIZE": "4"}


@asynccontextmanager
async def books(cluster: Any, namespace: str, seed: int) -> AsyncIterator[E2E]:
    """A small company (history before the connection) whose ties come back shuffled, and Green Check."""
    async with sandboxes(
        cluster, namespace, name=f"month-{seed}", payments=30, history_days=10, seed=seed, tie_shuffle_seed=seed
    ) as e:
        e.create_integration()
        yield e


async def killed_run(e: E2E, rng: random.Random) -> int:
    """One sync killed (SIGKILL) at a random point: before or after Green Check takes the k-th batch, or
    after the k-th QuickBooks read. Returns its exit code (-9 when the kill fell inside the run)."""
    kind, k = rng.choice(["gc_before", "gc_after", "qbo"]), rng.randint(1, 4)
    proc = await e.start(measure_rss=False, **NIGHT_ENV)
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


async def a_month(cluster: Any, namespace: str, seed: int, report: Report) -> dict[str, int]:
    rng = random.Random(seed)
    tally = {"nights": 0, "kills": 0, "changes": 0, "records": 0}
    async with books(cluster, namespace, seed) as e:
        for night in range(NIGHTS):
            done = e.qbo.bookkeep(e.realm, seed * 1000 + night, changes=rng.randint(2, 10))
            tally["changes"] += len(done)
            if rng.random() < 1 / 3:
                tally["kills"] += await killed_run(e, rng) == -9
            run = await e.sync(measure_rss=False, **NIGHT_ENV)
            assert run.rc == 0, run.stderr
            wrong = mismatches(e)
            report.record_night(len(wrong))
            assert not wrong, f"seed {seed}, night {night + 1}: {wrong[:5]}\nthe bookkeeper: {done}"
            tally["nights"] += 1
        tally["records"] = len(e.gc.records.get(CRB, {}))
        e.assert_no_secrets_leaked()
    return tally


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_a_month_of_bookkeeping_green_check_matches_the_books_every_night(
    cluster: Any, namespace: str, seed: int, report: Report
) -> None:
    tally = await a_month(cluster, namespace, seed, report)
    assert tally["nights"] == NIGHTS and tally["changes"] >= NIGHTS * 2
    print(f"\n[measure] seed {seed}: {tally} mismatches=0")


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(100, 200))
async def test_a_month_of_bookkeeping_100_seeds(cluster: Any, namespace: str, seed: int, report: Report) -> None:
    tally = await a_month(cluster, namespace, seed, report)
    assert tally["nights"] == NIGHTS
