"""The seeded random bookkeeper (issue #15): any day of random changes keeps the books consistent,
the same seed replays the same day, and every kind of change happens. Also the control endpoints
that let other processes drive the same changes."""

from __future__ import annotations

import random
from collections import Counter

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from qbo_operator.harness.sandbox.qbo import QboSandbox
from qbo_operator.harness.sandbox.qbo_bookkeeper import bookkeeping_day
from qbo_operator.harness.sandbox.qbo_books import check_books
from tests.support.sandbox import CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, FakeClock, SandboxFactory, snapshot


def _sandbox() -> tuple[QboSandbox, FakeClock]:
    clock = FakeClock()
    return QboSandbox(CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, clock=clock, throttle=None), clock


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10**6), multicurrency=st.booleans(), changes=st.integers(1, 40))
def test_random_days_keep_the_books(seed: int, multicurrency: bool, changes: int) -> None:
    sb, clock = _sandbox()
    realm = sb.add_company("Acme Dispensary", seed=seed % 50, payments=30, multicurrency=multicurrency)
    rng = random.Random(seed)
    for _ in range(4):
        clock.advance(86400)
        log = bookkeeping_day(sb, realm, rng, changes)
        assert len(log) == changes and all(log)
        assert check_books(sb.companies[realm]) == [], log


def _kind(line: str) -> str:
    if "auto-applied" in line:
        return "auto-applied"
    for prefix in ("new unapplied payment", "new payment", "new invoice", "applied", "moved", "added", "corrected",
                   "voided payment", "deleted payment", "edited invoice", "voided invoice", "deleted invoice",
                   "payment"):  # fmt: skip
        if line.startswith(prefix):
            return prefix
    return line


def test_same_seed_same_day_and_every_change_happens() -> None:
    runs = []
    for _ in range(2):
        sb, clock = _sandbox()
        realm = sb.add_company("Acme Dispensary", seed=2, payments=30)
        rng = random.Random(99)
        logs = []
        for _ in range(10):
            clock.advance(86400)
            logs += bookkeeping_day(sb, realm, rng, 25)
        runs.append((logs, snapshot(sb, realm)))
    assert runs[0] == runs[1]
    kinds = Counter(_kind(line) for line in runs[0][0])
    expected = {"new invoice", "new payment", "new unapplied payment", "applied", "moved", "added", "corrected",
                "voided payment", "deleted payment", "edited invoice", "payment"}  # fmt: skip
    assert expected <= set(kinds), kinds
    assert kinds["voided invoice"] + kinds["deleted invoice"] > 0
    assert kinds["auto-applied"] > 0


async def test_control_endpoints_drive_the_same_changes(make_sandbox: SandboxFactory, clock: FakeClock) -> None:
    sb = make_sandbox()
    async with sb.serve() as base, httpx.AsyncClient(base_url=f"{base}/_sandbox") as ctl:
        made = await ctl.post("/companies", json={"name": "Maple", "payments": 30, "multicurrency": True})
        assert made.status_code == 201, made.text
        realm = made.json()["realmId"]
        company = sb.companies[realm]
        customer = min(company.customers, key=int)
        inv = await ctl.post(f"/companies/{realm}/invoices", json={"customer_id": customer, "amount": "90.00"})
        inv_id = inv.json()["invoice"]["Id"]
        pay = await ctl.post(f"/companies/{realm}/payments", json={"customer_id": customer, "unapplied": "50.00"})
        pay_id = pay.json()["payment"]["Id"]
        clock.advance(86400)
        applied = await ctl.patch(f"/companies/{realm}/payments/{pay_id}", json={"invoices": [[inv_id, "50.00"]]})
        assert applied.status_code == 200 and applied.json()["payment"]["SyncToken"] == "1"
        refused = await ctl.patch(f"/companies/{realm}/payments/{pay_id}", json={"invoices": [[inv_id, "60.00"]]})
        assert refused.status_code == 400 and "cannot cover" in refused.json()["error"]
        edited = await ctl.patch(f"/companies/{realm}/invoices/{inv_id}", json={"customer_memo": "ok"})
        assert edited.json()["invoice"]["CustomerMemo"] == {"value": "ok"}
        credit = await ctl.post(f"/companies/{realm}/credits",
                                json={"kind": "JournalEntry", "customer_id": customer, "amount": "40.00"})  # fmt: skip
        credit_id = credit.json()["JournalEntry"]["Id"]
        auto = await ctl.post(f"/companies/{realm}/credits/{credit_id}/apply", json={"invoice_id": inv_id})
        assert auto.status_code == 201 and auto.json()["payment"]["TotalAmt"] == 0
        assert (await ctl.post(f"/companies/{realm}/invoices/{inv_id}/void")).json()["invoice"]["TotalAmt"] == 0
        other = await ctl.post(f"/companies/{realm}/invoices", json={"customer_id": customer, "amount": "5.00"})
        assert (await ctl.delete(f"/companies/{realm}/invoices/{other.json()['invoice']['Id']}")).status_code == 200
        day = await ctl.post(f"/companies/{realm}/bookkeeping", json={"seed": 3, "changes": 15})
        assert len(day.json()["log"]) == 15
        assert (await ctl.post("/ties", json={"seed": 8})).json() == {"tie_shuffle_seed": 8}
        assert sb.tie_shuffle_seed == 8
        assert (await ctl.post(f"/companies/{realm}/invoices", json={"amount": "1", "extra": 1})).status_code == 400
    assert check_books(company) == []
