"""The pure QBO → Green Check mapping: table-driven (docs/greencheck.md §2, docs/design.md §5 item 5)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from qbo_operator.sync.mapping import (
    SkipReason,
    decimal_string,
    external_id,
    is_voided,
    line_items,
    map_payment,
    payment_type,
    to_cents,
)
from qbo_operator.sync.qbo_models import Invoice, Payment
from qbo_operator.sync.records import Record

REALM = "9130355357483456"
CONNECTED = datetime(2026, 11, 1, tzinfo=UTC)


def invoice(iid: str = "130", **over: Any) -> Invoice:
    raw: dict[str, Any] = {
        "Id": iid,
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


def payment(pid: str = "183", lines: list[tuple[str, str, str]] | None = None, **over: Any) -> Payment:
    """lines: (amount, txn type, txn id)."""
    raw: dict[str, Any] = {
        "Id": pid,
        "MetaData": {"CreateTime": "2026-11-24T17:03:11-08:00", "LastUpdatedTime": "2026-11-24T17:03:11-08:00"},
        "TxnDate": "2026-11-24",
        "TotalAmt": Decimal("55.00"),
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
    record = map_payment(p, {"1": invoice("1")}, REALM, CONNECTED).records[0]
    assert record.payment.amount == 29 and record.payment.total_amount == 29


@pytest.mark.parametrize(
    ("value", "text"),
    [(Decimal("1"), "1"), (Decimal("4.50"), "4.5"), (Decimal("100"), "100"), (Decimal("0.125"), "0.125"),
     (Decimal("0"), "0"), (Decimal("1E+3"), "1000")],
)  # fmt: skip
def test_decimal_string(value: Decimal, text: str) -> None:
    assert decimal_string(value) == text


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


def test_payment_method_name_resolved_from_lookup_when_ref_has_only_an_id() -> None:
    p = payment(PaymentMethodRef={"value": "7"})
    assert map_payment(p, {"130": invoice()}, REALM, CONNECTED).records[0].payment.type == "unknown"
    mapped = map_payment(p, {"130": invoice()}, REALM, CONNECTED, payment_methods={"7": "Visa"})
    assert mapped.records[0].payment.type == "credit"


# --- the record -------------------------------------------------------------------------------


def test_full_record_matches_the_contract_example() -> None:
    mapped = map_payment(payment(), {"130": invoice()}, REALM, CONNECTED)
    assert mapped.skips == []
    (record,) = mapped.records
    assert record.model_dump(mode="json") == {
        "external_id": "qbo:9130355357483456:payment:183:invoice:130",
        "payment": {"id": "183", "date": "2026-11-24", "amount": 5500, "total_amount": 5500, "type": "check",
                    "reference": "1024", "created_at": "2026-11-24T17:03:11-08:00"},
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
    record = map_payment(payment(), {"130": invoice()}, REALM, CONNECTED).records[0]
    text = record.model_dump_json()
    for private in ("Oakland", "1 Main St", "store@example.com", "internal: slow payer", "call before depositing"):
        assert private not in text


def test_split_payment_gives_one_record_per_invoice_with_the_applied_amount() -> None:
    p = payment(
        lines=[("75.00", "Invoice", "9280"), ("50.00", "Invoice", "9276"), ("25.10", "Invoice", "9300"),
               ("125.00", "CreditMemo", "10270")],
        TotalAmt=Decimal("25.10"),
    )  # fmt: skip
    invoices = {i: invoice(i) for i in ("9280", "9276", "9300")}
    mapped = map_payment(p, invoices, REALM, CONNECTED)
    assert [(r.invoice.id, r.payment.amount, r.payment.total_amount) for r in mapped.records] == [
        ("9280", 7500, 2510),
        ("9276", 5000, 2510),
        ("9300", 2510, 2510),
    ]
    assert len({r.external_id for r in mapped.records}) == 3
    assert mapped.skips == []


def test_two_lines_for_the_same_invoice_add_up_into_one_record() -> None:
    p = payment(lines=[("10.00", "Invoice", "130"), ("5.25", "Invoice", "130")])
    (record,) = map_payment(p, {"130": invoice()}, REALM, CONNECTED).records
    assert record.payment.amount == 1525


def test_zero_total_payment_that_settles_an_invoice_with_a_credit_is_delivered() -> None:
    p = payment(lines=[("40.00", "Invoice", "130"), ("40.00", "CreditMemo", "77")], TotalAmt=Decimal("0"),
                PaymentMethodRef=None, PrivateNote="Credit applied")  # fmt: skip
    (record,) = map_payment(p, {"130": invoice()}, REALM, CONNECTED).records
    assert (record.payment.amount, record.payment.total_amount, record.payment.type) == (4000, 0, "unknown")


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"Line": []}, SkipReason.NO_INVOICE_LINK),  # fully unapplied
        ({"Line": [{"Amount": 20, "LinkedTxn": [{"TxnId": "5", "TxnType": "CreditMemo"}]}]},
         SkipReason.NO_INVOICE_LINK),  # credit-only
        ({"Line": [{"Amount": 20, "LinkedTxn": [{"TxnId": "5", "TxnType": "JournalEntry"}]}]},
         SkipReason.NO_INVOICE_LINK),
        ({"Line": [], "TotalAmt": 0, "PrivateNote": "Voided"}, SkipReason.VOIDED),
        ({"Line": [], "TotalAmt": 0, "PrivateNote": "Voided call before depositing"}, SkipReason.VOIDED),
        ({"TxnStatus": "Voided"}, SkipReason.VOIDED),
        ({"MetaData": {"CreateTime": "2026-10-31T16:59:59-07:00"}}, SkipReason.BEFORE_CONNECTED),
    ],
)  # fmt: skip
def test_skipped_payments_carry_a_reason(over: dict[str, Any], reason: SkipReason) -> None:
    mapped = map_payment(payment(**over), {"130": invoice()}, REALM, CONNECTED)
    assert mapped.records == []
    assert [(s.payment_id, s.reason) for s in mapped.skips] == [("183", reason)]


def test_created_exactly_at_connected_at_is_delivered() -> None:
    p = payment(MetaData={"CreateTime": "2026-10-31T17:00:00-07:00"})
    assert len(map_payment(p, {"130": invoice()}, REALM, CONNECTED).records) == 1


def test_note_saying_voided_on_a_live_payment_is_not_a_void() -> None:
    p = payment(PrivateNote="Voided check replaced by this one")
    assert not is_voided(p)
    assert len(map_payment(p, {"130": invoice()}, REALM, CONNECTED).records) == 1


def test_missing_invoice_is_skipped_per_pair_and_the_rest_delivered() -> None:
    p = payment(lines=[("10.00", "Invoice", "130"), ("20.00", "Invoice", "404")])
    mapped = map_payment(p, {"130": invoice()}, REALM, CONNECTED)
    assert [r.invoice.id for r in mapped.records] == ["130"]
    assert [(s.reason, s.invoice_id) for s in mapped.skips] == [(SkipReason.INVOICE_MISSING, "404")]


def test_all_invoices_missing_gives_no_records() -> None:
    mapped = map_payment(payment(), {}, REALM, CONNECTED)
    assert mapped.records == [] and mapped.skips[0].reason == SkipReason.INVOICE_MISSING


@pytest.mark.parametrize(
    ("over", "field", "expected"),
    [
        ({"PaymentRefNum": None}, ("payment", "reference"), None),
        ({"PaymentRefNum": ""}, ("payment", "reference"), None),
        ({"CurrencyRef": None}, ("currency",), "USD"),  # single-currency companies omit it
        ({"CurrencyRef": {"value": "CAD"}}, ("currency",), "CAD"),
        ({"CustomerRef": None}, ("customer", "name"), "Sonnenschein Family Store"),  # from the invoice
        ({"TxnDate": None}, ("payment", "date"), None),
    ],
)
def test_optional_payment_fields(over: dict[str, Any], field: tuple[str, ...], expected: object) -> None:
    record = map_payment(payment(**over), {"130": invoice()}, REALM, CONNECTED).records[0]
    value: Any = record
    for part in field:
        value = getattr(value, part)
    assert value == expected


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
    record = map_payment(payment(), {"130": invoice(**over)}, REALM, CONNECTED).records[0]
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
    good = map_payment(payment(), {"130": invoice()}, REALM, CONNECTED).records[0].model_dump(mode="json")
    good["payment"]["amount"] = 55.0
    with pytest.raises(ValueError, match="amount"):
        Record.model_validate(good)
