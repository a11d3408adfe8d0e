"""Bookkeepers' changes through the sandbox's Python API (issue #15): payments applied later, moved,
extended, corrected; invoices created, edited, voided, deleted; credits and auto-apply. Every change
keeps Id and CreateTime, bumps SyncToken and LastUpdatedTime, keeps the books and tells webhooks."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest

from qbo_operator.harness.sandbox.qbo import QboSandbox
from qbo_operator.harness.sandbox.qbo_books import check_books
from qbo_operator.harness.sandbox.qbo_values import Entity, SandboxError, intuit_time
from tests.support.sandbox import FakeClock, SandboxFactory, record_changes, snapshot


@dataclass
class Books:
    """One customer with invoice A (100.00), invoice B (60.00), a payment P of 80.00 with 50.00 on A and
    30.00 unapplied, a credit memo CM of 20.00, and invoice X of another customer (45.00)."""

    sb: QboSandbox
    clock: FakeClock
    realm: str
    customer: str
    a: Entity
    b: Entity
    p: Entity
    cm: Entity
    x: Entity

    def ids(self, *names: str) -> list[str]:
        return [getattr(self, n)["Id"] for n in names]


@pytest.fixture
def books(make_sandbox: SandboxFactory, clock: FakeClock) -> Books:
    sb = make_sandbox()
    realm = sb.add_company("Acme Dispensary", seed=3, payments=30)
    company = sb.companies[realm]
    customer, other = sorted(company.customers, key=int)[:2]
    a = sb.create_invoice(realm, customer_id=customer, amount="100.00")
    b = sb.create_invoice(realm, customer_id=customer, lines=[(None, 2, "30.00")], doc_number="B-1")
    x = sb.create_invoice(realm, customer_id=other, amount="45.00")
    cm = sb.create_credit(realm, "CreditMemo", customer_id=customer, amount="20.00")
    p = sb.create_payment(realm, [a["Id"]], ["50.00"], "Check", unapplied="30.00")
    clock.advance(86400.4)  # a day later, with a fraction the MetaData must not show
    return Books(sb, clock, realm, customer, a, b, p, cm, x)


D = Decimal


# (case, update_payment kwargs with invoice names, UnappliedAmt, TotalAmt, A.Balance, B.Balance, rows changed)
PAYMENT_UPDATES: list[tuple[str, dict[str, Any], str, str, str, str, set[str]]] = [
    ("apply the rest later", {"invoices": [("a", "50.00"), ("b", "30.00")]}, "0.00", "80.00", "50.00", "30.00", {"b"}),
    ("move to another invoice", {"invoices": [("b", "50.00")]}, "30.00", "80.00", "100.00", "10.00", {"a", "b"}),
    ("add an invoice", {"invoices": [("a", "50.00"), ("b", "60.00")], "total": "110.00"},
     "0.00", "110.00", "50.00", "0.00", {"b"}),
    ("remove the invoice", {"invoices": []}, "80.00", "80.00", "100.00", "60.00", {"a"}),
    ("correct the amount", {"invoices": [("a", "70.00")], "total": "100.00"}, "30.00", "100.00", "30.00", "60.00",
     {"a"}),
    ("take a credit too", {"invoices": [("a", "70.00")], "credits": [("cm", "20.00")]},
     "30.00", "80.00", "30.00", "60.00", {"a", "cm"}),
    ("reference and method only", {"ref_num": "CHK-9", "method": "Cash", "txn_date": "2026-11-20"},
     "30.00", "80.00", "50.00", "60.00", set()),
]  # fmt: skip


@pytest.mark.parametrize(("case", "kwargs", "unapplied", "total", "bal_a", "bal_b", "changed"), PAYMENT_UPDATES)
def test_update_payment(
    books: Books,
    case: str,
    kwargs: dict[str, Any],
    unapplied: str,
    total: str,
    bal_a: str,
    bal_b: str,
    changed: set[str],
) -> None:
    sb, realm, p = books.sb, books.realm, books.p
    named = {"a": books.a, "b": books.b, "cm": books.cm}
    for key in ("invoices", "credits"):
        if key in kwargs:
            kwargs[key] = [(named[n]["Id"], amount) for n, amount in kwargs[key]]
    tokens = {n: row["SyncToken"] for n, row in named.items()}
    created, pay_id = p["MetaData"]["CreateTime"], p["Id"]
    events = record_changes(sb, realm)

    updated = sb.update_payment(realm, pay_id, **kwargs)

    assert updated is p and (p["Id"], p["MetaData"]["CreateTime"]) == (pay_id, created)
    assert p["SyncToken"] == "1" and p["MetaData"]["LastUpdatedTime"] == intuit_time(books.clock.now)
    assert (p["UnappliedAmt"], p["TotalAmt"]) == (D(unapplied), D(total))
    assert (books.a["Balance"], books.b["Balance"]) == (D(bal_a), D(bal_b))
    assert {n for n, row in named.items() if row["SyncToken"] != tokens[n]} == changed
    assert events[-1] == ("Payment", pay_id, "Update")
    assert check_books(sb.companies[realm]) == []
    if "ref_num" in kwargs:
        assert (
            p["PaymentRefNum"] == "CHK-9" and p["TxnDate"] == "2026-11-20" and p["PaymentMethodRef"] == {"value": "1"}
        )


# (what, kwargs with invoice names, message)
PAYMENT_REFUSALS: list[tuple[str, dict[str, Any], str]] = [
    ("more applied than received", {"invoices": [("a", "90.00")]}, "cannot cover"),
    ("more than the invoice owes", {"invoices": [("b", "61.00")], "total": "100.00"}, "more than"),
    ("another customer's invoice", {"invoices": [("x", "10.00")]}, "another customer"),
    ("an unknown invoice", {"invoices": [("404404", "10.00")]}, "does not exist"),
    ("an invoice twice", {"invoices": [("a", "10.00"), ("a", "10.00")]}, "twice"),
    ("a zero line", {"invoices": [("a", "0.00")]}, "positive"),
    ("a negative total", {"total": "-1.00"}, "cannot cover"),
    ("a bad date", {"txn_date": "yesterday"}, "not a date"),
    ("more credit than left", {"credits": [("cm", "25.00")]}, "more than"),
]


@pytest.mark.parametrize(("what", "kwargs", "message"), PAYMENT_REFUSALS)
def test_update_payment_refuses_and_changes_nothing(
    books: Books, what: str, kwargs: dict[str, Any], message: str
) -> None:
    named = {"a": books.a["Id"], "b": books.b["Id"], "x": books.x["Id"], "cm": books.cm["Id"]}
    for key in ("invoices", "credits"):
        if key in kwargs:
            kwargs[key] = [(named.get(n, n), amount) for n, amount in kwargs[key]]
    before = snapshot(books.sb, books.realm)
    with pytest.raises(SandboxError, match=message):
        books.sb.update_payment(books.realm, books.p["Id"], **kwargs)
    assert snapshot(books.sb, books.realm) == before


def test_void_and_delete_payment_as_intuit(books: Books) -> None:
    sb, realm, p = books.sb, books.realm, books.p
    events = record_changes(sb, realm)
    sb.void_payment(realm, p["Id"])
    assert p["Id"] in sb.companies[realm].payments, "a voided payment stays queryable"
    assert (p["TotalAmt"], p["UnappliedAmt"], p["Line"], p["PrivateNote"]) == (0, 0, [], "Voided")
    assert books.a["Balance"] == D("100.00") and events == [("Payment", p["Id"], "Void")]
    with pytest.raises(SandboxError, match="voided"):
        sb.update_payment(realm, p["Id"], total="5.00")
    sb.delete_payment(realm, p["Id"])
    company = sb.companies[realm]
    assert p["Id"] not in company.payments and company.deleted[-1].id == p["Id"]
    assert events[-1] == ("Payment", p["Id"], "Delete")
    assert check_books(company) == []


def test_create_and_update_invoice(books: Books) -> None:
    sb, realm = books.sb, books.realm
    events = record_changes(sb, realm)
    inv = sb.create_invoice(realm, customer_id=books.customer, lines=[(None, 3, "12.50"), (None, "1", "0.99")],
                            doc_number="INV-77", txn_date="2026-11-01")  # fmt: skip
    assert (inv["TotalAmt"], inv["Balance"], inv["DocNumber"], inv["TxnDate"]) == (D("38.49"), D("38.49"), "INV-77",
                                                                                   "2026-11-01")  # fmt: skip
    assert events == [("Invoice", inv["Id"], "Create")]
    a = books.a
    created = a["MetaData"]["CreateTime"]
    sb.update_invoice(realm, a["Id"], amount="150.00", doc_number="A-2", customer_memo="Thanks!")
    assert (a["TotalAmt"], a["Balance"], a["DocNumber"], a["CustomerMemo"]) == (
        D("150.00"), D("100.00"), "A-2", {"value": "Thanks!"}
    )  # fmt: skip
    assert a["MetaData"]["CreateTime"] == created and a["MetaData"]["LastUpdatedTime"] == intuit_time(books.clock.now)
    assert events[-1] == ("Invoice", a["Id"], "Update")
    with pytest.raises(SandboxError, match=r"cannot be 40\.00"):
        sb.update_invoice(realm, a["Id"], amount="40.00")
    with pytest.raises(SandboxError, match="amount or lines"):
        sb.create_invoice(realm, customer_id=books.customer)
    with pytest.raises(SandboxError, match="quantity"):
        sb.create_invoice(realm, customer_id=books.customer, lines=[(None, 0, "1.00")])
    assert check_books(sb.companies[realm]) == []


@pytest.mark.parametrize("operation", ["void", "delete"])
def test_void_or_delete_invoice_unlinks_its_payments(books: Books, operation: str) -> None:
    sb, realm, a, p = books.sb, books.realm, books.a, books.p
    sb.update_payment(realm, p["Id"], invoices=[(a["Id"], "50.00"), (books.b["Id"], "30.00")])
    events = record_changes(sb, realm)
    token = p["SyncToken"]
    books.clock.advance(60)
    if operation == "void":
        voided = sb.void_invoice(realm, a["Id"])
        assert (voided["TotalAmt"], voided["Balance"], voided["PrivateNote"]) == (0, 0, "Voided")
        assert a["Id"] in sb.companies[realm].invoices, "a voided invoice stays queryable"
        with pytest.raises(SandboxError, match="voided"):
            sb.update_invoice(realm, a["Id"], doc_number="no")
    else:
        sb.delete_invoice(realm, a["Id"])
        company = sb.companies[realm]
        assert a["Id"] not in company.invoices and company.deleted[-1].entity == "Invoice"
    assert [ln["LinkedTxn"][0]["TxnId"] for ln in p["Line"]] == [books.b["Id"]]
    assert (p["TotalAmt"], p["UnappliedAmt"]) == (D("80.00"), D("50.00")), "keeps TotalAmt, unapplied grows"
    assert int(p["SyncToken"]) == int(token) + 1 and p["MetaData"]["LastUpdatedTime"] == intuit_time(books.clock.now)
    op = "Void" if operation == "void" else "Delete"
    assert events == [("Payment", p["Id"], "Update"), ("Invoice", a["Id"], op)]
    assert check_books(sb.companies[realm]) == []


@pytest.mark.parametrize("kind", ["CreditMemo", "JournalEntry", "Deposit"])
def test_credit_and_auto_apply(books: Books, kind: Any) -> None:
    sb, realm, b = books.sb, books.realm, books.b
    events = record_changes(sb, realm)
    credit = sb.create_credit(realm, kind, customer_id=books.customer, amount="75.00")
    assert events == [(kind, credit["Id"], "Create")]
    if kind == "JournalEntry":
        ar = credit["Line"][0]["JournalEntryLineDetail"]
        assert ar["PostingType"] == "Credit" and ar["Entity"]["EntityRef"]["value"] == books.customer
    elif kind == "Deposit":
        assert credit["Line"][0]["DepositLineDetail"]["Entity"]["value"] == books.customer
    else:
        assert credit["RemainingCredit"] == D("75.00")
    pay = sb.auto_apply_credit(realm, b["Id"], credit["Id"])
    assert pay["TotalAmt"] == 0 and pay["UnappliedAmt"] == 0 and "PaymentMethodRef" not in pay
    assert [(ln["Amount"], ln["LinkedTxn"]) for ln in pay["Line"]] == [
        (D("60.00"), [{"TxnId": b["Id"], "TxnType": "Invoice"}]),
        (D("60.00"), [{"TxnId": credit["Id"], "TxnType": kind}]),
    ], "one line for the invoice, one for the credit, same amount: min(balance, credit)"
    assert b["Balance"] == 0 and events[-1] == ("Payment", pay["Id"], "Create")
    assert sb.companies[realm].open_amount(kind, credit) == D("15.00")
    cash = sb.create_payment(realm, [books.a["Id"]], ["50.00"], "Cash", credit_memo_ids=[credit["Id"]],
                             credit_amounts=["15.00"])  # fmt: skip
    assert cash["TotalAmt"] == D("35.00"), "cash is what the credit did not cover"
    with pytest.raises(SandboxError, match="nothing to apply"):
        sb.auto_apply_credit(realm, books.a["Id"], credit["Id"])
    assert check_books(sb.companies[realm]) == []


def test_payment_methods_include_an_inactive_one(books: Books) -> None:
    company = books.sb.companies[books.realm]
    methods = {m["Name"]: m for m in company.payment_methods.values()}
    assert {"Cash", "Check", "Visa", "MasterCard", "ACH/EFT"} <= set(methods)
    assert methods["Old Card"]["Active"] is False and all(m["Active"] for n, m in methods.items() if n != "Old Card")
    assert books.p["PaymentMethodRef"] == {"value": methods["Check"]["Id"]}, "only the Id, as Intuit"
    barter = books.sb.create_payment(books.realm, customer_id=books.customer, unapplied="1.00", method="Barter")
    assert company.method_name(barter["PaymentMethodRef"]) == "Barter"


def test_multicurrency_company(make_sandbox: SandboxFactory) -> None:
    sb = make_sandbox()
    realm = sb.add_company("Maple Leaf Cannabis", seed=4, payments=80, multicurrency=True)
    company = sb.companies[realm]
    cad = [c["Id"] for c in company.customers.values() if c["CurrencyRef"]["value"] == "CAD"]
    assert cad and len(cad) < len(company.customers)
    invoices = [i for i in company.invoices.values() if i["CustomerRef"]["value"] in cad]
    payments = [p for p in company.payments.values() if p["CustomerRef"]["value"] in cad]
    assert invoices and payments
    for inv in invoices:
        assert inv["CurrencyRef"]["value"] == "CAD" and inv["ExchangeRate"] == D("0.73")
        assert inv["HomeBalance"] == (inv["Balance"] * inv["ExchangeRate"]).quantize(D("0.01"), ROUND_HALF_UP)
    pay = next(p for p in payments if p["Id"] not in company.voided and p["TotalAmt"] > 1)
    sb.update_payment(realm, pay["Id"], invoices=[], total="1.00")
    assert pay["HomeTotalAmt"] == D("0.73")
    assert all("ExchangeRate" not in i for i in company.invoices.values() if i["CustomerRef"]["value"] not in cad)
    assert check_books(company) == []


_PACIFIC_SECOND = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d-0[78]:00$")


def test_metadata_is_pacific_whole_seconds(books: Books) -> None:
    books.sb.update_payment(books.realm, books.p["Id"], ref_num="R")
    stamps: list[str] = []
    for table in books.sb.companies[books.realm].tables.values():
        for row in table.rows.values():
            stamps.append(row["MetaData"]["CreateTime"])
            stamps.append(row["MetaData"]["LastUpdatedTime"])
    assert stamps and all(_PACIFIC_SECOND.match(s) for s in stamps)
