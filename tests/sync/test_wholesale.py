"""The Wholesale CSV rows and what a batch writes (pure): every column, the several-products layout, corrections
as replacement rows, refusals for rows the intake would not take, and the header exactly as published."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest

from qbo_operator.sync.records import (
    LineItem,
    PaymentSet,
    Record,
    RecordCustomer,
    RecordInvoice,
    RecordPayment,
)
from qbo_operator.sync.wholesale import HEADER, RETRACTED, Delivered, dollars, encode, plan, row

PUBLISHED = (
    "Date,Invoice Number,Customer,Product,Quantity,Price,Memo/Description,Invoice Total,Payment Date,Payment Type,"
    "Payment ID,Payment Amount,Open Balance,location_id"
)
LOC = "loc-7"


def item(name: str | None, qty: str, unit: int, amount: int) -> LineItem:
    return LineItem(product_id="9", product_name=name, quantity=qty, unit_price=unit, amount=amount)


def record(
    pid: str = "70",
    inv: str = "12",
    number: str | None = "1042",
    amount: int = 12_345,
    kind: Any = "check",
    items: list[LineItem] | None = None,
    customer: str | None = "Siskiyou Supply, LLC",
    currency: str = "USD",
    memo: str | None = None,
) -> Record:
    return Record(
        external_id=f"qbo:1:payment:{pid}:invoice:{inv}",
        payment=RecordPayment(id=pid, date="2026-12-01", amount=amount, total_amount=amount, credit_applied=0,
                              unapplied_amount=0, type=kind, reference=None, created_at="2026-12-01T16:00:00Z"),
        invoice=RecordInvoice(id=inv, number=number, date="2026-11-28", total=20_000, open_balance=7_655, memo=memo),
        customer=RecordCustomer(id="3", name=customer),
        currency=currency,
        line_items=[item("Gelato Flower 3.5g", "8", 2_500, 20_000)] if items is None else items,
    )  # fmt: skip


def parsed(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode(), newline="")))


def test_the_header_is_exactly_the_published_one() -> None:
    assert ",".join(HEADER) == PUBLISHED
    assert parsed(encode([]))[0] == PUBLISHED.split(",")


@pytest.mark.parametrize(
    ("cents", "text"), [(0, "0.00"), (5, "0.05"), (100, "1.00"), (123_456, "1234.56"), (-250, "-2.50")]
)
def test_money_is_decimal_dollars(cents: int, text: str) -> None:
    assert dollars(cents) == text


def test_one_product_row_fills_every_column() -> None:
    assert row(record(), LOC) == (
        "2026-11-28", "1042", "Siskiyou Supply, LLC", "Gelato Flower 3.5g", "8", "25.00", "", "200.00",
        "2026-12-01", "Check", "70", "123.45", "76.55", LOC,
    )  # fmt: skip


def test_several_products_stay_one_row_with_the_lines_itemised() -> None:
    items = [item("Gelato Flower 3.5g", "8", 2_500, 20_000), item("Jack Herer Rosin 1g", "1.5", 3_000, 4_500)]
    r = row(record(items=items, memo="Thanks"), LOC)
    assert r[3:7] == (
        "Gelato Flower 3.5g; Jack Herer Rosin 1g",
        "9.5",
        "245.00",
        "Thanks | Gelato Flower 3.5g 8 x 25.00 = 200.00; Jack Herer Rosin 1g 1.5 x 30.00 = 45.00",
    )
    assert r[11] == "123.45"  # the payment's amount once, never per product


@pytest.mark.parametrize(
    ("kind", "column"),
    [("cash", "Cash"), ("check", "Check"), ("ach", "ACH"), ("debit", "Debit"), ("credit", "Credit"),
     ("other", ""), ("unknown", "")],
)  # fmt: skip
def test_payment_type_is_one_of_the_intakes_five_or_empty(kind: str, column: str) -> None:
    assert row(record(kind=kind), LOC)[9] == column


def test_no_products_and_foreign_currency_are_said_not_guessed() -> None:
    r = row(record(items=[], currency="CAD"), LOC)
    assert r[3:7] == ("", "", "", "Amounts in CAD")


def test_a_new_set_writes_its_rows_and_an_unchanged_one_writes_nothing() -> None:
    first = plan([PaymentSet(payment_id="70", records=[record()])], {}, LOC)
    assert first.rows == [row(record(), LOC)]
    assert [(r.external_id, r.status) for r in first.results[0].records] == [("qbo:1:payment:70:invoice:12", "created")]
    again = plan([PaymentSet(payment_id="70", records=[record()])], first.delivered, LOC)
    assert again.rows == [] and again.delivered == {}
    assert [r.status for r in again.results[0].records] == ["unchanged"]


def test_corrections_are_replacement_rows_with_the_same_payment_id_and_invoice_number() -> None:
    held = plan([PaymentSet(payment_id="70", records=[record(), record(inv="13", number="1043")])], {}, LOC).delivered
    edited = plan([PaymentSet(payment_id="70", records=[record(amount=10_000)])], held, LOC)
    assert [(r[1], r[10], r[11], r[6]) for r in edited.rows] == [
        ("1042", "70", "100.00", ""),
        ("1043", "70", "0.00", RETRACTED),
    ]
    assert sorted(r.status for r in edited.results[0].records) == ["retracted", "updated"]
    assert list(edited.delivered["70"].rows) == ["qbo:1:payment:70:invoice:12"]
    voided = plan([PaymentSet(payment_id="70", records=[])], edited.delivered, LOC)
    assert [(r[1], r[11], r[6]) for r in voided.rows] == [("1042", "0.00", RETRACTED)]
    assert voided.delivered == {"70": Delivered()}


def test_a_renumbered_invoice_retracts_its_old_number() -> None:
    held = plan([PaymentSet(payment_id="70", records=[record()])], {}, LOC).delivered
    renumbered = plan([PaymentSet(payment_id="70", records=[record(number="1042-A")])], held, LOC)
    assert [(r[1], r[11]) for r in renumbered.rows] == [("1042", "0.00"), ("1042-A", "123.45")]


@pytest.mark.parametrize(
    ("records", "column", "why"),
    [
        ([record(number=None)], "Invoice Number", "has no invoice number"),
        ([record(customer=None)], "Customer", "has no customer name"),
        ([record(inv="12"), record(inv="13")], "Invoice Number", "two invoices numbered 1042"),
    ],
)
def test_a_set_the_intake_cannot_take_is_rejected_and_writes_nothing(
    records: list[Record], column: str, why: str
) -> None:
    out = plan([PaymentSet(payment_id="70", records=records), PaymentSet(payment_id="71", records=[])], {}, LOC)
    assert out.rows == [] and "70" not in out.delivered
    rejected = out.results[0]
    assert rejected.status == "rejected" and why in rejected.errors[0].message
    assert rejected.errors[0].field == column
    assert out.results[1].status == "applied"


def test_rows_round_trip_through_pythons_csv_reader() -> None:
    awkward = record(customer='Smith "Smitty", & Co.\nWest', memo="line one\r\nline two, with comma")
    data = encode([row(awkward, LOC)])
    assert parsed(data) == [list(HEADER), list(row(awkward, LOC))]
