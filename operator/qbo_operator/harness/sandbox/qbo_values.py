"""The QBO sandbox's vocabulary: money, MetaData times, JSON, the fixed references of every company,
and the one error its Python and control APIs raise. Pure values and functions, no state, so the
store, the bookkeeping changes and the API share them without importing each other."""

from __future__ import annotations

import json
import re
from datetime import datetime, tzinfo
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from qbo_operator.harness.sandbox.qbo_query import parse_datetime

Entity = dict[str, Any]
Money = Decimal | int | str | float
# An item line: (item id, qty) at the item's price, or (item id, qty, unit price).
SaleLine = tuple[str, Decimal] | tuple[str, Decimal, Decimal]

CENT = Decimal("0.01")
ZERO = Decimal("0.00")
PACIFIC = ZoneInfo("America/Los_Angeles")
USD = {"value": "USD", "name": "United States Dollar"}
CAD = {"value": "CAD", "name": "Canadian Dollar"}
RATES = {"CAD": Decimal("0.73")}  # home (USD) per unit of the foreign currency
UNDEPOSITED = {"value": "4", "name": "Undeposited Funds"}
CHECKING = {"value": "35", "name": "Checking"}
AR_ACCOUNT = {"value": "84", "name": "Accounts Receivable (A/R)"}
INCOME_ACCOUNT = {"value": "79", "name": "Sales of Product Income"}
COGS_ACCOUNT = {"value": "80", "name": "Cost of Goods Sold"}
DISCOUNT_ACCOUNT = {"value": "86", "name": "Discounts given"}
PAYMENT_METHODS: dict[str, str] = {
    "Cash": "1",
    "Check": "2",
    "Visa": "3",
    "MasterCard": "4",
    "ACH/EFT": "5",
    "Debit": "6",
    "Wire Transfer": "7",
}
TERMS = [
    ({"value": "1", "name": "Due on receipt"}, 0),
    ({"value": "2", "name": "Net 15"}, 15),
    ({"value": "3", "name": "Net 30"}, 30),
]

# Entity name -> (table attribute, read path segment)
ENTITIES: dict[str, str] = {
    "Payment": "payment",
    "Invoice": "invoice",
    "Customer": "customer",
    "Item": "item",
    "SalesReceipt": "salesreceipt",
    "CreditMemo": "creditmemo",
    "JournalEntry": "journalentry",
    "Deposit": "deposit",
    "PaymentMethod": "paymentmethod",
    "CompanyInfo": "companyinfo",
}
# The transactions a payment line may take credit from (docs/qbo.md §3.1).
CREDIT_TYPES = ("CreditMemo", "JournalEntry", "Deposit")
# A method some old payments still name, made inactive since (docs/qbo.md correction 7).
INACTIVE_METHODS: dict[str, str] = {"Old Card": "8"}


class SandboxError(ValueError):
    """A request to the sandbox's Python or control API that cannot be honoured; the message says why."""


# --- money, time, JSON ------------------------------------------------------------------------


def money(value: Money) -> Decimal:
    """Exact two-place Decimal; refuses values with more than two decimal places."""
    try:
        d = Decimal(str(value)) if not isinstance(value, Decimal) else value
    except InvalidOperation:
        raise SandboxError(f"{value!r} is not an amount") from None
    if not d.is_finite():
        raise SandboxError(f"{value!r} is not an amount")
    q = d.quantize(CENT, rounding=ROUND_HALF_UP)
    if q != d:
        raise SandboxError(f"{value!r} has more than two decimal places")
    return q


def round_cents(value: Decimal) -> Decimal:
    """To the cent, half up: how QBO rounds line amounts, discounts and tax."""
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def intuit_time(dt: datetime, tz: tzinfo = PACIFIC) -> str:
    """`2026-11-24T09:03:11-08:00`: whole seconds, as Intuit writes MetaData (a fraction is cut off)."""
    return dt.astimezone(tz).isoformat(timespec="seconds")


def envelope_time(dt: datetime, tz: tzinfo = PACIFIC) -> str:
    """The `time` field of API envelopes: always with milliseconds."""
    return dt.astimezone(tz).isoformat(timespec="milliseconds")


def parse_time(text: str, tz: tzinfo = PACIFIC) -> datetime:
    """An ISO 8601 date-time as Intuit writes it (a bare one is in `tz`); SandboxError otherwise."""
    dt = parse_datetime(text, tz)
    if dt is None:
        raise SandboxError(f"{text!r} is not an ISO 8601 date-time")
    return dt


def whole_second(dt: datetime) -> datetime:
    """Cut to the second: QBO's MetaData times carry no finer precision, so rows tie on the second."""
    return dt.replace(microsecond=0)


_DECIMAL_MARK = re.compile(r'"\\u0000D(-?[0-9]+(?:\.[0-9]+)?)"')


def _json_default(value: object) -> object:
    if isinstance(value, Decimal):
        return f"\x00D{value:f}"
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(obj: Any) -> bytes:
    """JSON with Decimals written as exact numbers (`275.00`, not `"275.00"` or `275.0`)."""
    text = json.dumps(obj, default=_json_default, ensure_ascii=False, separators=(",", ":"))
    return _DECIMAL_MARK.sub(r"\1", text).encode()
