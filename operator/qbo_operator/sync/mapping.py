"""QBO payment × invoice → Green Check payment set (docs/sync.md "Mapping"). Pure: no I/O, table-tested.

A payment created after the connection becomes one payment set: the records of every invoice it pays,
which replace whatever Green Check held for that payment (docs/greencheck.md §2). A payment that is
voided, unapplied, or a pure credit application becomes an empty set (Green Check retracts what it had);
a payment created before the connection becomes nothing at all: it was never delivered.

Money is cash. A payment's lines link invoices (money owed, settled) and credits (credit memos, journal
entries, deposits, refunds: anything but an Invoice), so QBO's `TotalAmt` is Σ invoice lines − Σ credit
lines + `UnappliedAmt`. The credit is spread over the payment's invoices in line order, each taking what
it can; `payment.amount` is the cash left on each invoice, `payment.credit_applied` the credit. So Σ amount
over a payment's records = TotalAmt − UnappliedAmt, the cash that paid invoices. Only the contract's
fields leave QBO (no addresses, e-mails, phone numbers, private notes).

QBO amounts are exact decimals; cents = amount × 100 exactly; a value with more than two decimal places
(QBO allows up to 5 on unit prices) is rounded ROUND_HALF_UP to the cent."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum

from qbo_operator.sync.qbo_models import Invoice, InvoiceLine, Payment
from qbo_operator.sync.records import (
    LineItem,
    PaymentSet,
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
    CREDIT_ONLY = "credit applied, no cash"
    BEFORE_CONNECTED = "created before connectedAt"
    INVOICE_MISSING = "invoice missing or deleted"


@dataclass(frozen=True)
class Skip:
    payment_id: str
    reason: SkipReason
    invoice_id: str | None = None


@dataclass(frozen=True)
class Mapped:
    """What one payment becomes: its set (None: never delivered), and what was left out, with why."""

    payment_set: PaymentSet | None
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
    """Invoice id → amount of this payment's lines linked to it (lines linked to the same invoice add up)."""
    out: dict[str, Decimal] = {}
    for line in payment.line:
        for link in line.linked_txn:
            if link.txn_type == "Invoice":
                out[link.txn_id] = out.get(link.txn_id, Decimal(0)) + line.amount
    return out


def credit_total(payment: Payment) -> Decimal:
    """Σ of the payment's lines linked to anything but an invoice: credits it applies, not cash."""
    return sum(
        (line.amount for line in payment.line if any(link.txn_type != "Invoice" for link in line.linked_txn)),
        Decimal(0),
    )


def split_cash(applied: Mapping[str, Decimal], credit: Decimal) -> dict[str, tuple[Decimal, Decimal]]:
    """Invoice id → (cash, credit): the credit taken by the invoices in line order, each as much as it can."""
    left = max(credit, Decimal(0))
    out: dict[str, tuple[Decimal, Decimal]] = {}
    for invoice_id, amount in applied.items():
        taken = min(left, max(amount, Decimal(0)))
        left -= taken
        out[invoice_id] = (amount - taken, taken)
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
    credit_cards: Collection[str] = (),
) -> Mapped:
    """The payment set for one payment, given the invoices it links to (absent ones are left out)."""
    if payment.create_time < connected_at:
        return Mapped(None, [Skip(payment.id, SkipReason.BEFORE_CONNECTED)])
    empty = PaymentSet(payment_id=payment.id, records=[])
    if is_voided(payment):
        return Mapped(empty, [Skip(payment.id, SkipReason.VOIDED)])
    applied = applied_amounts(payment)
    if not applied:
        return Mapped(empty, [Skip(payment.id, SkipReason.NO_INVOICE_LINK)])
    split = split_cash(applied, credit_total(payment))
    if all(to_cents(cash) == 0 for cash, _ in split.values()):
        return Mapped(empty, [Skip(payment.id, SkipReason.CREDIT_ONLY)])
    pay_type = payment_type(_method_name(payment, payment_methods))
    method = payment.payment_method_ref
    if pay_type in ("other", "unknown") and method is not None and method.value in credit_cards:
        pay_type = "credit"  # a card method named freely ("Old Card"): QBO's PaymentMethod Type says CREDIT_CARD
    records: list[Record] = []
    skips: list[Skip] = []
    for invoice_id, (cash, credit) in split.items():
        invoice = invoices.get(invoice_id)
        if invoice is None:
            skips.append(Skip(payment.id, SkipReason.INVOICE_MISSING, invoice_id))
            continue
        records.append(_record(payment, invoice, realm_id, pay_type, cash, credit))
    return Mapped(PaymentSet(payment_id=payment.id, records=records), skips)


def _method_name(payment: Payment, payment_methods: Mapping[str, str] | None) -> str | None:
    """PaymentMethodRef usually carries only the id; the name comes from the company's PaymentMethod list."""
    method = payment.payment_method_ref
    if method is None:
        return None
    if method.name:
        return method.name
    return (payment_methods or {}).get(method.value)


def _record(
    payment: Payment, invoice: Invoice, realm_id: str, pay_type: PaymentType, cash: Decimal, credit: Decimal
) -> Record:
    customer = payment.customer_ref or invoice.customer_ref
    currency = payment.currency_ref or invoice.currency_ref
    return Record(
        external_id=external_id(realm_id, payment.id, invoice.id),
        payment=RecordPayment(
            id=payment.id,
            date=payment.txn_date.isoformat() if payment.txn_date else None,
            amount=to_cents(cash),
            total_amount=to_cents(payment.total_amt),
            credit_applied=to_cents(credit),
            unapplied_amount=to_cents(payment.unapplied_amt or 0),
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
        customer=RecordCustomer(id=customer.value if customer else None, name=customer.name if customer else None),
        currency=currency.value if currency else DEFAULT_CURRENCY,
        line_items=line_items(invoice),
    )
