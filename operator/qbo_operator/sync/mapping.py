"""QBO payment × invoice → Green Check record (docs/greencheck.md §2). Pure: no I/O, table-tested.

One record per (payment, invoice) pair; `payment.amount` is the part of the payment applied to that
invoice (the sum of the payment's lines linked to it), not the payment's total. Only the contract's
fields are produced: nothing else about the company (addresses, e-mails, phone numbers, private
notes) leaves QBO. The invoice memo is the invoice's customer-facing message (`CustomerMemo`).

Money: QBO amounts are exact decimals; cents = amount × 100 exactly. Only a value with more than two
decimal places (QBO allows up to 5 on unit prices) is rounded, ROUND_HALF_UP to the cent.

Skipped, each with a counted reason: payments with no invoice link (unapplied, or only credits
applied), voided payments (QBO keeps them with zero amounts and "Voided" in PrivateNote), payments
created before the integration connected, and pairs whose invoice is missing or deleted."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum

from qbo_operator.sync.qbo_models import Invoice, InvoiceLine, Payment
from qbo_operator.sync.records import (
    LineItem,
    PaymentType,
    Record,
    RecordCustomer,
    RecordInvoice,
    RecordPayment,
)

DEFAULT_CURRENCY = "USD"  # QBO omits CurrencyRef in single-currency companies; US companies are USD


class SkipReason(StrEnum):
    NO_INVOICE_LINK = "no invoice link"
    VOIDED = "voided"
    BEFORE_CONNECTED = "created before connectedAt"
    INVOICE_MISSING = "invoice missing or deleted"


@dataclass(frozen=True)
class Skip:
    payment_id: str
    reason: SkipReason
    invoice_id: str | None = None


@dataclass(frozen=True)
class Mapped:
    """What one payment becomes: its records, and the pairs (or the whole payment) skipped, with why."""

    records: list[Record] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)


def to_cents(amount: Decimal | int) -> int:
    """Exact decimal amount → integer cents; ROUND_HALF_UP only beyond two decimal places."""
    value = Decimal(amount)
    if not value.is_finite():
        raise ValueError(f"amount {amount!r} is not a finite number")
    try:
        cents = value * 100
        if cents == cents.to_integral_value():
            return int(cents)
        return int(cents.quantize(Decimal(1), rounding=ROUND_HALF_UP))
    except ArithmeticError:  # Overflow/InvalidOperation for absurd magnitudes
        raise ValueError(f"amount {amount!r} is out of range") from None


def decimal_string(value: Decimal) -> str:
    """`Decimal('4.50')` → "4.5", `Decimal('100')` → "100": no exponent, no trailing zeros."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


_WORDS = re.compile(r"[^a-z0-9]+")
_CREDIT = {
    "credit",
    "creditcard",
    "visa",
    "mastercard",
    "master",
    "amex",
    "americanexpress",
    "discover",
    "dinersclub",
    "diners",
    "jcb",
    "unionpay",
}
_DEBIT = {"debit", "debitcard", "interac"}
_ACH = {"ach", "acheft", "echeck", "electroniccheck", "banktransfer", "eft", "directdebit", "directdeposit"}
_CHECK = {"check", "cheque", "checks", "personalcheck", "businesscheck", "cashierscheck"}


def payment_type(method_name: str | None) -> PaymentType:
    """QBO's PaymentMethodRef name (free text a company can edit) → the contract's payment type."""
    if method_name is None or not method_name.strip():
        return "unknown"
    key = _WORDS.sub("", method_name.lower())
    if key == "cash":
        return "cash"
    if key in _CHECK:
        return "check"
    if key in _ACH:
        return "ach"
    if key in _DEBIT:
        return "debit"
    if key in _CREDIT:
        return "credit"
    return "other"


def is_voided(payment: Payment) -> bool:
    if (payment.txn_status or "").lower() == "voided":
        return True
    note = (payment.private_note or "").lstrip().lower()
    return note.startswith("voided") and payment.total_amt == 0


def applied_amounts(payment: Payment) -> dict[str, Decimal]:
    """Invoice id → amount of this payment applied to it (lines linked to the same invoice add up)."""
    out: dict[str, Decimal] = {}
    for line in payment.line:
        for link in line.linked_txn:
            if link.txn_type == "Invoice":
                out[link.txn_id] = out.get(link.txn_id, Decimal(0)) + line.amount
    return out


def _sales_lines(lines: list[InvoiceLine]) -> list[InvoiceLine]:
    """SalesItemLineDetail lines, including those inside bundles (GroupLineDetail)."""
    out: list[InvoiceLine] = []
    for line in lines:
        if line.detail_type == "SalesItemLineDetail" and line.sales_item_line_detail is not None:
            out.append(line)
        elif line.detail_type == "GroupLineDetail" and line.group_line_detail is not None:
            out.extend(_sales_lines(line.group_line_detail.line))
    return out


def line_items(invoice: Invoice) -> list[LineItem]:
    items = []
    for line in _sales_lines(invoice.line):
        detail = line.sales_item_line_detail
        assert detail is not None
        amount = line.amount if line.amount is not None else Decimal(0)
        qty = detail.qty if detail.qty is not None else Decimal(1)
        unit_price = detail.unit_price
        if unit_price is None:
            unit_price = amount / qty if qty else amount
        item = detail.item_ref
        items.append(
            LineItem(
                product_id=item.value if item else None,
                product_name=(item.name if item and item.name else line.description),
                quantity=decimal_string(qty),
                unit_price=to_cents(unit_price),
                amount=to_cents(amount),
            )
        )
    return items


def external_id(realm_id: str, payment_id: str, invoice_id: str) -> str:
    return f"qbo:{realm_id}:payment:{payment_id}:invoice:{invoice_id}"


def map_payment(
    payment: Payment,
    invoices: Mapping[str, Invoice],
    realm_id: str,
    connected_at: datetime,
    payment_methods: Mapping[str, str] | None = None,
) -> Mapped:
    """The records for one payment, given the invoices it links to (absent ones are skipped)."""
    if payment.create_time < connected_at:
        return Mapped(skips=[Skip(payment.id, SkipReason.BEFORE_CONNECTED)])
    if is_voided(payment):
        return Mapped(skips=[Skip(payment.id, SkipReason.VOIDED)])
    applied = applied_amounts(payment)
    if not applied:
        return Mapped(skips=[Skip(payment.id, SkipReason.NO_INVOICE_LINK)])
    method = payment.payment_method_ref
    method_name = method.name if method and method.name else None
    if method_name is None and method is not None and payment_methods:
        method_name = payment_methods.get(method.value)
    pay_type = payment_type(method_name)
    records: list[Record] = []
    skips: list[Skip] = []
    for invoice_id, amount in applied.items():
        invoice = invoices.get(invoice_id)
        if invoice is None:
            skips.append(Skip(payment.id, SkipReason.INVOICE_MISSING, invoice_id))
            continue
        customer = payment.customer_ref or invoice.customer_ref
        currency = payment.currency_ref or invoice.currency_ref
        records.append(
            Record(
                external_id=external_id(realm_id, payment.id, invoice.id),
                payment=RecordPayment(
                    id=payment.id,
                    date=payment.txn_date.isoformat() if payment.txn_date else None,
                    amount=to_cents(amount),
                    total_amount=to_cents(payment.total_amt),
                    type=pay_type,
                    reference=payment.payment_ref_num or None,
                    created_at=payment.create_time.isoformat(),
                ),
                invoice=RecordInvoice(
                    id=invoice.id,
                    number=invoice.doc_number or None,
                    date=invoice.txn_date.isoformat() if invoice.txn_date else None,
                    total=to_cents(invoice.total_amt),
                    open_balance=to_cents(invoice.balance),
                    memo=(invoice.customer_memo.value or None) if invoice.customer_memo else None,
                ),
                customer=RecordCustomer(
                    id=customer.value if customer else None, name=customer.name if customer else None
                ),
                currency=currency.value if currency else DEFAULT_CURRENCY,
                line_items=line_items(invoice),
            )
        )
    return Mapped(records=records, skips=skips)
