"""What bookkeepers do to a QBO company's books after the fact (issue #15, docs/qbo.md §3).

A payment applied to an invoice days later, moved, given another invoice or a corrected amount; an
invoice edited, voided or deleted (QBO then unlinks the payments applied to it, which keep their
TotalAmt and grow their UnappliedAmt); credits (credit memos, journal entries and deposits that
credit the customer's A/R) and QBO's "Automatically apply credits", a $0 payment that links an
invoice and a credit. Every change keeps Id and CreateTime, bumps SyncToken and LastUpdatedTime,
keeps the books consistent (`qbo_books.check_books`) and tells the company's listeners (webhooks),
as Intuit does. Plain functions on a `Company` at a given instant: `QboSandbox` adds the lock and
the clock."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Literal

from qbo_operator.harness.sandbox.qbo_store import Company, Deleted, credit_customer
from qbo_operator.harness.sandbox.qbo_values import (
    AR_ACCOUNT,
    CHECKING,
    CREDIT_TYPES,
    DISCOUNT_ACCOUNT,
    ZERO,
    Entity,
    Money,
    SaleLine,
    SandboxError,
    money,
    round_cents,
    whole_second,
)

CreditKind = Literal["CreditMemo", "JournalEntry", "Deposit"]
# An invoice line as callers give it: (item id or None for the generic service item, qty, unit price).
InvoiceLine = tuple[str | None, Money, Money]
_Links = dict[tuple[str, str], Decimal]
SERVICE_ITEM = "Services"


# --- payments ---------------------------------------------------------------------------------


def payment_links(payment: Mapping[str, object]) -> _Links:
    """A payment's applications: (TxnType, TxnId) -> amount, in line order."""
    links: _Links = {}
    for line in payment.get("Line", []):  # type: ignore[attr-defined]
        for link in line.get("LinkedTxn", []):
            key = (str(link["TxnType"]), str(link["TxnId"]))
            links[key] = links.get(key, ZERO) + line["Amount"]
    return links


def _live_payment(company: Company, payment_id: str) -> Entity:
    payment = company.payments.get(str(payment_id))
    if payment is None:
        raise SandboxError(f"payment {payment_id} does not exist in company {company.realm_id}")
    if payment["Id"] in company.voided:
        raise SandboxError(f"payment {payment_id} is voided and cannot be changed")
    return payment


def _wanted(
    company: Company,
    customer_id: str,
    invoices: Sequence[tuple[str, Decimal]],
    credits: Sequence[tuple[str, Decimal]],
    current: _Links,
) -> _Links:
    """The new applications, checked against what is open plus what this payment already holds."""
    wanted: _Links = {}
    pairs = [("Invoice", i, a) for i, a in invoices] + [(company.credit_entity(c), c, a) for c, a in credits]
    for entity, txn_id, amount in pairs:
        target = company.target(entity, txn_id)
        if target is None:
            raise SandboxError(f"{entity} {txn_id} does not exist in company {company.realm_id}")
        if txn_id in company.voided:
            raise SandboxError(f"{entity} {txn_id} is voided")
        key = (entity, txn_id)
        if key in wanted:
            raise SandboxError(f"{entity} {txn_id} is listed twice")
        if amount <= 0:
            raise SandboxError(f"the amount applied to {entity} {txn_id} must be positive, not {amount}")
        available = company.open_amount(entity, target) + current.get(key, ZERO)
        if amount > available:
            raise SandboxError(f"{amount} is more than {entity} {txn_id}'s open {available}")
        if credit_customer(target) != customer_id:
            raise SandboxError(f"{entity} {txn_id} belongs to another customer than the payment's")
        wanted[key] = amount
    return wanted


def update_payment(
    company: Company,
    payment_id: str,
    at: datetime,
    *,
    invoices: Sequence[tuple[str, Money]] | None = None,
    credits: Sequence[tuple[str, Money]] | None = None,
    total: Money | None = None,
    txn_date: str | None = None,
    ref_num: str | None = None,
    method: str | None = None,
) -> Entity:
    """Edit a payment as a bookkeeper does; None keeps a value, `invoices`/`credits` replace the links.

    UnappliedAmt = TotalAmt − Σ invoices + Σ credits and must not be negative. Everything is checked
    before anything changes."""
    payment = _live_payment(company, payment_id)
    current = payment_links(payment)
    inv = (
        [(str(i), money(a)) for i, a in invoices]
        if invoices is not None
        else [(i, a) for (e, i), a in current.items() if e == "Invoice"]
    )
    cred = (
        [(str(c), money(a)) for c, a in credits]
        if credits is not None
        else [(i, a) for (e, i), a in current.items() if e != "Invoice"]
    )
    new_total = money(total) if total is not None else payment["TotalAmt"]
    unapplied = new_total - sum((a for _, a in inv), ZERO) + sum((a for _, a in cred), ZERO)
    if new_total < 0 or unapplied < 0:
        raise SandboxError(f"the payment's {new_total} cannot cover what it applies (unapplied would be {unapplied})")
    if new_total == 0 and not inv and not cred:
        raise SandboxError("a payment must apply to an invoice or credit, or carry an amount")
    if txn_date is not None:
        _check_date(txn_date)
    customer_id = payment["CustomerRef"]["value"]
    wanted = _wanted(company, customer_id, inv, cred, current)
    _relink(company, payment, current, wanted, at)
    company.adjust_customer(customer_id, payment["TotalAmt"] - new_total)
    payment["TotalAmt"] = new_total
    payment["UnappliedAmt"] = unapplied
    if "ExchangeRate" in payment:
        payment["HomeTotalAmt"] = round_cents(new_total * payment["ExchangeRate"])
    if txn_date is not None:
        payment["TxnDate"] = txn_date
    if ref_num is not None:
        payment["PaymentRefNum"] = ref_num
    if method is not None:
        payment["PaymentMethodRef"] = company.method_ref(method, at)
    company.touch("Payment", payment, at)
    company.notify("Payment", payment["Id"], "Update", at)
    return payment


def _relink(company: Company, payment: Entity, current: _Links, wanted: _Links, at: datetime) -> None:
    """Unapply what changed or went, apply what changed or came; unchanged lines stay as they are."""
    kept = {key: line for line in payment["Line"] for key in payment_links({"Line": [line]})}
    for (entity, txn_id), amount in current.items():
        target = company.target(entity, txn_id)
        if wanted.get((entity, txn_id)) != amount and target is not None:
            company.unlink(payment["Id"], entity, target, amount, at)
            kept.pop((entity, txn_id), None)
    lines: list[Entity] = []
    for (entity, txn_id), amount in wanted.items():
        line = kept.get((entity, txn_id))
        if line is None:
            line = company.settle(entity, txn_id, amount, payment["Id"], at)
        lines.append(line)
    payment["Line"] = lines


# --- invoices ---------------------------------------------------------------------------------


def _check_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise SandboxError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def service_item(company: Company, at: datetime) -> str:
    """The generic "Services" item a line without an item bills (made on first use)."""
    for item in company.items.values():
        if item["Name"] == SERVICE_ITEM:
            return str(item["Id"])
    fields: Entity = {"Name": SERVICE_ITEM, "Description": SERVICE_ITEM, "UnitPrice": ZERO, "Type": "Service"}
    return str(company.add_item(fields, whole_second(at))["Id"])


def sale_lines(
    company: Company, at: datetime, amount: Money | None, lines: Sequence[InvoiceLine] | None
) -> list[SaleLine]:
    """Callers' lines (or one line of `amount`) as the store's (item id, qty, unit price)."""
    if lines is None:
        if amount is None:
            raise SandboxError("an invoice needs an amount or lines")
        lines = [(None, 1, amount)]
    out: list[SaleLine] = []
    for item_id, qty, price in lines:
        try:
            quantity = Decimal(str(qty))
        except InvalidOperation:
            raise SandboxError(f"{qty!r} is not a quantity") from None
        if not quantity.is_finite() or quantity <= 0:
            raise SandboxError(f"a line's quantity must be positive, not {qty}")
        unit = money(price)
        if unit < 0:
            raise SandboxError(f"a line's unit price cannot be negative, not {unit}")
        out.append((str(item_id) if item_id is not None else service_item(company, at), quantity, unit))
    if not out:
        raise SandboxError("an invoice needs at least one line")
    return out


def create_invoice(
    company: Company,
    at: datetime,
    *,
    customer_id: str | None = None,
    amount: Money | None = None,
    lines: Sequence[InvoiceLine] | None = None,
    doc_number: str | None = None,
    txn_date: str | None = None,
) -> Entity:
    """A new untaxed invoice; the customer defaults to the company's first one."""
    if customer_id is None:
        if not company.customers:
            raise SandboxError(f"company {company.realm_id} has no customers")
        customer_id = min(company.customers, key=int)
    if txn_date is not None:
        _check_date(txn_date)
    items = sale_lines(company, at, amount, lines)
    row = company.add_invoice(str(customer_id), items, at, doc_number=doc_number, txn_date=txn_date)
    company.notify("Invoice", row["Id"], "Create", at)
    return row


def _live_invoice(company: Company, invoice_id: str) -> Entity:
    row = company.invoices.get(str(invoice_id))
    if row is None:
        raise SandboxError(f"invoice {invoice_id} does not exist in company {company.realm_id}")
    if row["Id"] in company.voided:
        raise SandboxError(f"invoice {invoice_id} is voided and cannot be changed")
    return row


def update_invoice(
    company: Company,
    invoice_id: str,
    at: datetime,
    *,
    amount: Money | None = None,
    lines: Sequence[InvoiceLine] | None = None,
    doc_number: str | None = None,
    txn_date: str | None = None,
    customer_memo: str | None = None,
) -> Entity:
    """Edit an invoice; new lines (or one line of `amount`) replace its lines, untaxed and undiscounted.
    Balance = TotalAmt − what payments applied; a total below that is refused."""
    row = _live_invoice(company, invoice_id)
    if txn_date is not None:
        _check_date(txn_date)
    if amount is not None or lines is not None:
        items = sale_lines(company, at, amount, lines)
        line_rows, subtotal, _, _ = company.invoice_lines(items)
        applied = row["TotalAmt"] - row["Balance"]
        if subtotal < applied:
            raise SandboxError(f"invoice {invoice_id} has {applied} applied: its total cannot be {subtotal}")
        company.adjust_customer(row["CustomerRef"]["value"], subtotal - applied - row["Balance"])
        row["Line"] = line_rows
        row["TxnTaxDetail"] = {"TotalTax": ZERO}
        row["TotalAmt"] = subtotal
        if "ExchangeRate" in row:
            row["HomeTotalAmt"] = round_cents(subtotal * row["ExchangeRate"])
        company.set_open("Invoice", row, subtotal - applied)
    if doc_number is not None:
        row["DocNumber"] = doc_number
    if txn_date is not None:
        row["TxnDate"] = txn_date
    if customer_memo is not None:
        row["CustomerMemo"] = {"value": customer_memo}
    company.touch("Invoice", row, at)
    company.notify("Invoice", row["Id"], "Update", at)
    return row


def _unlink_payments(company: Company, invoice: Entity, at: datetime) -> None:
    """What QBO does to the payments of an invoice being voided or deleted: each loses its lines to the
    invoice, keeps TotalAmt, grows UnappliedAmt, and is updated (SyncToken, LastUpdatedTime, webhook)."""
    for link in list(invoice["LinkedTxn"]):
        payment = company.payments.get(link["TxnId"]) if link.get("TxnType") == "Payment" else None
        if payment is None:
            continue
        freed = ZERO
        kept: list[Entity] = []
        for line in payment["Line"]:
            if any(t["TxnType"] == "Invoice" and t["TxnId"] == invoice["Id"] for t in line["LinkedTxn"]):
                freed += line["Amount"]
            else:
                kept.append(line)
        company.unlink(payment["Id"], "Invoice", invoice, freed, at)
        payment["Line"] = kept
        payment["UnappliedAmt"] = payment["UnappliedAmt"] + freed
        company.touch("Payment", payment, at)
        company.notify("Payment", payment["Id"], "Update", at)


def void_invoice(company: Company, invoice_id: str, at: datetime) -> Entity:
    """Amounts zeroed, "Voided" in PrivateNote, still queryable; its payments are unlinked first."""
    row = _live_invoice(company, invoice_id)
    _unlink_payments(company, row, at)
    company.adjust_customer(row["CustomerRef"]["value"], -row["Balance"])
    for line in row["Line"]:
        if "Amount" in line:
            line["Amount"] = ZERO
        if "SalesItemLineDetail" in line:
            line["SalesItemLineDetail"]["Qty"] = ZERO
    row["Line"] = [ln for ln in row["Line"] if ln.get("DetailType") != "TaxLineDetail"]
    row["TxnTaxDetail"] = {"TotalTax": ZERO}
    row["TotalAmt"] = ZERO
    company.set_open("Invoice", row, ZERO)
    if "ExchangeRate" in row:
        row["HomeTotalAmt"] = ZERO
    note = row.get("PrivateNote")
    row["PrivateNote"] = f"Voided {note}" if note else "Voided"
    company.voided.add(row["Id"])
    company.touch("Invoice", row, at)
    company.notify("Invoice", row["Id"], "Void", at)
    return row


def delete_invoice(company: Company, invoice_id: str, at: datetime) -> Deleted:
    """Gone from queries and reads (610); its payments are unlinked first; CDC keeps a stub."""
    row = company.invoices.get(str(invoice_id))
    if row is None:
        raise SandboxError(f"invoice {invoice_id} does not exist in company {company.realm_id}")
    _unlink_payments(company, row, at)
    company.adjust_customer(row["CustomerRef"]["value"], -row["Balance"])
    company.tables["Invoice"].remove(row["Id"])
    stub = Deleted("Invoice", row["Id"], whole_second(at))
    company.deleted.append(stub)
    company.notify("Invoice", row["Id"], "Delete", at)
    return stub


# --- credits ----------------------------------------------------------------------------------


def _ar_credit(company: Company, kind: CreditKind, customer: Entity, amount: Decimal, at: datetime) -> Entity:
    """A journal entry or deposit that credits the customer's A/R by `amount`, in Intuit's shape."""
    ref = {"value": customer["Id"], "name": customer["DisplayName"]}
    head: Entity = {**company.head(at), "TxnDate": at.astimezone(company.tz).date().isoformat()}
    if kind == "JournalEntry":
        detail = {"AccountRef": dict(AR_ACCOUNT), "Entity": {"Type": "Customer", "EntityRef": ref}}
        lines = [
            {"Id": "0", "Description": "Customer credit", "Amount": amount, "DetailType": "JournalEntryLineDetail",
             "JournalEntryLineDetail": {"PostingType": "Credit", **detail}},
            {"Id": "1", "Description": "Customer credit", "Amount": amount, "DetailType": "JournalEntryLineDetail",
             "JournalEntryLineDetail": {"PostingType": "Debit", "AccountRef": dict(DISCOUNT_ACCOUNT)}},
        ]  # fmt: skip
        row: Entity = {**head, "Adjustment": False, "Line": lines, "TotalAmt": amount}
    else:
        detail = {"Entity": {**ref, "type": "CUSTOMER"}, "AccountRef": dict(AR_ACCOUNT)}
        line = {"Id": "1", "Amount": amount, "DetailType": "DepositLineDetail", "DepositLineDetail": detail}
        row = {**head, "DepositToAccountRef": dict(CHECKING), "Line": [line], "TotalAmt": amount}
    company.home_amounts(row, customer)
    return row


def create_credit(company: Company, kind: CreditKind, at: datetime, *, customer_id: str, amount: Money) -> Entity:
    """An open credit for the customer: a CreditMemo (RemainingCredit), or a JournalEntry or Deposit
    with an A/R credit line naming the customer, which later payments may apply."""
    value = money(amount)
    if value <= 0:
        raise SandboxError(f"a credit must be positive, not {value}")
    if kind not in CREDIT_TYPES:
        raise SandboxError(f"a credit is one of {', '.join(CREDIT_TYPES)}, not {kind!r}")
    customer = company.customers.get(str(customer_id))
    if customer is None:
        raise SandboxError(f"customer {customer_id} does not exist in company {company.realm_id}")
    if kind == "CreditMemo":
        lines: list[SaleLine] = [(service_item(company, at), Decimal(1), value)]
        row = company.add_credit_memo(customer["Id"], lines, at, "Customer credit")
    else:
        row = _ar_credit(company, kind, customer, value, at)
        company.tables[kind].add(row)
        company.credit_open[row["Id"]] = value
        company.adjust_customer(customer["Id"], -value)
        company.track_credit(customer["Id"], row["Id"])
    company.notify(kind, row["Id"], "Create", at)
    return row


def auto_apply_amount(company: Company, invoice_id: str, credit_id: str, amount: Money | None) -> Decimal:
    """What QBO's auto-apply takes: `amount`, or the smaller of the invoice's balance and the credit left."""
    invoice = _live_invoice(company, invoice_id)
    entity = company.credit_entity(str(credit_id))
    left = company.open_amount(entity, company.tables[entity].rows[str(credit_id)])
    value = min(invoice["Balance"], left) if amount is None else money(amount)
    if value <= 0:
        raise SandboxError(f"nothing to apply: invoice {invoice_id} owes {invoice['Balance']}, credit has {left}")
    return value
