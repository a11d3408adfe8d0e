"""Every change a bookkeeper makes after the fact reaches Green Check (issue #15, "What it must show").

Each test: connect → night 1 (`qbo-operator sync` as a real process against the real control plane and both
sandboxes) → the bookkeeper's change in QuickBooks → night 2 → Green Check holds exactly the projection of the
books as they now stand (`expected_records`, computed from QBO's raw JSON, never with the product's mapping),
the affected records' versions show the right transitions, and lastSync counts them. Syncs run with no settle
time so the watermark follows the changes made between the nights."""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest

from tests.support.sync import (
    CRB,
    E2E,
    assert_exact,
    cents,
    expected_records,
    sandboxes,
)

pytestmark = pytest.mark.e2e


@dataclass
class Books:
    """The connected integration and the bookkeeper's hands: fresh invoices for one customer, so each test
    knows exactly which records its change touches."""

    e: E2E
    customer: str

    @property
    def realm(self) -> str:
        return self.e.realm

    def invoice(self, amount: str, doc: str) -> str:
        row = self.e.qbo.create_invoice(self.realm, customer_id=self.customer, amount=amount, doc_number=doc)
        return str(row["Id"])

    def pay(self, invoices: Sequence[str], amounts: Sequence[str] | None = None, **kw: Any) -> str:
        row = self.e.qbo.create_payment(self.realm, invoices, amounts, customer_id=self.customer, **kw)
        return str(row["Id"])

    def eid(self, payment: str, invoice: str) -> str:
        return f"qbo:{self.realm}:payment:{payment}:invoice:{invoice}"

    def record(self, payment: str, invoice: str) -> dict[str, Any]:
        return dict(self.e.gc.records[CRB][self.eid(payment, invoice)])

    def history(self, payment: str, invoice: str) -> list[str]:
        """The record's version statuses in Green Check, oldest first."""
        return self.history_of(self.eid(payment, invoice))

    def history_of(self, external_id: str) -> list[str]:
        return [v["status"] for v in self.e.gc.versions(CRB, external_id)]

    def delivered(self, payment: str) -> list[str]:
        """External ids Green Check currently holds for this payment."""
        return sorted(eid for eid, rec in self.e.gc.records.get(CRB, {}).items() if rec["payment"]["id"] == payment)


@asynccontextmanager
async def books(cluster: Any, namespace: str, *, payments: int = 30, **qbo_kw: Any) -> AsyncIterator[Books]:
    """Both sandboxes serving, the integration Connected at the middle history payment's CreateTime."""
    async with sandboxes(cluster, namespace, payments=payments, history_days=10, **qbo_kw) as e:
        e.create_integration()
        yield Books(e, min(e.qbo.companies[e.realm].customers, key=int))


def assert_created_once(e: E2E) -> None:
    """No record was delivered twice: every record Green Check holds was created exactly once."""
    for eid in e.gc.records.get(CRB, {}):
        statuses = [v["status"] for v in e.gc.versions(CRB, eid)]
        assert statuses.count("created") == 1, (eid, statuses)


async def night(b: Books, page_size: str = "1000") -> dict[str, Any]:
    """One nightly sync with no settle time (the watermark follows the changes made between the nights): it
    succeeds and Green Check equals the projection. Returns lastSync."""
    run = await b.e.sync(QBO_SYNC_SETTLE_SECONDS="0", QBO_SYNC_PAGE_SIZE=page_size)
    assert run.rc == 0, run.stderr
    assert run.error_lines == []
    assert_exact(b.e)
    assert_created_once(b.e)
    last: dict[str, Any] = b.e.status()["lastSync"]
    assert last["result"] == "Succeeded", last["message"]
    return last


async def second_night(b: Books, before: collections.Counter[str], created: int, updated: int, retracted: int) -> None:
    """Night 2: lastSync counts the records created, updated and retracted, and so does Green Check itself."""
    last = await night(b)
    counts = (last["recordsCreated"], last["recordsUpdated"], last["recordsRetracted"])
    assert counts == (created, updated, retracted), last["message"]
    delta = b.e.gc.results - before
    assert [delta[k] for k in ("created", "updated", "retracted", "rejected")] == [created, updated, retracted, 0]
    b.e.assert_no_secrets_leaked()


def results(b: Books) -> collections.Counter[str]:
    """A copy of Green Check's result counts, to compare night 2 against."""
    return collections.Counter(b.e.gc.results)


# --- payments changed -------------------------------------------------------------------------


async def test_prepayment_applied_later_is_delivered_the_night_it_is_applied(cluster: Any, namespace: str) -> None:
    async with books(cluster, namespace) as b:
        inv = b.invoice("100.00", "LATER-1")
        prepaid = b.pay([], method="Cash", unapplied="100.00")
        assert b.e.qbo.companies[b.realm].payments[prepaid]["UnappliedAmt"] == Decimal("100.00")
        await night(b)
        assert b.delivered(prepaid) == []
        before = results(b)
        b.e.qbo.update_payment(b.realm, prepaid, invoices=[(inv, "100.00")])
        await second_night(b, before, created=1, updated=0, retracted=0)
        assert b.history(prepaid, inv) == ["created"]
        assert b.record(prepaid, inv)["payment"]["amount"] == 10000


async def test_payment_moved_to_another_invoice_retracts_the_first_and_creates_the_second(
    cluster: Any, namespace: str
) -> None:
    async with books(cluster, namespace) as b:
        first, second = b.invoice("100.00", "MOVE-A"), b.invoice("100.00", "MOVE-B")
        pay = b.pay([first])
        await night(b)
        assert b.history(pay, first) == ["created"]
        before = results(b)
        b.e.qbo.update_payment(b.realm, pay, invoices=[(second, "100.00")])
        await second_night(b, before, created=1, updated=0, retracted=1)
        assert b.history(pay, first) == ["created", "retracted"]
        assert b.history(pay, second) == ["created"]
        assert b.delivered(pay) == [b.eid(pay, second)]


async def test_payment_unapplied_then_reapplied_as_before_is_delivered_again(cluster: Any, namespace: str) -> None:
    """The third night's set is byte for byte the first night's (one set a batch): Green Check must apply it
    again, not answer it from the first night's Idempotency-Key (the record would stay retracted: lost)."""
    async with books(cluster, namespace) as b:
        inv = b.invoice("80.00", "BACK-1")
        pay = b.pay([inv])
        one_set = {"QBO_SYNC_SETTLE_SECONDS": "0", "QBO_SYNC_BATCH_SIZE": "1"}
        for change in (None, [], [(inv, "80.00")]):  # delivered, unapplied, re-applied as it was
            if change is not None:
                b.e.qbo.update_payment(b.realm, pay, invoices=change)
            run = await b.e.sync(measure_rss=False, **one_set)
            assert run.rc == 0, run.stderr
            assert_exact(b.e)
        assert b.history(pay, inv) == ["created", "retracted", "created"]
        assert b.delivered(pay) == [b.eid(pay, inv)]


async def test_invoice_added_to_an_existing_payment_creates_its_record(cluster: Any, namespace: str) -> None:
    async with books(cluster, namespace) as b:
        first, added = b.invoice("100.00", "ADD-A"), b.invoice("50.00", "ADD-B")
        pay = b.pay([first])
        await night(b)
        before = results(b)
        b.e.qbo.update_payment(b.realm, pay, invoices=[(first, "100.00"), (added, "50.00")], total="150.00")
        # the first record's payment total changed (100 → 150): updated; the added invoice's: created
        await second_night(b, before, created=1, updated=1, retracted=0)
        assert b.history(pay, first) == ["created", "updated"]
        assert b.history(pay, added) == ["created"]
        assert [b.record(pay, i)["payment"]["amount"] for i in (first, added)] == [10000, 5000]


async def test_amount_corrected_updates_the_record(cluster: Any, namespace: str) -> None:
    async with books(cluster, namespace) as b:
        inv = b.invoice("150.00", "FIX-1")
        pay = b.pay([inv], ["100.00"])
        await night(b)
        assert b.record(pay, inv)["payment"]["amount"] == 10000
        before = results(b)
        b.e.qbo.update_payment(b.realm, pay, invoices=[(inv, "120.00")], total="120.00")
        await second_night(b, before, created=0, updated=1, retracted=0)
        assert b.history(pay, inv) == ["created", "updated"]
        rec = b.record(pay, inv)
        assert (rec["payment"]["amount"], rec["invoice"]["open_balance"]) == (12000, 3000)


async def test_voided_payment_is_retracted(cluster: Any, namespace: str) -> None:
    async with books(cluster, namespace) as b:
        inv = b.invoice("80.00", "VOID-1")
        pay = b.pay([inv])
        await night(b)
        before = results(b)
        b.e.qbo.void_payment(b.realm, pay)
        await second_night(b, before, created=0, updated=0, retracted=1)
        assert b.history(pay, inv) == ["created", "retracted"]
        assert b.delivered(pay) == []


async def test_deleted_payment_is_retracted_from_cdc(cluster: Any, namespace: str) -> None:
    async with books(cluster, namespace) as b:
        inv = b.invoice("80.00", "DEL-1")
        pay = b.pay([inv])
        await night(b)
        before, cdc = results(b), b.e.qbo.requests["cdc"]
        b.e.qbo.delete_payment(b.realm, pay)
        assert pay not in b.e.qbo.companies[b.realm].payments  # queries cannot see it any more
        await second_night(b, before, created=0, updated=0, retracted=1)
        assert b.e.qbo.requests["cdc"] > cdc  # the delete could only come from Change Data Capture
        assert b.history(pay, inv) == ["created", "retracted"]


# --- invoices changed -------------------------------------------------------------------------


async def test_invoice_edited_updates_its_payments_records(cluster: Any, namespace: str) -> None:
    async with books(cluster, namespace) as b:
        inv = b.invoice("150.00", "EDIT-1")
        pays = [b.pay([inv], ["50.00"]), b.pay([inv], ["50.00"])]
        await night(b)
        before = results(b)
        b.e.qbo.update_invoice(b.realm, inv, doc_number="EDIT-1-R", amount="200.00")
        await second_night(b, before, created=0, updated=2, retracted=0)
        for pay in pays:
            assert b.history(pay, inv) == ["created", "updated"]
            rec = b.record(pay, inv)["invoice"]
            assert (rec["number"], rec["total"], rec["open_balance"]) == ("EDIT-1-R", 20000, 10000)


async def test_invoice_deleted_retracts_its_payments_records(cluster: Any, namespace: str) -> None:
    async with books(cluster, namespace) as b:
        inv = b.invoice("150.00", "GONE-1")
        pays = [b.pay([inv], ["50.00"]), b.pay([inv], ["50.00"])]
        await night(b)
        before = results(b)
        b.e.qbo.delete_invoice(b.realm, inv)
        company = b.e.qbo.companies[b.realm]
        assert all(company.payments[p]["Line"] == [] for p in pays)  # QBO unlinked them
        await second_night(b, before, created=0, updated=0, retracted=2)
        for pay in pays:
            assert b.history(pay, inv) == ["created", "retracted"]
            assert b.delivered(pay) == []


# --- credits ----------------------------------------------------------------------------------


async def test_credit_memo_applied_with_cash_delivers_cash_and_carries_the_credit_apart(
    cluster: Any, namespace: str
) -> None:
    async with books(cluster, namespace) as b:
        first, second = b.invoice("100.00", "CM-A"), b.invoice("50.00", "CM-B")
        pay = b.pay([first])
        await night(b)
        before = results(b)
        memo = b.e.qbo.create_credit(b.realm, "CreditMemo", customer_id=b.customer, amount="30.00")["Id"]
        b.e.qbo.update_payment(
            b.realm, pay, invoices=[(first, "100.00"), (second, "50.00")], credits=[(memo, "30.00")], total="120.00"
        )
        await second_night(b, before, created=1, updated=1, retracted=0)
        recs = [b.record(pay, i)["payment"] for i in (first, second)]
        # the credit is taken by the invoices in line order: the first invoice's 100 is 70 cash + 30 credit
        assert [(r["amount"], r["credit_applied"]) for r in recs] == [(7000, 3000), (5000, 0)]
        qbo = b.e.qbo.companies[b.realm].payments[pay]
        assert sum(r["amount"] for r in recs) == cents(qbo["TotalAmt"]) - cents(qbo["UnappliedAmt"]) == 12000


async def test_auto_applied_credit_delivers_nothing_and_updates_the_invoices_other_payments(
    cluster: Any, namespace: str
) -> None:
    async with books(cluster, namespace) as b:
        inv = b.invoice("100.00", "AUTO-1")
        cash = b.pay([inv], ["40.00"])
        await night(b)
        before = results(b)
        memo = b.e.qbo.create_credit(b.realm, "CreditMemo", customer_id=b.customer, amount="25.00")["Id"]
        zero = str(b.e.qbo.auto_apply_credit(b.realm, inv, memo)["Id"])
        assert b.e.qbo.companies[b.realm].payments[zero]["TotalAmt"] == 0
        await second_night(b, before, created=0, updated=1, retracted=0)
        assert b.delivered(zero) == []
        assert b.history(cash, inv) == ["created", "updated"]
        rec = b.record(cash, inv)
        assert (rec["payment"]["amount"], rec["invoice"]["open_balance"]) == (4000, 3500)  # 100 − 40 − 25


async def test_inactive_payment_method_is_resolved_not_unknown(cluster: Any, namespace: str) -> None:
    async with books(cluster, namespace) as b:
        inv = b.invoice("60.00", "OLD-1")
        pay = b.pay([inv], method="Old Card")
        company = b.e.qbo.companies[b.realm]
        method = company.payments[pay]["PaymentMethodRef"]["value"]
        assert company.payment_methods[method]["Active"] is False
        await night(b)
        assert b.record(pay, inv)["payment"]["type"] != "unknown"  # the inactive method was found ...
        assert b.record(pay, inv)["payment"]["type"] == "credit"  # ... and it is a credit card (Type CREDIT_CARD)
        before = results(b)
        b.e.qbo.update_payment(b.realm, pay, ref_num="OLD-REF-2")
        await second_night(b, before, created=0, updated=1, retracted=0)
        rec = b.record(pay, inv)["payment"]
        assert (rec["type"], rec["reference"]) == ("credit", "OLD-REF-2")


# --- scale and credentials --------------------------------------------------------------------


async def test_shuffled_ties_2500_payments_in_2_seconds_each_record_exactly_once(cluster: Any, namespace: str) -> None:
    async with books(cluster, namespace, tie_shuffle_seed=2500) as b:
        await night(b, page_size="1000")
        night_one = expected_records(b.e.qbo, b.realm, b.e.connected_at)
        before = results(b)
        new = b.e.qbo.generate_payments(b.realm, 2500, seed=25, seconds=2)
        per_second = collections.Counter(p["MetaData"]["LastUpdatedTime"] for p in new)
        assert len(per_second) <= 3 and max(per_second.values()) >= 1000  # whole pages tie on one second
        last = await night(b, page_size="1000")
        now = expected_records(b.e.qbo, b.realm, b.e.connected_at)
        fresh = set(now) - set(night_one)
        assert len(fresh) >= 2000
        assert all(b.history_of(eid) == ["created"] for eid in fresh)
        # night one's records whose invoice the new payments paid too: a new open balance
        rebalanced = {eid for eid in night_one if now[eid] != night_one[eid]}
        assert all(b.history_of(eid)[-1] == "updated" for eid in rebalanced)
        delta = b.e.gc.results - before
        counts = (len(fresh), len(rebalanced), 0)
        assert (delta["created"], delta["updated"], delta["retracted"]) == counts
        assert (last["recordsCreated"], last["recordsUpdated"], last["recordsRetracted"]) == counts


async def test_invalid_client_fails_the_run_and_never_disconnects(cluster: Any, namespace: str) -> None:
    async with books(cluster, namespace) as b:
        inv = b.invoice("70.00", "APP-1")
        await night(b)
        pay = b.pay([inv])
        before = results(b)
        b.e.expire_access_token()  # the run must refresh first, with the operator's own (wrong) app secret
        wrong = "not-the-qbo-client-secret-5e4d"
        run = await b.e.sync(QBO_CLIENT_SECRET=wrong, QBO_SYNC_SETTLE_SECONDS="0")
        assert run.rc == 1, run.stderr
        (line,) = run.error_lines
        assert "invalid_client" in line and "QBO_CLIENT_SECRET" in line
        st = b.e.status()
        assert st["phase"] == "Connected"
        synced, connected = b.e.condition("Synced"), b.e.condition("Connected")
        assert synced is not None and (synced["status"], synced["reason"]) == ("False", "AppCredentialsInvalid")
        assert (connected or {}).get("status") != "False"  # no grant is dead: the app is what was refused
        assert b.e.gc.results == before and b.delivered(pay) == []
        assert all(wrong not in text for text in b.e.outputs)
        b.e.assert_no_secrets_leaked()
        # fixed credentials: the next night delivers what the refused one could not
        await second_night(b, before, created=1, updated=0, retracted=0)
        assert b.e.status()["phase"] == "Connected"
