"""The pure QBO → Green Check mapping: one payment set per payment, money is cash (docs/sync.md "Mapping",
docs/greencheck.md §2). Table-driven through map_payment, split_cash, credit_total, payment_type and to_cents,
and the cash invariant as a property: Σ record amounts = TotalAmt − UnappliedAmt."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qbo_operator.sync.mapping import (
    Mapped,
    SkipReason,
    credit_total,
    decimal_string,
    external_id,
    is_voided,
    line_items,
    map_payment,
    payment_type,
    split_cash,
    to_cents,
)
from qbo_operator.sync.qbo_models import Invoice, Payment
from qbo_operator.sync.records import Record

REALM = "9130355357483456"
CONNECTED = datetime(2026, 11, 1, tzinfo=UTC)
Line = tuple[str, str, str]  # (amount, linked txn type, linked txn id)


def invoice(iid: str = "130", **over: Any) -> Invoice:
    raw: dict[str, Any] = {
        "Id": iid,
        "MetaData": {"CreateTime": "2026-08-10T09:00:00-07:00", "LastUpdatedTime": "2026-11-24T17:03:11-08:00"},
        "DocNumber": "1037",
        "TxnDate": "2026-08-10",
        "CustomerRef": {"value": "24", "name": "Sonnenschein Family Store"},
        "CurrencyRef": {"value": "USD", "name": "United States Dollar"},
        "TotalAmt": Decimal("325.85"),
        "Balance": Decimal("270.85"),
        "CustomerMemo": {"value": "Thank you for your business"},
        "PrivateNote": "internal: slow payer",
        "BillAddr": {"Line1": "1 Main St", "City": "Oakland"},
        "BillEmail": {"Address": "store@example.com"},
        "Line": [
            {"Id": "1", "Amount": Decimal("275.0"), "DetailType": "SalesItemLineDetail", "Description": "Rock Fountain",
             "SalesItemLineDetail": {"ItemRef": {"value": "5", "name": "Rock Fountain"}, "Qty": 1,
                                     "UnitPrice": 275}},
            {"Id": "2", "Amount": Decimal("47.5"), "DetailType": "SalesItemLineDetail",
             "SalesItemLineDetail": {"ItemRef": {"value": "3", "name": "Concrete"}, "Qty": Decimal("5"),
                                     "UnitPrice": Decimal("9.5")}},
            {"Amount": Decimal("322.5"), "DetailType": "SubTotalLineDetail", "SubTotalLineDetail": {}},
            {"Id": "4", "Amount": Decimal("33.53"), "DetailType": "DiscountLineDetail",
             "DiscountLineDetail": {"PercentBased": True, "DiscountPercent": 10}},
        ],
    }  # fmt: skip
    raw.update(over)
    return Invoice.model_validate(raw)


def payment(pid: str = "183", lines: list[Line] | None = None, **over: Any) -> Payment:
    """A payment of $55 by check, fully applied to invoice 130 unless `lines` or `over` say otherwise."""
    raw: dict[str, Any] = {
        "Id": pid,
        "SyncToken": "0",
        "MetaData": {"CreateTime": "2026-11-24T17:03:11-08:00", "LastUpdatedTime": "2026-11-24T17:03:11-08:00"},
        "TxnDate": "2026-11-24",
        "TotalAmt": Decimal("55.00"),
        "UnappliedAmt": Decimal("0"),
        "CustomerRef": {"value": "24", "name": "Sonnenschein Family Store"},
        "CurrencyRef": {"value": "USD", "name": "United States Dollar"},
        "PaymentMethodRef": {"value": "2", "name": "Check"},
        "PaymentRefNum": "1024",
        "PrivateNote": "call before depositing",
        "Line": [
            {"Amount": Decimal(a), "LinkedTxn": [{"TxnId": i, "TxnType": t}]}
            for a, t, i in (lines if lines is not None else [("55.00", "Invoice", "130")])
        ],
    }
    raw.update(over)
    return Payment.model_validate(raw)


def records(mapped: Mapped) -> list[Record]:
    """The records of a mapped payment that is delivered (a set, possibly empty)."""
    assert mapped.payment_set is not None, mapped.skips
    return list(mapped.payment_set.records)


def only(mapped: Mapped) -> Record:
    (record,) = records(mapped)
    return record


def invoices(*ids: str) -> dict[str, Invoice]:
    return {i: invoice(i) for i in ids}


# --- money ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "cents"),
    [
        (Decimal("55"), 5500),
        (Decimal("55.0"), 5500),
        (Decimal("325.85"), 32585),
        (Decimal("0.10"), 10),
        (Decimal("0.1"), 10),
        (Decimal("0"), 0),
        (Decimal("-12.34"), -1234),
        (Decimal("1234567.89"), 123456789),
        (Decimal("9.995"), 1000),  # more than 2 places: ROUND_HALF_UP
        (Decimal("9.994"), 999),
        (Decimal("0.005"), 1),
        (Decimal("-0.005"), -1),  # half away from zero
        (Decimal("12.34500"), 1235),
        (Decimal("1E+2"), 10000),
        (7, 700),
    ],
)
def test_to_cents_is_exact_and_rounds_half_up_only_beyond_two_places(amount: Decimal, cents: int) -> None:
    assert to_cents(amount) == cents


def test_to_cents_refuses_non_finite() -> None:
    with pytest.raises(ValueError, match="not a finite number"):
        to_cents(Decimal("NaN"))


def test_amounts_from_json_floats_stay_exact() -> None:
    """0.1 + 0.2 style float errors cannot happen: JSON is parsed with Decimal."""
    raw = json.loads('{"Amount": 0.29, "LinkedTxn": [{"TxnId": "1", "TxnType": "Invoice"}]}', parse_float=Decimal)
    p = payment(lines=[], Line=[raw], TotalAmt=Decimal("0.29"))
    record = only(map_payment(p, {"1": invoice("1")}, REALM, CONNECTED))
    assert record.payment.amount == 29 and record.payment.total_amount == 29


@pytest.mark.parametrize(
    ("value", "text"),
    [(Decimal("1"), "1"), (Decimal("4.50"), "4.5"), (Decimal("100"), "100"), (Decimal("0.125"), "0.125"),
     (Decimal("0"), "0"), (Decimal("1E+3"), "1000")],
)  # fmt: skip
def test_decimal_string(value: Decimal, text: str) -> None:
    assert decimal_string(value) == text


# --- credits: what is not cash ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("lines", "credit"),
    [
        ([], "0"),
        ([("55.00", "Invoice", "1")], "0"),
        ([("40.00", "Invoice", "1"), ("40.00", "CreditMemo", "77")], "40.00"),
        ([("10", "CreditMemo", "7"), ("2.50", "JournalEntry", "8"), ("1", "Deposit", "9")], "13.50"),
        ([("5", "Invoice", "1"), ("3", "RefundReceipt", "4")], "3"),
    ],
)
def test_credit_total_sums_every_line_linked_to_anything_but_an_invoice(lines: list[Line], credit: str) -> None:
    assert credit_total(payment(lines=lines)) == Decimal(credit)


D = Decimal


@pytest.mark.parametrize(
    ("applied", "credit", "expected"),
    [
        ({"1": D(50)}, D(0), {"1": (D(50), D(0))}),
        ({"1": D(50)}, D(20), {"1": (D(30), D(20))}),
        ({"1": D(50)}, D(50), {"1": (D(0), D(50))}),
        # line order: the first invoice takes what it can, the next the rest
        ({"1": D(30), "2": D(50)}, D(40), {"1": (D(0), D(30)), "2": (D(40), D(10))}),
        ({"2": D(50), "1": D(30)}, D(40), {"2": (D(10), D(40)), "1": (D(30), D(0))}),
        # a negative line takes no credit; a negative credit is none
        ({"1": D(-5), "2": D(20)}, D(10), {"1": (D(-5), D(0)), "2": (D(10), D(10))}),
        ({"1": D(20)}, D(-10), {"1": (D(20), D(0))}),
        ({}, D(10), {}),
    ],
)
def test_split_cash_spreads_the_credit_in_line_order(
    applied: dict[str, Decimal], credit: Decimal, expected: dict[str, tuple[Decimal, Decimal]]
) -> None:
    split = split_cash(applied, credit)
    assert split == expected
    assert list(split) == list(expected)  # the invoices keep the payment's line order


# --- payment types ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Cash", "cash"),
        ("cash", "cash"),
        ("Check", "check"),
        ("Cheque", "check"),
        ("ACH/EFT", "ach"),
        ("ACH", "ach"),
        ("E-Check", "ach"),
        ("Bank Transfer", "ach"),
        ("Debit", "debit"),
        ("Debit Card", "debit"),
        ("Visa", "credit"),
        ("MasterCard", "credit"),
        ("American Express", "credit"),
        ("Discover", "credit"),
        ("Credit Card", "credit"),
        ("Wire Transfer", "other"),
        ("Venmo", "other"),
        ("", "unknown"),
        ("   ", "unknown"),
        (None, "unknown"),
    ],
)
def test_payment_type(name: str | None, expected: str) -> None:
    assert payment_type(name) == expected


def test_payment_method_name_resolved_from_the_payment_method_list_when_the_ref_has_only_an_id() -> None:
    """QBO sends PaymentMethodRef without a name; an inactive method is still in the company's list (the
    client asks for Active IN (true, false)), so its name is still known."""
    p = payment(PaymentMethodRef={"value": "7"})
    assert only(map_payment(p, invoices("130"), REALM, CONNECTED)).payment.type == "unknown"
    mapped = map_payment(p, invoices("130"), REALM, CONNECTED, payment_methods={"7": "Visa", "8": "Cash"})
    assert only(mapped).payment.type == "credit"
    named = payment(PaymentMethodRef={"value": "7", "name": "Cash"})  # a name on the ref wins
    assert only(map_payment(named, invoices("130"), REALM, CONNECTED, {"7": "Visa"})).payment.type == "cash"


@pytest.mark.parametrize(
    ("name", "credit_cards", "expected"),
    [
        ("Old Card", {"9"}, "credit"),  # named freely, typed CREDIT_CARD by QBO
        ("Old Card", set(), "other"),
        ("Cash", {"9"}, "cash"),  # the name decides when it is known
        ("Check", set(), "check"),
    ],
)
def test_a_card_method_named_freely_is_credit_by_its_qbo_type(name: str, credit_cards: set[str], expected: str) -> None:
    p = payment(PaymentMethodRef={"value": "9"})
    mapped = map_payment(p, invoices("130"), REALM, CONNECTED, {"9": name}, credit_cards)
    assert only(mapped).payment.type == expected


# --- the record -------------------------------------------------------------------------------


def test_full_record_matches_the_contract_example() -> None:
    mapped = map_payment(payment(), invoices("130"), REALM, CONNECTED)
    assert mapped.skips == []
    assert mapped.payment_set is not None and mapped.payment_set.payment_id == "183"
    assert only(mapped).model_dump(mode="json") == {
        "external_id": "qbo:9130355357483456:payment:183:invoice:130",
        "payment": {"id": "183", "date": "2026-11-24", "amount": 5500, "total_amount": 5500, "credit_applied": 0,
                    "unapplied_amount": 0, "type": "check", "reference": "1024",
                    "created_at": "2026-11-24T17:03:11-08:00"},
        "invoice": {"id": "130", "number": "1037", "date": "2026-08-10", "total": 32585, "open_balance": 27085,
                    "memo": "Thank you for your business"},
        "customer": {"id": "24", "name": "Sonnenschein Family Store"},
        "currency": "USD",
        "line_items": [
            {"product_id": "5", "product_name": "Rock Fountain", "quantity": "1", "unit_price": 27500, "amount": 27500},
            {"product_id": "3", "product_name": "Concrete", "quantity": "5", "unit_price": 950, "amount": 4750},
        ],
    }  # fmt: skip


def test_nothing_else_about_the_company_leaves_qbo() -> None:
    text = only(map_payment(payment(), invoices("130"), REALM, CONNECTED)).model_dump_json()
    for private in ("Oakland", "1 Main St", "store@example.com", "internal: slow payer", "call before depositing"):
        assert private not in text


# (name, payment lines, TotalAmt, UnappliedAmt) → [(invoice, cash, credit)], each record's total and unapplied
SETS: list[tuple[str, list[Line], str, str, list[tuple[str, int, int]]]] = [
    ("one invoice, all cash", [("55.00", "Invoice", "130")], "55.00", "0", [("130", 5500, 0)]),
    ("several invoices, all cash",
     [("75.00", "Invoice", "9280"), ("50.00", "Invoice", "9276"), ("25.10", "Invoice", "9300")], "150.10", "0",
     [("9280", 7500, 0), ("9276", 5000, 0), ("9300", 2510, 0)]),
    ("two lines for one invoice add up into one record",
     [("10.00", "Invoice", "130"), ("5.25", "Invoice", "130")], "15.25", "0", [("130", 1525, 0)]),
    ("credit memo + cash: the credit is taken in line order",
     [("75.00", "Invoice", "9280"), ("50.00", "Invoice", "9276"), ("25.10", "Invoice", "9300"),
      ("125.00", "CreditMemo", "10270")], "25.10", "0",
     [("9280", 0, 7500), ("9276", 0, 5000), ("9300", 2510, 0)]),
    ("a credit smaller than the first invoice",
     [("80.00", "Invoice", "1"), ("20.00", "Invoice", "2"), ("30.00", "JournalEntry", "5")], "70.00", "0",
     [("1", 5000, 3000), ("2", 2000, 0)]),
    ("partly unapplied: only the applied cash is delivered",
     [("60.00", "Invoice", "130")], "100.00", "40.00", [("130", 6000, 0)]),
    ("multiple credits and a deposit",
     [("100.00", "Invoice", "1"), ("10.00", "CreditMemo", "7"), ("15.00", "Deposit", "8")], "75.00", "0",
     [("1", 7500, 2500)]),
]  # fmt: skip


@pytest.mark.parametrize(("name", "lines", "total", "unapplied", "expected"), SETS, ids=[s[0] for s in SETS])
def test_payment_set_holds_the_cash_on_each_invoice_and_the_credit_apart(
    name: str, lines: list[Line], total: str, unapplied: str, expected: list[tuple[str, int, int]]
) -> None:
    p = payment(lines=lines, TotalAmt=Decimal(total), UnappliedAmt=Decimal(unapplied))
    mapped = map_payment(p, invoices(*{i for _, t, i in lines if t == "Invoice"}), REALM, CONNECTED)
    got = records(mapped)
    assert [(r.invoice.id, r.payment.amount, r.payment.credit_applied) for r in got] == expected, name
    assert {(r.payment.total_amount, r.payment.unapplied_amount) for r in got} == {
        (to_cents(D(total)), to_cents(D(unapplied)))
    }
    assert sum(r.payment.amount for r in got) == to_cents(D(total) - D(unapplied))  # money is cash
    assert [r.external_id for r in got] == [external_id(REALM, "183", i) for i, _, _ in expected]
    assert mapped.skips == []


# (name, payment overrides, the reason) → an empty set: Green Check retracts whatever it held for the payment
EMPTY: list[tuple[str, dict[str, Any], SkipReason]] = [
    ("unapplied (not yet applied to an invoice)", {"Line": [], "UnappliedAmt": Decimal("55.00")},
     SkipReason.NO_INVOICE_LINK),
    ("a credit with no invoice", {"Line": [{"Amount": 20, "LinkedTxn": [{"TxnId": "5", "TxnType": "CreditMemo"}]}]},
     SkipReason.NO_INVOICE_LINK),
    ("a journal entry with no invoice",
     {"Line": [{"Amount": 20, "LinkedTxn": [{"TxnId": "5", "TxnType": "JournalEntry"}]}]},
     SkipReason.NO_INVOICE_LINK),
    ("$0 auto-applied credit", {"TotalAmt": 0, "PaymentMethodRef": None, "PrivateNote": "Credit applied", "Line": [
        {"Amount": 40, "LinkedTxn": [{"TxnId": "130", "TxnType": "Invoice"}]},
        {"Amount": 40, "LinkedTxn": [{"TxnId": "77", "TxnType": "CreditMemo"}]}]}, SkipReason.CREDIT_ONLY),
    ("a credit covering two invoices", {"TotalAmt": 0, "Line": [
        {"Amount": 10, "LinkedTxn": [{"TxnId": "130", "TxnType": "Invoice"}]},
        {"Amount": 15, "LinkedTxn": [{"TxnId": "131", "TxnType": "Invoice"}]},
        {"Amount": 25, "LinkedTxn": [{"TxnId": "77", "TxnType": "CreditMemo"}]}]}, SkipReason.CREDIT_ONLY),
    ("voided: note and zero total", {"Line": [], "TotalAmt": 0, "PrivateNote": "Voided"}, SkipReason.VOIDED),
    ("voided: note with text", {"Line": [], "TotalAmt": 0, "PrivateNote": "Voided call before depositing"},
     SkipReason.VOIDED),
    ("voided: TxnStatus, lines kept", {"TxnStatus": "Voided"}, SkipReason.VOIDED),
]  # fmt: skip


@pytest.mark.parametrize(("name", "over", "reason"), EMPTY, ids=[e[0] for e in EMPTY])
def test_payments_with_no_cash_on_an_invoice_become_an_empty_set(
    name: str, over: dict[str, Any], reason: SkipReason
) -> None:
    mapped = map_payment(payment(**over), invoices("130", "131"), REALM, CONNECTED)
    assert mapped.payment_set is not None and mapped.payment_set.payment_id == "183"
    assert mapped.payment_set.records == [], name
    assert [(s.payment_id, s.reason, s.invoice_id) for s in mapped.skips] == [("183", reason, None)]


@pytest.mark.parametrize(
    "created",
    ["2026-10-31T16:59:59-07:00", "2026-01-01T00:00:00Z"],
)
def test_a_payment_created_before_connected_at_becomes_no_set_at_all(created: str) -> None:
    """Never delivered, so nothing to retract either: even voided or unapplied, it is left alone."""
    variants: list[dict[str, Any]] = [{}, {"TxnStatus": "Voided"}, {"Line": []}]
    for over in variants:
        mapped = map_payment(payment(MetaData={"CreateTime": created}, **over), invoices("130"), REALM, CONNECTED)
        assert mapped.payment_set is None
        assert [(s.payment_id, s.reason) for s in mapped.skips] == [("183", SkipReason.BEFORE_CONNECTED)]


def test_created_exactly_at_connected_at_is_delivered() -> None:
    p = payment(MetaData={"CreateTime": "2026-10-31T17:00:00-07:00"})
    assert len(records(map_payment(p, invoices("130"), REALM, CONNECTED))) == 1


def test_applied_later_the_empty_set_becomes_a_record() -> None:
    """A prepayment recorded unapplied, applied to an invoice a day later: same Id and CreateTime, new
    SyncToken and LastUpdatedTime. The first reading retracts (nothing held yet); the second delivers."""
    first = payment(Line=[], UnappliedAmt=Decimal("55.00"))
    later = payment(
        SyncToken="1",
        MetaData={"CreateTime": "2026-11-24T17:03:11-08:00", "LastUpdatedTime": "2026-11-25T09:00:00-08:00"},
    )
    assert records(map_payment(first, invoices("130"), REALM, CONNECTED)) == []
    record = only(map_payment(later, invoices("130"), REALM, CONNECTED))
    assert (record.payment.amount, record.payment.unapplied_amount) == (5500, 0)
    assert record.payment.created_at == "2026-11-24T17:03:11-08:00"


def test_note_saying_voided_on_a_live_payment_is_not_a_void() -> None:
    p = payment(PrivateNote="Voided check replaced by this one")
    assert not is_voided(p)
    assert len(records(map_payment(p, invoices("130"), REALM, CONNECTED))) == 1


def test_missing_invoice_is_left_out_of_the_set_and_the_rest_delivered() -> None:
    p = payment(lines=[("10.00", "Invoice", "130"), ("20.00", "Invoice", "404")], TotalAmt=Decimal("30.00"))
    mapped = map_payment(p, invoices("130"), REALM, CONNECTED)
    assert [(r.invoice.id, r.payment.amount) for r in records(mapped)] == [("130", 1000)]
    assert [(s.reason, s.invoice_id) for s in mapped.skips] == [(SkipReason.INVOICE_MISSING, "404")]


def test_all_invoices_missing_gives_an_empty_set_naming_each() -> None:
    p = payment(lines=[("10.00", "Invoice", "130"), ("20.00", "Invoice", "131")], TotalAmt=Decimal("30.00"))
    mapped = map_payment(p, {}, REALM, CONNECTED)
    assert records(mapped) == []
    assert [(s.reason, s.invoice_id) for s in mapped.skips] == [
        (SkipReason.INVOICE_MISSING, "130"),
        (SkipReason.INVOICE_MISSING, "131"),
    ]


@pytest.mark.parametrize(
    ("over", "field", "expected"),
    [
        ({"PaymentRefNum": None}, ("payment", "reference"), None),
        ({"PaymentRefNum": ""}, ("payment", "reference"), None),
        ({"CurrencyRef": None}, ("currency",), "USD"),  # single-currency companies omit it
        ({"CurrencyRef": {"value": "CAD"}}, ("currency",), "CAD"),
        # multi-currency: the transaction's currency is kept, amounts stay in it (not HomeTotalAmt)
        ({"CurrencyRef": {"value": "EUR", "name": "Euro"}, "ExchangeRate": 1.08, "HomeTotalAmt": 59.4},
         ("currency",), "EUR"),
        ({"CurrencyRef": {"value": "EUR"}, "ExchangeRate": 1.08, "HomeTotalAmt": 59.4}, ("payment", "amount"), 5500),
        ({"CustomerRef": None}, ("customer", "name"), "Sonnenschein Family Store"),  # from the invoice
        ({"TxnDate": None}, ("payment", "date"), None),
        ({"UnappliedAmt": None}, ("payment", "unapplied_amount"), 0),
    ],
)  # fmt: skip
def test_optional_payment_fields(over: dict[str, Any], field: tuple[str, ...], expected: object) -> None:
    value: Any = only(map_payment(payment(**over), invoices("130"), REALM, CONNECTED))
    for part in field:
        value = getattr(value, part)
    assert value == expected


def test_currency_comes_from_the_invoice_when_the_payment_has_none() -> None:
    inv = {"130": invoice(CurrencyRef={"value": "CAD"})}
    assert only(map_payment(payment(CurrencyRef=None), inv, REALM, CONNECTED)).currency == "CAD"


@pytest.mark.parametrize(
    ("over", "field", "expected"),
    [
        ({"DocNumber": None}, "number", None),
        ({"CustomerMemo": None}, "memo", None),
        ({"CustomerMemo": {"value": ""}}, "memo", None),
        ({"Balance": 0}, "open_balance", 0),
        ({"TotalAmt": Decimal("-5.00")}, "total", -500),  # Green Check decides; we do not hide data
    ],
)
def test_optional_invoice_fields(over: dict[str, Any], field: str, expected: object) -> None:
    record = only(map_payment(payment(), {"130": invoice(**over)}, REALM, CONNECTED))
    assert getattr(record.invoice, field) == expected


# --- line items -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # fractional quantity, price with 3 decimals rounded half up
        ({"Amount": Decimal("3.77"), "DetailType": "SalesItemLineDetail",
          "SalesItemLineDetail": {"ItemRef": {"value": "9", "name": "Flower 1/8"}, "Qty": Decimal("2.5"),
                                  "UnitPrice": Decimal("1.5085")}},
         ("9", "Flower 1/8", "2.5", 151, 377)),
        # no quantity: one unit; no unit price: the amount
        ({"Amount": Decimal("12.00"), "DetailType": "SalesItemLineDetail",
          "SalesItemLineDetail": {"ItemRef": {"value": "1", "name": "Services"}}},
         ("1", "Services", "1", 1200, 1200)),
        # no unit price with a quantity: amount / quantity
        ({"Amount": Decimal("10.00"), "DetailType": "SalesItemLineDetail",
          "SalesItemLineDetail": {"ItemRef": {"value": "1"}, "Qty": 4}, "Description": "Pre-rolls"},
         ("1", "Pre-rolls", "4", 250, 1000)),
        # no item ref at all
        ({"Amount": Decimal("1.00"), "DetailType": "SalesItemLineDetail", "SalesItemLineDetail": {}},
         (None, None, "1", 100, 100)),
    ],
)  # fmt: skip
def test_line_item_fields(line: dict[str, Any], expected: tuple[object, ...]) -> None:
    (item,) = line_items(invoice(Line=[line]))
    assert (item.product_id, item.product_name, item.quantity, item.unit_price, item.amount) == expected


def test_only_sales_item_lines_become_line_items_including_bundle_members() -> None:
    lines = [
        {"Amount": 5, "DetailType": "DescriptionOnly", "DescriptionLineDetail": {}},
        {"Amount": 1, "DetailType": "DiscountLineDetail", "DiscountLineDetail": {}},
        {"Amount": 2, "DetailType": "TaxLineDetail", "TaxLineDetail": {}},
        {"Amount": 30, "DetailType": "GroupLineDetail", "GroupLineDetail": {"Line": [
            {"Amount": 20, "DetailType": "SalesItemLineDetail",
             "SalesItemLineDetail": {"ItemRef": {"value": "11", "name": "Cart"}, "Qty": 2, "UnitPrice": 10}},
            {"Amount": 10, "DetailType": "SalesItemLineDetail",
             "SalesItemLineDetail": {"ItemRef": {"value": "12", "name": "Battery"}, "Qty": 1, "UnitPrice": 10}},
        ]}},
        {"Amount": 7, "DetailType": "SalesItemLineDetail",
         "SalesItemLineDetail": {"ItemRef": {"value": "13", "name": "Gummies"}, "Qty": 1, "UnitPrice": 7}},
    ]  # fmt: skip
    assert [i.product_name for i in line_items(invoice(Line=lines))] == ["Cart", "Battery", "Gummies"]


def test_invoice_without_lines_has_no_line_items() -> None:
    assert line_items(invoice(Line=[])) == []


def test_external_id_format() -> None:
    assert external_id(REALM, "1", "2") == "qbo:9130355357483456:payment:1:invoice:2"


def test_record_types_are_strict() -> None:
    """Money must be integer cents: a float or string in a record is refused at the boundary."""
    good = only(map_payment(payment(), invoices("130"), REALM, CONNECTED)).model_dump(mode="json")
    for key in ("amount", "credit_applied", "unapplied_amount"):
        bad = {**good, "payment": {**good["payment"], key: 55.0}}
        with pytest.raises(ValueError, match=key):
            Record.model_validate(bad)


# --- the invariant: money is cash -------------------------------------------------------------

cents_st = st.integers(1, 500_000)
invoice_ids = st.sampled_from(["1", "2", "3", "4"])
credit_types = st.sampled_from(["CreditMemo", "JournalEntry", "Deposit"])


@st.composite
def consistent_payments(draw: st.DrawFn) -> Payment:
    """A payment as QBO keeps one: TotalAmt = Σ invoice lines − Σ credit lines + UnappliedAmt, never negative."""
    owed = draw(st.lists(st.tuples(cents_st, invoice_ids), min_size=1, max_size=6))
    credits = draw(st.lists(st.tuples(cents_st, credit_types), max_size=3))
    budget = sum(a for a, _ in owed)
    credit_lines = []
    for amount, kind in credits:
        if amount <= budget:  # QBO cannot apply more credit than the invoices owe
            budget -= amount
            credit_lines.append((amount, kind))
    unapplied = draw(st.sampled_from([0, 0, 1, 2_500, 100_000]))
    total = budget + unapplied
    lines = [{"Amount": D(a) / 100, "LinkedTxn": [{"TxnId": i, "TxnType": "Invoice"}]} for a, i in owed]
    lines += [{"Amount": D(a) / 100, "LinkedTxn": [{"TxnId": "9", "TxnType": k}]} for a, k in credit_lines]
    order = draw(st.permutations(range(len(lines))))
    return payment(Line=[lines[i] for i in order], TotalAmt=D(total) / 100, UnappliedAmt=D(unapplied) / 100)


@settings(max_examples=300, deadline=None)
@given(p=consistent_payments())
def test_record_amounts_add_up_to_the_cash_the_payment_applied(p: Payment) -> None:
    mapped = map_payment(p, invoices("1", "2", "3", "4"), REALM, CONNECTED)
    got = records(mapped)
    cash = to_cents(p.total_amt - (p.unapplied_amt or 0))
    if not got:  # only a payment whose credit covers every invoice is left empty
        assert cash == 0 and [s.reason for s in mapped.skips] == [SkipReason.CREDIT_ONLY]
        return
    assert sum(r.payment.amount for r in got) == cash
    assert sum(r.payment.credit_applied for r in got) == to_cents(credit_total(p))
    assert all(r.payment.amount >= 0 and r.payment.credit_applied >= 0 for r in got)
    assert [r.invoice.id for r in got] == p.invoice_ids()  # one record per invoice, in line order
