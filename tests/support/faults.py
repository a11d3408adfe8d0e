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
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

import httpx
from aiohttp import web

from qbo_operator.core.models import RejectedStatus, parse_rfc3339
from qbo_operator.harness.controlplane import KubeClients
from qbo_operator.harness.sandbox.greencheck import GreenCheckSandbox
from qbo_operator.harness.sandbox.qbo import QboSandbox
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

Json = dict[str, Any]

# Short waits so a cell takes seconds, not minutes; the logic under test is the same.
TUNING = {
    "QBO_SYNC_PAGE_SIZE": "40",
    "QBO_SYNC_BATCH_SIZE": "20",
    "QBO_SYNC_TIMEOUT_SECONDS": "1",
    "QBO_SYNC_RETRIES": "2",
    "QBO_SYNC_BACKOFF_SECONDS": "0.05",
    "QBO_SYNC_BACKOFF_MAX_SECONDS": "0.2",
    "QBO_THROTTLE_WAIT_SECONDS": "0.2",
    "QBO_SYNC_SETTLE_SECONDS": "1",  # the watermark follows a cell's changes (the fault matrix's docstring)
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

# The record fields the projection (`sync.expected_records`) says: (section, field) -> projection key.
COMPARED = {
    ("payment", "id"): "payment",
    ("payment", "amount"): "amount",
    ("payment", "credit_applied"): "credit",
    ("invoice", "id"): "invoice",
    ("invoice", "number"): "doc_number",
    ("invoice", "total"): "total",
    ("invoice", "open_balance"): "balance",
}


# What can be compared when the QBO sandbox runs in another process: its control API lists payments, not invoices.
PAYMENT_SIDE = {k: COMPARED[k] for k in (("payment", "id"), ("payment", "amount"), ("payment", "credit_applied"))}
PAYMENT_SIDE[("invoice", "id")] = COMPARED[("invoice", "id")]


class _AnyInvoice(dict[str, dict[str, Any]]):
    """Every invoice exists, its fields unknown: the stand-in for a company whose invoices cannot be read."""

    def get(self, key: str, default: Any = None) -> dict[str, Any]:
        return {"DocNumber": None, "TotalAmt": 0, "Balance": 0}


def payments_projection(realm: str, payments: list[dict[str, Any]], connected_at: datetime) -> dict[str, Json]:
    """`sync.expected_records` over payments read through the control API of a QBO sandbox in another
    process (`Product.payments`). Its invoices cannot be read there, so each is taken as existing with unknown
    fields: audit the result with `compared=PAYMENT_SIDE`."""
    company = SimpleNamespace(payments={p["Id"]: p for p in payments}, invoices=_AnyInvoice())
    view = SimpleNamespace(companies={realm: company})
    return expected_records(cast(QboSandbox, view), realm, connected_at)


@dataclass(frozen=True)
class Audit:
    """Green Check's current records against the projection, by external id (pure; `audit` builds it).

    `duplicated`: current records beyond the first for one (payment, invoice) pair: a re-send is `unchanged`
    and a record retracted then created again is held once, so neither counts. `lost`: expected records
    Green Check does not hold. `false`: held records the projection does not have (`invented`) or whose
    amount, credit or invoice fields differ from it (`wrong`)."""

    expected: int
    delivered: int
    duplicated: int
    lost: tuple[str, ...]
    invented: tuple[str, ...]
    wrong: tuple[str, ...]

    @property
    def false(self) -> tuple[str, ...]:
        return self.invented + self.wrong

    @property
    def mismatches(self) -> int:
        """Every way Green Check departs from the projection (what `report.record_night` takes)."""
        return self.duplicated + len(self.lost) + len(self.false)


def differences(record: Json, want: Json, compared: Mapping[tuple[str, str], str] = COMPARED) -> list[str]:
    """`section.field: held != expected` for every compared field where the record departs from the projection."""
    out = []
    for (section, name), key in compared.items():
        held = (record.get(section) or {}).get(name)
        if held != want[key]:
            out.append(f"{section}.{name}: {held!r} != {want[key]!r}")
    return out


def audit(
    held: dict[str, Json], expected: dict[str, Json], compared: Mapping[tuple[str, str], str] = COMPARED
) -> Audit:
    """What Green Check holds (`sb.records[crb]`) against what it must hold (`sync.expected_records`)."""
    pairs = Counter((r["payment"]["id"], r["invoice"]["id"]) for r in held.values())
    return Audit(
        expected=len(expected),
        delivered=len(set(held) & set(expected)),
        duplicated=sum(n - 1 for n in pairs.values()),
        lost=tuple(sorted(set(expected) - set(held))),
        invented=tuple(sorted(set(held) - set(expected))),
        wrong=tuple(
            sorted(eid for eid in set(held) & set(expected) if differences(held[eid], expected[eid], compared))
        ),
    )


@dataclass
class Delivery:
    """What a cell's Green Check holds against what QBO has."""

    expected: int
    delivered: int
    duplicated: int
    lost: int
    invented: int
    watermark_ok: bool


def change_time(e: E2E, payment_id: str, invoice_id: str | None) -> datetime | None:
    """When QBO last changed what a record says (its payment or its invoice, whichever is later); None if the
    payment is gone (a delete the sync reads from CDC, with no time of its own here)."""
    company = e.qbo.companies[e.realm]
    payment = company.payments.get(payment_id)
    if payment is None:
        return None
    times = [parse_time(payment["MetaData"]["LastUpdatedTime"])]
    invoice = company.invoices.get(invoice_id) if invoice_id else None
    if invoice is not None and "MetaData" in invoice:
        times.append(parse_time(invoice["MetaData"]["LastUpdatedTime"]))
    return max(times)


def _pending_since(
    e: E2E, ids: list[str], held: dict[str, dict[str, Any]], expected: dict[str, Any]
) -> datetime | None:
    """The oldest change behind records Green Check does not hold as QBO has them (lost, invented or wrong)."""
    times = []
    for eid in ids:
        rec = expected.get(eid) or {"payment": held[eid]["payment"]["id"], "invoice": held[eid]["invoice"]["id"]}
        at = change_time(e, rec["payment"], rec["invoice"])
        if at is not None:
            times.append(at)
    return min(times, default=None)


def _why(eid: str, a: Audit, held: dict[str, Json], expected: dict[str, Json]) -> str:
    if eid in a.lost:
        return f"{eid} lost"
    if eid in a.invented:
        return f"{eid} held but not expected"
    return f"{eid} differs: {differences(held[eid], expected[eid])}"


def check_delivery(e: E2E, *, complete: bool, status: dict[str, Any] | None = None) -> Delivery:
    """Nothing twice, the watermark never past a change not yet delivered (payments kept in `status.rejected`
    aside: they are retried every run whatever the watermark); with `complete` (a run that succeeded), also
    nothing lost and nothing false. Returns the figures. `status`: the CR's status if just read."""
    status = e.status() if status is None else status
    expected = expected_records(e.qbo, e.realm, e.connected_at)
    held = dict(e.gc.records.get(CRB, {}))
    a = audit(held, expected)
    rejected = {r.payment_id for r in RejectedStatus.model_validate(status.get("rejected") or {}).payments}
    undone = [eid for eid in (*a.lost, *a.false) if eid.split(":")[3] not in rejected]
    pending = _pending_since(e, undone, held, expected)
    watermark = status.get("syncWatermark")
    watermark_ok = not watermark or pending is None or parse_rfc3339(watermark) <= pending
    assert a.duplicated == 0, f"{a.duplicated} duplicate records at Green Check"
    assert watermark_ok, f"syncWatermark {watermark} is past a change not yet delivered ({pending}): " + "; ".join(
        _why(eid, a, held, expected) for eid in undone[:5]
    )
    if complete:
        assert a.lost == (), f"lost: {list(a.lost[:5])} ({len(a.lost)} records)"
        assert a.invented == (), f"records Green Check holds that QBO does not have: {list(a.invented[:5])}"
        explained = [f"{eid}: {differences(held[eid], expected[eid])}" for eid in a.wrong[:5]]
        assert a.wrong == (), f"{len(a.wrong)} records differ from QBO: {explained}"
    return Delivery(a.expected, a.delivered, a.duplicated, len(a.lost), len(a.false), watermark_ok)


async def run_sync(e: E2E, env: Mapping[str, str]) -> Run:
    """`qbo-operator sync` once with these extra environment variables (`E2E.sync` without its flags)."""
    proc = await asyncio.create_subprocess_exec(
        *e.command(), env=e.env(**env), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    return await e.finish(proc)


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return conditions({"status": status}).get(type_, {})


def no_traceback(run: Run) -> None:
    assert "Traceback (most recent call last)" not in run.stderr, f"the sync crashed:\n{run.stderr[-3000:]}"


# --- stand-ins ---------------------------------------------------------------------------------------

HUGE = "1E+10000000"  # a JSON number Decimal can hold but no amount of money is


def _payment_rows(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The Payment rows of a query answer or of a CDC answer (`CDCResponse[].QueryResponse[].Payment`)."""
    rows = list((body.get("QueryResponse") or {}).get("Payment") or [])
    for response in body.get("CDCResponse") or []:
        for part in response.get("QueryResponse") or []:
            rows += part.get("Payment") or []
    return rows


def garble_amount(payment_id: str) -> Rewrite:
    """QBO answers (queries and CDC) with one payment's amounts replaced by an absurd (but syntactically
    valid) number."""

    async def rewrite(request: web.Request, resp: httpx.Response) -> web.Response | None:
        if not request.path.endswith(("/query", "/cdc")) or f'"Id":"{payment_id}"' not in resp.text:
            return None
        body = json.loads(resp.text)
        for row in _payment_rows(body):
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
