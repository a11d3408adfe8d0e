"""The store: money as exact two-place JSON numbers, payments created, voided and deleted as Intuit does
them, bad ones refused."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from qbo_operator.harness.sandbox.qbo import QboSandbox
from qbo_operator.harness.sandbox.qbo_books import check_books
from qbo_operator.harness.sandbox.qbo_store import payment_total
from qbo_operator.harness.sandbox.qbo_values import SandboxError, dumps, intuit_time, money
from tests.support.sandbox import FakeClock, realm_of, snapshot


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
    assert payment["PaymentRefNum"] == "1042" and payment["PaymentMethodRef"] == {"value": "2"}
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
        ({"invoice_ids": ["@first"], "method": " "}, "needs a name"),
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
    ("invoices", "credits", "unapplied", "method", "total"),
    [
        ([("1", "100.00")], [], "0.00", "Check", "100.00"),
        ([("1", "100.00"), ("2", "50.00")], [("9", "30.00")], "5.00", "Cash", "125.00"),
        ([("1", "40.00")], [("9", "40.00")], "0.00", None, "0.00"),  # a $0 payment that settles with a credit
        ([], [("9", "25.00")], "25.00", "ACH/EFT", "0.00"),  # credit only: it turns into an unapplied amount
        ([], [], "12.34", "Wire Transfer", "12.34"),  # a prepayment
    ],
)
def test_payment_total(
    invoices: list[tuple[str, str]], credits: list[tuple[str, str]], unapplied: str, method: str | None, total: str
) -> None:
    inv = [(i, Decimal(a)) for i, a in invoices]
    cred = [(c, Decimal(a)) for c, a in credits]
    assert payment_total(inv, cred, Decimal(unapplied), method) == Decimal(total)


@pytest.mark.parametrize(
    ("invoices", "credits", "unapplied", "method", "message"),
    [
        ([("1", "10.00")], [], "-1.00", "Check", "cannot be negative"),
        ([("1", "10.00")], [("9", "20.00")], "0.00", "Check", "credits exceed"),
        ([], [], "0.00", "Check", "must apply to an invoice"),
        ([("1", "10.00")], [], "0.00", "", "needs a name"),
    ],
)
def test_payment_total_refuses(
    invoices: list[tuple[str, str]], credits: list[tuple[str, str]], unapplied: str, method: str, message: str
) -> None:
    inv = [(i, Decimal(a)) for i, a in invoices]
    cred = [(c, Decimal(a)) for c, a in credits]
    with pytest.raises(SandboxError, match=message):
        payment_total(inv, cred, Decimal(unapplied), method)
