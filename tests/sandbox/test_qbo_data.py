"""The generated companies: reproducible, consistent books, every odd case present, writes as Intuit does them."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from qbo_operator.harness.sandbox.qbo import QboSandbox
from qbo_operator.harness.sandbox.qbo_books import check_books
from qbo_operator.harness.sandbox.qbo_store import PAYMENT_METHODS, SandboxError, dumps, intuit_time, money, parse_time
from tests.sandbox.conftest import FakeClock, SandboxFactory, realm_of


def snapshot(sb: QboSandbox, realm: str) -> bytes:
    c = sb.companies[realm]
    return dumps(
        {name: table.ordered() for name, table in c.tables.items()} | {"deleted": [vars(d) for d in c.deleted]}
    )


def kinds(payment: dict[str, Any]) -> set[str]:
    """What a sync has to tell apart, from the payment alone."""
    types = Counter(t["TxnType"] for ln in payment["Line"] for t in ln["LinkedTxn"])
    out = set()
    if payment.get("PrivateNote", "").startswith("Voided"):
        out.add("voided")
    if types["Invoice"] >= 2:
        out.add("split")
    if types["Invoice"] == 1:
        out.add("one_invoice")
    if types["CreditMemo"] and not types["Invoice"]:
        out.add("credit_only")
    if types["CreditMemo"] and types["Invoice"]:
        out.add("credit_applied")
    if payment["TotalAmt"] == 0 and types["Invoice"]:
        out.add("zero_total_settles")
    if payment["UnappliedAmt"] > 0 and types["Invoice"]:
        out.add("unapplied_remainder")
    if not payment["Line"] and not out & {"voided"}:
        out.add("unapplied_only")
    if "PaymentMethodRef" not in payment:
        out.add("no_method")
    return out


def test_same_seed_same_data(make_sandbox: SandboxFactory) -> None:
    a, b = make_sandbox(), make_sandbox()
    ra, rb = (
        a.add_company("Acme Dispensary", seed=11, payments=150),
        b.add_company("Acme Dispensary", seed=11, payments=150),
    )
    assert ra == rb
    a.generate_payments(ra, n=300, seed=5)
    b.generate_payments(rb, n=300, seed=5)
    assert snapshot(a, ra) == snapshot(b, rb)
    c = make_sandbox()
    rc = c.add_company("Acme Dispensary", seed=12, payments=150)
    assert snapshot(c, rc) != snapshot(a, ra)


def test_history_is_consistent_and_has_every_odd_case(make_sandbox: SandboxFactory, clock: FakeClock) -> None:
    sb = make_sandbox()
    realm = sb.add_company("Acme Dispensary", seed=1, payments=800)
    company = sb.companies[realm]
    assert check_books(company) == []
    assert len(company.payments) == 800
    assert company.deleted and all(d.entity == "Payment" for d in company.deleted)
    assert not {d.id for d in company.deleted} & set(company.payments)
    seen = Counter(k for p in company.payments.values() for k in kinds(p))
    for kind in ("voided", "split", "one_invoice", "credit_only", "credit_applied", "zero_total_settles",
                 "unapplied_remainder", "unapplied_only", "no_method"):  # fmt: skip
        assert seen[kind] > 0, kind
    assert seen["one_invoice"] > 0.6 * len(company.payments)
    assert {p["PaymentMethodRef"]["name"] for p in company.payments.values() if "PaymentMethodRef" in p} == set(
        PAYMENT_METHODS
    )
    created = [parse_time(p["MetaData"]["CreateTime"]) for p in company.tables["Payment"].ordered()]
    assert created == sorted(created) and len(set(created)) == len(created)
    assert clock.now - timedelta(days=91) < created[0] and created[-1] < clock.now
    detail_types = Counter(ln["DetailType"] for i in company.invoices.values() for ln in i["Line"])
    assert {"SalesItemLineDetail", "SubTotalLineDetail", "DiscountLineDetail", "DescriptionOnly"} <= set(detail_types)
    assert any(i["TxnTaxDetail"]["TotalTax"] > 0 for i in company.invoices.values())
    assert any(i["Balance"] > 0 for i in company.invoices.values()), "some receivables stay open"
    assert all(r["Balance"] == 0 and r["PaymentMethodRef"] for r in company.sales_receipts.values())
    assert len({c["DisplayName"] for c in company.customers.values()}) == len(company.customers)


def test_money_is_json_with_two_places(sandbox: QboSandbox) -> None:
    company = sandbox.companies[realm_of(sandbox)]
    payment = next(p for p in company.payments.values() if p["Line"])
    text = dumps(payment).decode()
    assert f'"TotalAmt":{payment["TotalAmt"]:.2f}' in text
    assert '"UnappliedAmt":' in text and '"TotalAmt":"' not in text
    parsed = json.loads(text, parse_float=Decimal)
    assert parsed["TotalAmt"] == payment["TotalAmt"]
    assert parsed["TotalAmt"].as_tuple().exponent == -2
    assert payment["MetaData"]["CreateTime"][-6:] in ("-08:00", "-07:00")


@pytest.mark.parametrize(
    ("value", "expected"), [("1", "1.00"), (Decimal("2.5"), "2.50"), (3, "3.00"), ("0.10", "0.10")]
)
def test_money(value: object, expected: str) -> None:
    assert str(money(value)) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["1.005", "abc", "NaN", "Infinity", ""])
def test_money_refuses(value: str) -> None:
    with pytest.raises(SandboxError):
        money(value)


def test_new_payments_are_now_after_consent_and_strictly_increasing(
    make_sandbox: SandboxFactory, clock: FakeClock
) -> None:
    sb = make_sandbox()
    realm = sb.add_company("Acme Dispensary", seed=2, payments=50)
    clock.advance(3600)
    new = sb.generate_payments(realm, n=1000, seed=3)
    company = sb.companies[realm]
    assert len(new) == 1000 and len(company.payments) == 1050
    stamps = [parse_time(p["MetaData"]["CreateTime"]) for p in new]
    assert all(b > a for a, b in itertools.pairwise(stamps))
    assert clock.now - timedelta(minutes=1) <= stamps[0] and stamps[-1] <= clock.now
    assert check_books(company) == []
    assert Counter(k for p in new for k in kinds(p))["voided"] > 10

    # After a consent, new payments come after it, even when the clock has not moved.
    sb.issue_tokens(realm)
    consent = clock.now
    more = sb.generate_payments(realm, n=10, seed=4)
    assert min(parse_time(p["MetaData"]["CreateTime"]) for p in more) > consent
    # And they always come after the newest payment.
    again = sb.generate_payments(realm, n=5, seed=4)
    assert parse_time(again[0]["MetaData"]["CreateTime"]) > parse_time(more[-1]["MetaData"]["CreateTime"])
    assert check_books(company) == []


def test_create_void_delete_follow_intuit(sandbox: QboSandbox, clock: FakeClock) -> None:
    realm = realm_of(sandbox)
    company = sandbox.companies[realm]
    invoices = [i for i in company.invoices.values() if i["Balance"] > 10]
    customer = invoices[0]["CustomerRef"]["value"]
    same_customer = [i for i in invoices if i["CustomerRef"]["value"] == customer][:2]
    balances = [i["Balance"] for i in same_customer]
    clock.advance(10)

    payment = sandbox.create_payment(realm, [i["Id"] for i in same_customer], method="Check", ref_num="1042",
                                     unapplied="5.00")  # fmt: skip
    assert payment["TotalAmt"] == sum(balances) + Decimal("5.00")
    assert payment["PaymentRefNum"] == "1042" and payment["PaymentMethodRef"] == {"value": "2", "name": "Check"}
    assert [ln["LinkedTxn"] for ln in payment["Line"]] == [
        [{"TxnId": i["Id"], "TxnType": "Invoice"}] for i in same_customer
    ]
    for inv in same_customer:
        assert inv["Balance"] == 0
        assert {"TxnId": payment["Id"], "TxnType": "Payment"} in inv["LinkedTxn"]
    assert payment["MetaData"]["CreateTime"] == intuit_time(clock.now)
    sync_tokens = [i["SyncToken"] for i in same_customer]

    clock.advance(60)
    voided = sandbox.void_payment(realm, payment["Id"])
    assert voided is company.payments[payment["Id"]]
    assert (voided["TotalAmt"], voided["UnappliedAmt"], voided["Line"]) == (0, 0, [])
    assert voided["PrivateNote"] == "Voided" and voided["SyncToken"] == "1"
    assert voided["MetaData"]["LastUpdatedTime"] == intuit_time(clock.now) != voided["MetaData"]["CreateTime"]
    assert [i["Balance"] for i in same_customer] == balances
    assert all(int(i["SyncToken"]) == int(t) + 1 for i, t in zip(same_customer, sync_tokens, strict=True))
    with pytest.raises(SandboxError, match="already voided"):
        sandbox.void_payment(realm, payment["Id"])

    noted = sandbox.create_payment(realm, [same_customer[0]["Id"]], ["1.00"], private_note="Driver collected")
    assert sandbox.void_payment(realm, noted["Id"])["PrivateNote"] == "Voided Driver collected"

    clock.advance(60)
    sandbox.delete_payment(realm, noted["Id"])
    assert noted["Id"] not in company.payments
    assert company.deleted[-1].id == noted["Id"] and company.deleted[-1].time == clock.now
    assert check_books(company) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"invoice_ids": ["999999"]}, "does not exist"),
        ({"invoice_ids": ["@first", "@first"], "amounts": ["1", "1"]}, "listed twice"),
        ({"invoice_ids": ["@first"], "amounts": ["0"]}, "positive"),
        ({"invoice_ids": ["@first"], "amounts": ["999999999"]}, "open balance"),
        ({"invoice_ids": ["@first"], "amounts": ["1.001"]}, "two decimal places"),
        ({"invoice_ids": ["@first"], "amounts": ["1", "2"]}, "same length"),
        ({"invoice_ids": ["@first", "@other"]}, "cannot mix customers"),
        ({"invoice_ids": ["@first"], "method": "Bitcoin"}, "unknown payment method"),
        ({"invoice_ids": []}, "exactly one customer"),
        ({"invoice_ids": [], "customer_id": "@customer"}, "must apply"),
        ({"invoice_ids": ["@first"], "unapplied": "-1"}, "negative"),
        (
            {"invoice_ids": ["@first"], "amounts": ["1"], "credit_memo_ids": ["@memo"], "credit_amounts": ["2"]},
            "exceed",
        ),
        ({"invoice_ids": ["@first"], "credit_memo_ids": ["424242"], "credit_amounts": ["1"]}, "does not exist"),
    ],
)
def test_create_payment_refuses_bad_input(sandbox: QboSandbox, kwargs: dict[str, Any], message: str) -> None:
    realm = realm_of(sandbox)
    company = sandbox.companies[realm]
    memo = next(m for m in company.credit_memos.values() if m["RemainingCredit"] >= 2)
    customer = memo["CustomerRef"]["value"]
    product = next(i for i in company.items.values() if i["UnitPrice"] > 1)
    first = company.add_invoice(customer, [(product["Id"], Decimal(3))], sandbox.now())
    other = next(i for i in company.invoices.values() if i["Balance"] > 0 and i["CustomerRef"]["value"] != customer)
    names = {"@first": first["Id"], "@other": other["Id"], "@memo": memo["Id"], "@customer": customer}

    def sub(value: Any) -> Any:
        if isinstance(value, list):
            return [names.get(v, v) for v in value]
        return names.get(value, value)

    before = snapshot(sandbox, realm)
    with pytest.raises(SandboxError, match=message):
        sandbox.create_payment(realm, **{k: sub(v) for k, v in kwargs.items()})
    assert snapshot(sandbox, realm) == before, "a refused payment changes nothing"


def test_unknown_realm_and_payment(sandbox: QboSandbox) -> None:
    with pytest.raises(SandboxError, match="no company"):
        sandbox.generate_payments("42", n=1)
    with pytest.raises(SandboxError, match="does not exist"):
        sandbox.void_payment(realm_of(sandbox), "999999")
    with pytest.raises(SandboxError, match="does not exist"):
        sandbox.delete_payment(realm_of(sandbox), "999999")
    with pytest.raises(SandboxError, match="negative"):
        sandbox.add_company("X", payments=-1)


@pytest.mark.parametrize(
    ("corrupt", "fragment"),
    [
        (lambda c: c.invoices[next(iter(c.invoices))].update(Balance=Decimal("-1.00")), "Balance"),
        (lambda c: next(p for p in c.payments.values() if p["Line"]).update(TotalAmt=Decimal("1.23")), "TotalAmt"),
        (lambda c: next(iter(c.customers.values())).update(Balance=Decimal("0.01")), "customer"),
        (
            lambda c: next(iter(c.invoices.values()))["LinkedTxn"].append({"TxnId": "0", "TxnType": "Payment"}),
            "LinkedTxn",
        ),
        (lambda c: next(iter(c.payments.values())).update(UnappliedAmt=Decimal("0.001")), "two places"),
    ],
)
def test_check_books_notices_corruption(sandbox: QboSandbox, corrupt: Any, fragment: str) -> None:
    company = sandbox.companies[realm_of(sandbox)]
    assert check_books(company) == []
    corrupt(company)
    assert any(fragment in problem for problem in check_books(company))
