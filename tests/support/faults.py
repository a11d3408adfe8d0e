"""Building blocks for the fault matrix: both sandboxes serving from threads, one integration on the real
control plane (`sync.E2E`, built on here), stand-ins that rewrite answers the sandboxes cannot be told to
give, and the invariants every cell must keep.

Expected records come from the QBO sandbox's raw data (`sync.expected_records`, which never uses the
product's mapping); what Green Check holds comes from the Green Check sandbox's store."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import httpx
from aiohttp import web

from qbo_operator.core.models import parse_rfc3339
from qbo_operator.harness.controlplane import KubeClients
from qbo_operator.harness.sandbox.greencheck import GreenCheckSandbox
from qbo_operator.harness.sandbox.qbo_store import parse_time
from tests.support.kube import conditions
from tests.support.ledger import SECRETS
from tests.support.proxies import Rewrite
from tests.support.sync import (
    CRB,
    E2E,
    GC_CLIENT_ID,
    GC_CLIENT_SECRET,
    QBO_CLIENT_SECRET,
    SP_ID,
    Run,
    expected_records,
    make_qbo,
)

# Short waits so a cell takes seconds, not minutes; the logic under test is the same.
TUNING = {
    "QBO_SYNC_PAGE_SIZE": "40",
    "QBO_SYNC_BATCH_SIZE": "20",
    "QBO_SYNC_TIMEOUT_SECONDS": "1",
    "QBO_SYNC_RETRIES": "2",
    "QBO_SYNC_BACKOFF_SECONDS": "0.05",
    "QBO_SYNC_BACKOFF_MAX_SECONDS": "0.2",
    "QBO_THROTTLE_WAIT_SECONDS": "0.2",
}


@contextmanager
def greencheck_in_thread(gc: GreenCheckSandbox) -> Iterator[str]:
    """The Green Check sandbox serving from a thread of its own (the QBO sandbox has serve_in_thread)."""
    loop = asyncio.new_event_loop()
    ready, stops, urls = threading.Event(), list[asyncio.Event](), list[str]()

    async def main() -> None:
        stop = asyncio.Event()
        stops.append(stop)
        async with gc.serve() as url:
            urls.append(url)
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=lambda: loop.run_until_complete(main()), name="greencheck", daemon=True)
    thread.start()
    if not ready.wait(30):
        raise RuntimeError("the Green Check sandbox did not start")
    try:
        yield urls[0]
    finally:
        loop.call_soon_threadsafe(stops[0].set)
        thread.join(30)
        loop.close()


@contextmanager
def stage(cluster: KubeClients, namespace: str, *, history: int = 20, seed: int = 1) -> Iterator[E2E]:
    """Both sandboxes serving from threads and one integration connected at its middle history payment.
    Every secret value involved, and everything the stage printed, is registered for the hygiene scan."""
    qbo = make_qbo()
    realm = qbo.add_company("Acme Dispensary", seed=seed, payments=history, history_days=10)
    times = sorted(parse_time(p["MetaData"]["CreateTime"]) for p in qbo.companies[realm].payments.values())
    connected_at = times[len(times) // 2].astimezone(UTC)
    gc = GreenCheckSandbox(GC_CLIENT_ID, GC_CLIENT_SECRET, SP_ID)
    with qbo.serve_in_thread(), greencheck_in_thread(gc) as gc_url:
        e = E2E(cluster, namespace, qbo, gc, gc_url, realm=realm, connected_at=connected_at)
        e.create_integration()
        try:
            yield e
        finally:
            register_secrets(e)


def register_secrets(e: E2E) -> None:
    SECRETS.add_secrets([QBO_CLIENT_SECRET], "QBO client secret")
    SECRETS.add_secrets([GC_CLIENT_SECRET], "Green Check client secret")
    for grant in e.qbo.authority.grants.values():
        SECRETS.add_secrets([grant.refresh_token], "QBO refresh token")
        SECRETS.add_secrets(list(grant.access_tokens), "QBO access token")
    SECRETS.add_secrets(list(e.gc._tokens), "Green Check access token")
    SECRETS.add_secrets(e.secret_values(), "token from the token Secret")
    for i, text in enumerate(e.outputs):
        SECRETS.add_text(f"{e.namespace}: sync output {i}", text)
    SECRETS.add_text(f"{e.namespace}: status", json.dumps(e.status()))
    SECRETS.add_text(f"{e.namespace}: Events", json.dumps(e.events()))


# --- invariants ------------------------------------------------------------------------------------


@dataclass
class Delivery:
    """What a cell's Green Check holds against what QBO has."""

    expected: int
    delivered: int
    duplicated: int
    lost: int
    invented: int
    watermark_ok: bool


def check_delivery(e: E2E, *, complete: bool, status: dict[str, Any] | None = None) -> Delivery:
    """Nothing invented, nothing twice, the watermark never past a payment still undelivered; with
    `complete`, also nothing lost. Returns the figures. `status`: the CR's status if just read."""
    expected = expected_records(e.qbo, e.realm, e.connected_at)
    held = e.gc.records.get(CRB, {})
    invented = sorted(set(held) - set(expected))
    pairs = [(r["payment"]["id"], r["invoice"]["id"]) for r in held.values()]
    duplicated = (len(pairs) - len(set(pairs))) + (e.gc.results["created"] - len(held))
    missing = sorted(set(expected) - set(held))
    watermark = (e.status() if status is None else status).get("syncWatermark")
    watermark_ok = True
    if watermark and missing:
        mark = parse_rfc3339(watermark)
        payments = e.qbo.companies[e.realm].payments
        oldest = min(parse_time(payments[expected[eid]["payment"]]["MetaData"]["CreateTime"]) for eid in missing)
        watermark_ok = mark <= oldest
    assert invented == [], f"records Green Check holds that QBO never had: {invented[:5]}"
    assert duplicated == 0, f"{duplicated} duplicate records at Green Check"
    assert watermark_ok, f"syncWatermark {watermark} is past a payment not yet delivered"
    if complete:
        assert missing == [], f"lost: {missing[:5]} ({len(missing)} records)"
    return Delivery(len(expected), len(held), duplicated, len(missing) if complete else 0, len(invented), watermark_ok)


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return conditions({"status": status}).get(type_, {})


def no_traceback(run: Run) -> None:
    assert "Traceback (most recent call last)" not in run.stderr, f"the sync crashed:\n{run.stderr[-3000:]}"


# --- stand-ins ---------------------------------------------------------------------------------------

HUGE = "1E+10000000"  # a JSON number Decimal can hold but no amount of money is


def garble_amount(payment_id: str) -> Rewrite:
    """QBO answers with one payment's amounts replaced by an absurd (but syntactically valid) number."""

    async def rewrite(request: web.Request, resp: httpx.Response) -> web.Response | None:
        if "/query" not in request.path or f'"Id":"{payment_id}"' not in resp.text:
            return None
        body = json.loads(resp.text)
        for row in (body.get("QueryResponse") or {}).get("Payment") or []:
            if row.get("Id") == payment_id:
                row["TotalAmt"] = "@@HUGE@@"
                for line in row.get("Line") or []:
                    line["Amount"] = "@@HUGE@@"
        text = json.dumps(body).replace('"@@HUGE@@"', HUGE)
        return web.Response(status=200, text=text, content_type="application/json")

    return rewrite


def echo_bearer_on_ingest(after: int) -> Rewrite:
    """A 502 error page from a proxy in front of Green Check that echoes the request's headers (as some
    gateways' debug pages do), on every ingestion request after the first `after`."""
    seen = {"n": 0}

    async def rewrite(request: web.Request, resp: httpx.Response) -> web.Response | None:
        if not request.path.endswith("/invoice-payments"):
            return None
        seen["n"] += 1
        if seen["n"] <= after:
            return None
        auth = request.headers.get("Authorization", "")
        return web.Response(
            status=502, text=f"upstream refused Authorization: {auth} (request {seen['n']})", content_type="text/plain"
        )

    return rewrite


def bearer_tokens_in(text: str) -> list[str]:
    return re.findall(r"Bearer ([A-Za-z0-9_\-.]{20,})", text)
