"""Green Check's documented SFTP intake: payment sets as rows of the Wholesale CSV (docs/greencheck.md §4).

Pure. One row per (payment, invoice) record, the manual wholesale upload's "one row per invoice payment"; an
invoice with several products keeps that one row (their names joined in Product, the total quantity, the
products' subtotal as Price, each line itemised in Memo/Description), so a payment's amount is never repeated
over rows. Dates are QuickBooks' `TxnDate` as written in the books; money is decimal dollars.

Corrections follow our stated assumption (README, "Green Check's SFTP intake"): a row replaces any earlier row
with the same Payment ID and Invoice Number. A changed record is written again in full; a record that no longer
exists (payment voided, deleted, unapplied or moved to another invoice) is written once more with Payment Amount
0.00 and a Memo/Description that says it was retracted. What each payment's current rows are is kept in the
delivery's state (`Delivered`), so an unchanged set writes nothing and no row ever appears in two files."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from qbo_operator.sync.records import PaymentResult, PaymentSet, Record, RecordResult, ResultError

HEADER = (
    "Date",
    "Invoice Number",
    "Customer",
    "Product",
    "Quantity",
    "Price",
    "Memo/Description",
    "Invoice Total",
    "Payment Date",
    "Payment Type",
    "Payment ID",
    "Payment Amount",
    "Open Balance",
    "location_id",
)
INVOICE_NUMBER, PAYMENT_ID, PAYMENT_AMOUNT, MEMO = 1, 10, 11, 6
PAYMENT_TYPES = {"cash": "Cash", "check": "Check", "ach": "ACH", "debit": "Debit", "credit": "Credit"}
HOME_CURRENCY = "USD"
RETRACTED = "Retracted: this payment no longer pays this invoice in QuickBooks (voided, deleted, unapplied or moved)"

Row = tuple[str, ...]


def dollars(cents: int) -> str:
    """Integer cents → "1234.50" (no symbol, no grouping): what a CSV reader parses as a number."""
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100}.{abs(cents) % 100:02d}"


def _products(record: Record) -> tuple[str, str, str, str]:
    """Product, Quantity, Price and the itemisation for Memo/Description (several products only)."""
    items = record.line_items
    if not items:
        return "", "", "", ""
    if len(items) == 1:
        item = items[0]
        return item.product_name or "", item.quantity, dollars(item.unit_price), ""
    names = "; ".join(i.product_name or "(no name)" for i in items)
    quantity = sum((Decimal(i.quantity) for i in items), Decimal(0))
    lines = "; ".join(
        f"{i.product_name or '(no name)'} {i.quantity} x {dollars(i.unit_price)} = {dollars(i.amount)}" for i in items
    )
    return names, format(quantity.normalize(), "f"), dollars(sum(i.amount for i in items)), lines


def row(record: Record, location_id: str) -> Row:
    """The Wholesale CSV row of one record, every column we know filled."""
    product, quantity, price, itemised = _products(record)
    memo = [m for m in (record.invoice.memo, itemised) if m]
    if record.currency != HOME_CURRENCY:
        memo.append(f"Amounts in {record.currency}")
    return (
        record.invoice.date or "",
        record.invoice.number or "",
        record.customer.name or "",
        product,
        quantity,
        price,
        " | ".join(memo),
        dollars(record.invoice.total),
        record.payment.date or "",
        PAYMENT_TYPES.get(record.payment.type, ""),
        record.payment.id,
        dollars(record.payment.amount),
        dollars(record.invoice.open_balance),
        location_id,
    )


def retraction(old: Row) -> Row:
    """The row that replaces a record which no longer exists: same keys, no money paid."""
    out = list(old)
    out[PAYMENT_AMOUNT] = dollars(0)
    out[MEMO] = RETRACTED
    return tuple(out)


def encode(rows: Iterable[Row]) -> bytes:
    """The file: the header exactly as published, then the rows; CRLF line ends as RFC 4180 has them."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(HEADER)
    writer.writerows(rows)
    return buffer.getvalue().encode()


# ---------------------------------------------------------------------------------------------
# What Green Check holds, and what a batch changes in it


class Delivered(BaseModel):
    """One payment's current rows at Green Check, by the record's external id."""

    model_config = ConfigDict(extra="forbid")

    rows: dict[str, list[str]] = Field(default_factory=dict)


@dataclass
class Plan:
    """What one batch writes: the rows of its file, each set's result, and each payment's rows afterwards."""

    rows: list[Row] = field(default_factory=list)
    results: list[PaymentResult] = field(default_factory=list)
    delivered: dict[str, Delivered] = field(default_factory=dict)


def _refusal(payment_set: PaymentSet, location_id: str) -> tuple[str, str] | None:
    """(column, why) a set cannot be written as Wholesale rows (the intake requires these columns), or None."""
    numbers: set[str] = set()
    for record in payment_set.records:
        number = record.invoice.number
        if not number:
            return "Invoice Number", f"invoice {record.invoice.id} has no invoice number (DocNumber), which it requires"
        if not record.customer.name:
            return "Customer", f"invoice {number} has no customer name, which the Wholesale CSV requires"
        if number in numbers:
            return "Invoice Number", (
                f"two invoices numbered {number} in one payment: the Wholesale CSV keys rows by Payment ID and "
                "Invoice Number"
            )
        numbers.add(number)
    return None if location_id else ("location_id", "spec.delivery.sftp.locationId is empty")


def plan(payment_sets: Sequence[PaymentSet], current: Mapping[str, Delivered], location_id: str) -> Plan:
    """The rows that make Green Check's view of each payment equal to its set (module docstring)."""
    out = Plan()
    for payment_set in payment_sets:
        refusal = _refusal(payment_set, location_id)
        if refusal is not None:
            column, why = refusal
            out.results.append(
                PaymentResult(
                    payment_id=payment_set.payment_id,
                    status="rejected",
                    errors=[ResultError(field=column, message=why)],
                )
            )
            continue
        old = current.get(payment_set.payment_id, Delivered()).rows
        new = {r.external_id: row(r, location_id) for r in payment_set.records}
        results: list[RecordResult] = []
        for external_id, new_row in new.items():
            before = old.get(external_id)
            if before is not None and tuple(before) == new_row:
                results.append(RecordResult(external_id=external_id, status="unchanged"))
                continue
            if before is not None and before[INVOICE_NUMBER] != new_row[INVOICE_NUMBER]:
                out.rows.append(retraction(tuple(before)))  # the invoice was renumbered: its old key goes
            out.rows.append(new_row)
            results.append(RecordResult(external_id=external_id, status="created" if before is None else "updated"))
        for external_id, before in old.items():
            if external_id not in new:
                out.rows.append(retraction(tuple(before)))
                results.append(RecordResult(external_id=external_id, status="retracted"))
        out.results.append(PaymentResult(payment_id=payment_set.payment_id, status="applied", records=results))
        if any(r.status != "unchanged" for r in results):
            out.delivered[payment_set.payment_id] = Delivered(rows={k: list(v) for k, v in new.items()})
    return out
