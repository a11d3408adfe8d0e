"""The QBO sandbox's books check: every invariant a company's entities must keep, as sentences.

The store (`qbo_store.Company`) keeps the books consistent on every write; this re-derives each
balance from the payments alone, independently of how the store did it, so a test (or the control
API) can tell after any sequence of writes, voids and deletes that the numbers still add up."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from qbo_operator.harness.sandbox.qbo_query import to_micros
from qbo_operator.harness.sandbox.qbo_store import Company, credit_customer
from qbo_operator.harness.sandbox.qbo_values import CENT, ZERO, parse_time


@dataclass
class _Ledger:
    """What the payments say: the amount applied to each (TxnType, TxnId), the payments linked to
    each invoice, and each customer's expected Balance."""

    applied: dict[tuple[str, str], Decimal] = field(default_factory=dict)
    paying: dict[str, set[str]] = field(default_factory=dict)
    owed: dict[str, Decimal] = field(default_factory=dict)


def check_books(company: Company) -> list[str]:
    """Every broken invariant, as a sentence; empty when the company's books are consistent."""
    ledger = _Ledger()
    problems = _payment_problems(company, ledger)
    problems += _invoice_problems(company, ledger)
    problems += _credit_memo_problems(company, ledger)
    problems += _customer_problems(company, ledger)
    problems += _order_problems(company)
    problems += _precision_problems(company)
    return problems


def _payment_problems(company: Company, ledger: _Ledger) -> list[str]:
    """TotalAmt = Σ invoice lines − Σ credit lines + UnappliedAmt, nothing negative; fills `ledger`."""
    problems: list[str] = []
    applied, paying, owed = ledger.applied, ledger.paying, ledger.owed
    for pay in company.payments.values():
        inv_sum = credit_sum = ZERO
        for line in pay["Line"]:
            for link in line["LinkedTxn"]:
                key = (link["TxnType"], link["TxnId"])
                applied[key] = applied.get(key, ZERO) + line["Amount"]
                if link["TxnType"] == "Invoice":
                    inv_sum += line["Amount"]
                    paying.setdefault(link["TxnId"], set()).add(pay["Id"])
                else:
                    credit_sum += line["Amount"]
        if pay["TotalAmt"] != inv_sum - credit_sum + pay["UnappliedAmt"]:
            problems.append(
                f"payment {pay['Id']}: TotalAmt {pay['TotalAmt']} != lines {inv_sum} - {credit_sum} "
                f"+ unapplied {pay['UnappliedAmt']}"
            )
        if pay["TotalAmt"] < 0 or pay["UnappliedAmt"] < 0:
            problems.append(f"payment {pay['Id']}: negative amount")
        cust = pay["CustomerRef"]["value"]
        owed[cust] = owed.get(cust, ZERO) - pay["UnappliedAmt"]
    return problems


def _invoice_problems(company: Company, ledger: _Ledger) -> list[str]:
    """TotalAmt adds up from the lines, Balance is TotalAmt minus what the payments applied, and
    LinkedTxn names exactly the paying payments."""
    problems: list[str] = []
    for inv in company.invoices.values():
        sales = [ln for ln in inv["Line"] if ln["DetailType"] == "SalesItemLineDetail"]
        subtotal = sum((ln["Amount"] for ln in sales), ZERO)
        discount = sum((ln["Amount"] for ln in inv["Line"] if ln["DetailType"] == "DiscountLineDetail"), ZERO)
        if inv["TotalAmt"] != subtotal - discount + inv["TxnTaxDetail"]["TotalTax"]:
            problems.append(f"invoice {inv['Id']}: TotalAmt does not add up")
        expected = inv["TotalAmt"] - ledger.applied.get(("Invoice", inv["Id"]), ZERO)
        if inv["Balance"] != expected or not ZERO <= inv["Balance"] <= inv["TotalAmt"]:
            problems.append(f"invoice {inv['Id']}: Balance {inv['Balance']} != {expected}")
        linked = {t["TxnId"] for t in inv["LinkedTxn"]}
        paying = ledger.paying.get(inv["Id"], set())
        if linked != paying:
            problems.append(f"invoice {inv['Id']}: LinkedTxn {sorted(linked)} != paying {sorted(paying)}")
        cust = inv["CustomerRef"]["value"]
        ledger.owed[cust] = ledger.owed.get(cust, ZERO) + inv["Balance"]
    return problems


def _credit_memo_problems(company: Company, ledger: _Ledger) -> list[str]:
    problems: list[str] = []
    for memo in company.credit_memos.values():
        expected = memo["TotalAmt"] - ledger.applied.get(("CreditMemo", memo["Id"]), ZERO)
        if memo["RemainingCredit"] != expected or memo["RemainingCredit"] < 0:
            problems.append(f"credit memo {memo['Id']}: RemainingCredit {memo['RemainingCredit']} != {expected}")
        cust = memo["CustomerRef"]["value"]
        ledger.owed[cust] = ledger.owed.get(cust, ZERO) - memo["RemainingCredit"]
    for entity in ("JournalEntry", "Deposit"):
        for row in company.tables[entity].rows.values():
            expected = row["TotalAmt"] - ledger.applied.get((entity, row["Id"]), ZERO)
            left = company.credit_open.get(row["Id"], ZERO)
            if left != expected or left < 0:
                problems.append(f"{entity} {row['Id']}: credit left {left} != {expected}")
            cust = credit_customer(row)
            ledger.owed[cust] = ledger.owed.get(cust, ZERO) - left
    return problems


def _customer_problems(company: Company, ledger: _Ledger) -> list[str]:
    """A customer's Balance: open invoices, less credit left and unapplied payments."""
    return [
        f"customer {cust['Id']}: Balance {cust['Balance']} != {ledger.owed.get(cust['Id'], ZERO)}"
        for cust in company.customers.values()
        if cust["Balance"] != ledger.owed.get(cust["Id"], ZERO)
    ]


def _order_problems(company: Company) -> list[str]:
    """Payments in strict (CreateTime, Id) order, none updated before it was created."""
    problems: list[str] = []
    previous: tuple[int, int] | None = None
    for pay in company.tables["Payment"].ordered():
        key = (to_micros(parse_time(pay["MetaData"]["CreateTime"])), int(pay["Id"]))
        if previous is not None and key <= previous:
            problems.append(f"payment {pay['Id']}: not in CreateTime order")
        previous = key
        if parse_time(pay["MetaData"]["LastUpdatedTime"]) < parse_time(pay["MetaData"]["CreateTime"]):
            problems.append(f"payment {pay['Id']}: LastUpdatedTime before CreateTime")
    return problems


def _precision_problems(company: Company) -> list[str]:
    return [
        f"{table.entity} {row['Id']}: amount {value} has more than two places"
        for table in company.tables.values()
        for row in table.rows.values()
        for value in _decimals(row)
        if value != value.quantize(CENT)
    ]


def _decimals(value: Any) -> Iterable[Decimal]:
    if isinstance(value, Decimal):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _decimals(item)
    elif isinstance(value, list):
        for item in value:
            yield from _decimals(item)
