"""The QBO sandbox's companies: entities in Intuit's JSON shape (QBO.md §3) and a seeded generator.

A `Company` holds one table per entity, each kept in (CreateTime, Id) order so queries page by
bisect. Every write goes through a Company method that keeps the books consistent: an invoice's
`Balance` is its `TotalAmt` minus the live payments applied to it, a payment's
`TotalAmt = Σ invoice lines − Σ credit lines + UnappliedAmt`, voids zero a payment and give the
invoices their balance back, deletes leave a CDC stub. Money is `Decimal` with two places and is
written to JSON as a number with two places (`dumps`). No I/O here.

The generator plays a cannabis wholesaler: stores as customers, flower, pre-rolls, carts and
edibles as items, invoices with discounts, subtotals, tax and notes, and a realistic mix of
payments (mostly one invoice; split, partial, over-payments with an unapplied remainder,
credit-memo applications, credit-only, fully unapplied, voided and deleted ones), plus sales
receipts that a sync must ignore. Same seed and clock, same data."""

from __future__ import annotations

import bisect
import heapq
import itertools
import json
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from qbo_operator.harness.sandbox.qbo_query import parse_datetime, to_micros

Entity = dict[str, Any]
Money = Decimal | int | str | float

CENT = Decimal("0.01")
ZERO = Decimal("0.00")
PACIFIC = ZoneInfo("America/Los_Angeles")
USD = {"value": "USD", "name": "United States Dollar"}
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
    "CompanyInfo": "companyinfo",
}


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


def _round(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def intuit_time(dt: datetime, tz: tzinfo = PACIFIC) -> str:
    """`2026-11-24T09:03:11-08:00` (milliseconds only when the instant has them)."""
    local = dt.astimezone(tz)
    return local.isoformat(timespec="milliseconds" if local.microsecond else "seconds")


def envelope_time(dt: datetime, tz: tzinfo = PACIFIC) -> str:
    """The `time` field of API envelopes: always with milliseconds."""
    return dt.astimezone(tz).isoformat(timespec="milliseconds")


def parse_time(text: str, tz: tzinfo = PACIFIC) -> datetime:
    dt = parse_datetime(text, tz)
    if dt is None:
        raise SandboxError(f"{text!r} is not an ISO 8601 date-time")
    return dt


def _ms(dt: datetime) -> datetime:
    return dt.replace(microsecond=dt.microsecond // 1000 * 1000)


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


# --- tables -----------------------------------------------------------------------------------


class Table:
    """One entity's rows by Id, plus a (CreateTime µs, int Id) index for ordered paging."""

    def __init__(self, entity: str, tz: tzinfo) -> None:
        self.entity = entity
        self.tz = tz
        self.rows: dict[str, Entity] = {}
        self._keys: list[tuple[int, int]] = []
        self._ids: list[str] = []
        self._created: dict[str, int] = {}
        self._updated: dict[str, int] = {}

    def created_of(self, row: Mapping[str, Any]) -> int:
        """CreateTime in µs (cached: CreateTime never changes)."""
        cached = self._created.get(row["Id"])
        if cached is None:
            cached = to_micros(parse_time(row["MetaData"]["CreateTime"], self.tz))
        return cached

    def updated_of(self, row: Mapping[str, Any]) -> int:
        """LastUpdatedTime in µs (cached; writes go through `touched`)."""
        cached = self._updated.get(row["Id"])
        if cached is None:
            cached = to_micros(parse_time(row["MetaData"]["LastUpdatedTime"], self.tz))
        return cached

    def touched(self, row_id: str, updated_us: int) -> None:
        self._updated[row_id] = updated_us

    def _key(self, row: Mapping[str, Any]) -> tuple[int, int]:
        return self.created_of(row), int(row["Id"])

    def add(self, row: Entity) -> None:
        if row["Id"] in self.rows:
            raise SandboxError(f"{self.entity} {row['Id']} already exists")
        created = to_micros(parse_time(row["MetaData"]["CreateTime"], self.tz))
        key = (created, int(row["Id"]))
        i = bisect.bisect(self._keys, key)
        self._keys.insert(i, key)
        self._ids.insert(i, row["Id"])
        self.rows[row["Id"]] = row
        self._created[row["Id"]] = created
        meta = row["MetaData"]
        same = meta["LastUpdatedTime"] == meta["CreateTime"]
        self._updated[row["Id"]] = created if same else to_micros(parse_time(meta["LastUpdatedTime"], self.tz))

    def remove(self, row_id: str) -> Entity:
        row = self.rows[row_id]
        key = self._key(row)
        del self.rows[row_id]
        self._created.pop(row_id, None)
        self._updated.pop(row_id, None)
        i = bisect.bisect_left(self._keys, key)
        if i < len(self._keys) and self._keys[i] == key:
            del self._keys[i]
            del self._ids[i]
        return row

    def __len__(self) -> int:
        return len(self.rows)

    def ids_between(self, lo_us: int | None, hi_us: int | None) -> Sequence[str]:
        lo = 0 if lo_us is None else bisect.bisect_left(self._keys, (lo_us, -1))
        hi = len(self._keys) if hi_us is None else bisect.bisect_left(self._keys, (hi_us, -1))
        if lo == 0 and hi == len(self._ids):
            return self._ids
        return self._ids[lo:hi]

    def in_order(self, ids: Iterable[str]) -> list[str]:
        found = [(self._key(self.rows[i]), i) for i in ids if i in self.rows]
        return [i for _, i in sorted(found)]

    def ordered(self) -> list[Entity]:
        return [self.rows[i] for i in self._ids if i in self.rows]

    def last_create_us(self) -> int | None:
        return self._keys[-1][0] if self._keys else None


ChangeListener = Callable[[str, str, str, datetime], None]  # entity, id, operation, time


@dataclass
class Deleted:
    entity: str
    id: str
    time: datetime


@dataclass
class Company:
    """One QBO company (realm): its tables and every write that keeps them consistent."""

    realm_id: str
    name: str
    tz: tzinfo = PACIFIC
    created_at: datetime | None = None
    deleted: list[Deleted] = field(default_factory=list)
    listeners: list[ChangeListener] = field(default_factory=list)
    not_before: datetime | None = None  # new payments are created after this (the latest consent)
    tables: dict[str, Table] = field(init=False)
    _next_id: int = 1
    _doc_numbers: dict[str, int] = field(
        default_factory=lambda: {"Invoice": 1001, "SalesReceipt": 5001, "CreditMemo": 9001}
    )
    _open_invoices: dict[str, list[str]] = field(default_factory=dict)  # customer -> ids with Balance > 0
    _credit_memos: dict[str, list[str]] = field(default_factory=dict)  # customer -> ids with credit left

    def __post_init__(self) -> None:
        self.tables = {name: Table(name, self.tz) for name in ENTITIES}

    # The dicts the brief promises: sb.companies[realm].payments etc.
    @property
    def payments(self) -> dict[str, Entity]:
        return self.tables["Payment"].rows

    @property
    def invoices(self) -> dict[str, Entity]:
        return self.tables["Invoice"].rows

    @property
    def customers(self) -> dict[str, Entity]:
        return self.tables["Customer"].rows

    @property
    def items(self) -> dict[str, Entity]:
        return self.tables["Item"].rows

    @property
    def sales_receipts(self) -> dict[str, Entity]:
        return self.tables["SalesReceipt"].rows

    @property
    def credit_memos(self) -> dict[str, Entity]:
        return self.tables["CreditMemo"].rows

    def counts(self) -> dict[str, int]:
        out = {name: len(table) for name, table in self.tables.items()}
        out["Deleted"] = len(self.deleted)
        return out

    # --- helpers ------------------------------------------------------------------------------

    def new_id(self) -> str:
        value = self._next_id
        self._next_id += 1
        return str(value)

    def _doc_number(self, entity: str) -> str:
        value = self._doc_numbers[entity]
        self._doc_numbers[entity] = value + 1
        return str(value)

    def _meta(self, at: datetime) -> dict[str, str]:
        stamp = intuit_time(_ms(at), self.tz)
        return {"CreateTime": stamp, "LastUpdatedTime": stamp}

    def _touch(self, entity: str, row: Entity, at: datetime) -> None:
        """A write: SyncToken + 1, LastUpdatedTime moves forward (never back)."""
        row["SyncToken"] = str(int(row["SyncToken"]) + 1)
        table = self.tables[entity]
        at = _ms(at)
        at_us = to_micros(at)
        if at_us > table.updated_of(row):
            row["MetaData"]["LastUpdatedTime"] = intuit_time(at, self.tz)
            table.touched(row["Id"], at_us)

    def _notify(self, entity: str, row_id: str, operation: str, at: datetime) -> None:
        for listener in list(self.listeners):
            listener(entity, row_id, operation, at)

    def _txn_date(self, at: datetime) -> str:
        return at.astimezone(self.tz).date().isoformat()

    def _ref(self, entity: str, row_id: str) -> dict[str, str]:
        row = self.tables[entity].rows.get(row_id)
        if row is None:
            raise SandboxError(f"{entity} {row_id} does not exist in company {self.realm_id}")
        name = row.get("DisplayName") or row.get("Name") or ""
        return {"value": row_id, "name": name}

    def _customer(self, customer_id: str) -> Entity:
        row = self.customers.get(customer_id)
        if row is None:
            raise SandboxError(f"customer {customer_id} does not exist in company {self.realm_id}")
        return row

    def _adjust_customer(self, customer_id: str, delta: Decimal) -> None:
        row = self.customers.get(customer_id)
        if row is not None:
            row["Balance"] = row["Balance"] + delta
            row["BalanceWithJobs"] = row["Balance"]

    def open_invoices(self, customer_id: str) -> list[str]:
        """Ids of the customer's invoices with a balance, oldest first (prunes settled ones)."""
        live = [i for i in self._open_invoices.get(customer_id, []) if self.invoices.get(i, {}).get("Balance")]
        self._open_invoices[customer_id] = live
        return list(live)

    def open_credits(self, customer_id: str) -> list[str]:
        """Ids of the customer's credit memos with credit left, oldest first (prunes used ones)."""
        memos = self.credit_memos
        live = [c for c in self._credit_memos.get(customer_id, []) if memos.get(c, {}).get("RemainingCredit")]
        self._credit_memos[customer_id] = live
        return list(live)

    # --- lists --------------------------------------------------------------------------------

    def add_company_info(self, at: datetime) -> Entity:
        """The CompanyInfo entity (Id "1"), which clients read to show the company's name."""
        email = re.sub(r"[^a-z]", "", self.name.lower())[:24] or "company"
        row: Entity = {
            "Id": "1",
            "SyncToken": "0",
            "domain": "QBO",
            "sparse": False,
            "MetaData": self._meta(at),
            "CompanyName": self.name,
            "LegalName": f"{self.name} LLC",
            "Country": "US",
            "CompanyAddr": {
                "Line1": "2100 SE Water Ave",
                "City": "Portland",
                "CountrySubDivisionCode": "OR",
                "PostalCode": "97214",
                "Country": "US",
            },
            "Email": {"Address": f"accounting@{email}.com"},
            "FiscalYearStartMonth": "January",
            "SupportedLanguages": "en",
            "DefaultTimeZone": str(self.tz),
            "NameValue": [{"Name": "IndustryType", "Value": "Cannabis Wholesale"}],
        }
        self.tables["CompanyInfo"].add(row)
        return row

    def add_customer(self, fields: Mapping[str, Any], at: datetime) -> Entity:
        name = fields["DisplayName"]
        if any(c["DisplayName"] == name for c in self.customers.values()):
            raise SandboxError(f"a customer named {name!r} already exists")
        row: Entity = {
            "Id": self.new_id(),
            "SyncToken": "0",
            "domain": "QBO",
            "sparse": False,
            "MetaData": self._meta(at),
            "DisplayName": name,
            "CompanyName": name,
            "FullyQualifiedName": name,
            "PrintOnCheckName": name,
            "Active": True,
            "Job": False,
            "BillWithParent": False,
            "Taxable": False,
            "Balance": ZERO,
            "BalanceWithJobs": ZERO,
            "CurrencyRef": dict(USD),
            "PreferredDeliveryMethod": "Email",
            **{k: v for k, v in fields.items() if k != "DisplayName"},
        }
        self.tables["Customer"].add(row)
        return row

    def add_item(self, fields: Mapping[str, Any], at: datetime) -> Entity:
        row: Entity = {
            "Id": self.new_id(),
            "SyncToken": "0",
            "domain": "QBO",
            "sparse": False,
            "MetaData": self._meta(at),
            "Active": True,
            "Taxable": False,
            "IncomeAccountRef": dict(INCOME_ACCOUNT),
            **fields,
            "FullyQualifiedName": fields["Name"],
        }
        self.tables["Item"].add(row)
        return row

    # --- transactions -------------------------------------------------------------------------

    def _sales_lines(self, lines: Sequence[tuple[str, Decimal]], taxed: bool) -> tuple[list[Entity], Decimal, Decimal]:
        out: list[Entity] = []
        subtotal = taxable = ZERO
        for n, (item_id, qty) in enumerate(lines, start=1):
            item = self.items.get(item_id)
            if item is None:
                raise SandboxError(f"item {item_id} does not exist in company {self.realm_id}")
            price: Decimal = item["UnitPrice"]
            amount = _round(price * qty)
            line_taxed = taxed and item.get("Type") != "Service"
            out.append(
                {
                    "Id": str(n),
                    "LineNum": n,
                    "Description": item.get("Description", item["Name"]),
                    "Amount": amount,
                    "DetailType": "SalesItemLineDetail",
                    "SalesItemLineDetail": {
                        "ItemRef": {"value": item_id, "name": item["Name"]},
                        "Qty": qty,
                        "UnitPrice": price,
                        "TaxCodeRef": {"value": "TAX" if line_taxed else "NON"},
                    },
                }
            )
            subtotal += amount
            if line_taxed:
                taxable += amount
        return out, subtotal, taxable

    def add_invoice(
        self,
        customer_id: str,
        lines: Sequence[tuple[str, Decimal]],
        at: datetime,
        *,
        discount_percent: Decimal | None = None,
        discount_amount: Decimal | None = None,
        tax_percent: Decimal | None = None,
        note_line: str | None = None,
        terms: int = 2,
        private_note: str | None = None,
        manifest: str | None = None,
    ) -> Entity:
        """An invoice with SalesItemLineDetail lines, optional DescriptionOnly note, SubTotal and Discount."""
        customer = self._customer(customer_id)
        if not lines:
            raise SandboxError("an invoice needs at least one line")
        line_rows, subtotal, taxable = self._sales_lines(lines, taxed=tax_percent is not None)
        n = len(line_rows)
        if note_line:
            n += 1
            line_rows.append(
                {
                    "Id": str(n),
                    "LineNum": n,
                    "Description": note_line,
                    "DetailType": "DescriptionOnly",
                    "DescriptionLineDetail": {},
                }
            )
        line_rows.append({"Amount": subtotal, "DetailType": "SubTotalLineDetail", "SubTotalLineDetail": {}})
        discount = ZERO
        if discount_percent is not None:
            discount = _round(subtotal * discount_percent / 100)
            detail: Entity = {"PercentBased": True, "DiscountPercent": discount_percent}
        elif discount_amount is not None:
            discount = min(money(discount_amount), subtotal)  # a discount never makes the total negative
            detail = {"PercentBased": False}
        if discount_percent is not None or discount_amount is not None:
            n += 1
            detail["DiscountAccountRef"] = dict(DISCOUNT_ACCOUNT)
            line_rows.append(
                {"Id": str(n), "Amount": discount, "DetailType": "DiscountLineDetail", "DiscountLineDetail": detail}
            )
        tax = ZERO
        tax_detail: Entity = {"TotalTax": ZERO}
        if tax_percent is not None:
            tax = _round(taxable * tax_percent / 100)
            tax_detail = {
                "TxnTaxCodeRef": {"value": "3"},
                "TotalTax": tax,
                "TaxLine": [
                    {
                        "Amount": tax,
                        "DetailType": "TaxLineDetail",
                        "TaxLineDetail": {
                            "TaxRateRef": {"value": "5"},
                            "PercentBased": True,
                            "TaxPercent": tax_percent,
                            "NetAmountTaxable": taxable,
                        },
                    }
                ],
            }
        total = subtotal - discount + tax
        term, days = TERMS[terms]
        txn_date = at.astimezone(self.tz).date()
        row: Entity = {
            "Id": self.new_id(),
            "SyncToken": "0",
            "domain": "QBO",
            "sparse": False,
            "MetaData": self._meta(at),
            "CustomField": [
                {
                    "DefinitionId": "1",
                    "Name": "METRC Manifest",
                    "Type": "StringType",
                    **({"StringValue": manifest} if manifest else {}),
                }
            ],
            "DocNumber": self._doc_number("Invoice"),
            "TxnDate": txn_date.isoformat(),
            "DueDate": (txn_date + timedelta(days=days)).isoformat(),
            "CurrencyRef": dict(USD),
            "LinkedTxn": [],
            "Line": line_rows,
            "TxnTaxDetail": tax_detail,
            "CustomerRef": {"value": customer_id, "name": customer["DisplayName"]},
            "SalesTermRef": dict(term),
            "ApplyTaxAfterDiscount": False,
            "PrintStatus": "NotSet",
            "EmailStatus": "EmailSent",
            "TotalAmt": total,
            "Balance": total,
            "Deposit": ZERO,
            "AllowOnlinePayment": False,
            "AllowOnlineCreditCardPayment": False,
            "AllowOnlineACHPayment": False,
        }
        if "PrimaryEmailAddr" in customer:
            row["BillEmail"] = dict(customer["PrimaryEmailAddr"])
        if "BillAddr" in customer:
            row["BillAddr"] = dict(customer["BillAddr"])
            row["ShipAddr"] = dict(customer["BillAddr"])
        if private_note:
            row["PrivateNote"] = private_note
        self.tables["Invoice"].add(row)
        self._adjust_customer(customer_id, total)
        if total > 0:
            pending = self._open_invoices.setdefault(customer_id, [])
            pending.append(row["Id"])
        return row

    def add_credit_memo(
        self, customer_id: str, lines: Sequence[tuple[str, Decimal]], at: datetime, reason: str
    ) -> Entity:
        customer = self._customer(customer_id)
        line_rows, subtotal, _ = self._sales_lines(lines, taxed=False)
        line_rows.append({"Amount": subtotal, "DetailType": "SubTotalLineDetail", "SubTotalLineDetail": {}})
        row: Entity = {
            "Id": self.new_id(),
            "SyncToken": "0",
            "domain": "QBO",
            "sparse": False,
            "MetaData": self._meta(at),
            "DocNumber": self._doc_number("CreditMemo"),
            "TxnDate": self._txn_date(at),
            "CurrencyRef": dict(USD),
            "Line": line_rows,
            "TxnTaxDetail": {"TotalTax": ZERO},
            "CustomerRef": {"value": customer_id, "name": customer["DisplayName"]},
            "PrivateNote": reason,
            "ApplyTaxAfterDiscount": False,
            "PrintStatus": "NotSet",
            "EmailStatus": "NotSet",
            "TotalAmt": subtotal,
            "RemainingCredit": subtotal,
            "Balance": subtotal,
            "LinkedTxn": [],
        }
        self.tables["CreditMemo"].add(row)
        self._adjust_customer(customer_id, -subtotal)
        self._credit_memos.setdefault(customer_id, []).append(row["Id"])
        return row

    def add_sales_receipt(
        self, customer_id: str, lines: Sequence[tuple[str, Decimal]], at: datetime, method: str, ref_num: str | None
    ) -> Entity:
        customer = self._customer(customer_id)
        line_rows, subtotal, _ = self._sales_lines(lines, taxed=False)
        line_rows.append({"Amount": subtotal, "DetailType": "SubTotalLineDetail", "SubTotalLineDetail": {}})
        row: Entity = {
            "Id": self.new_id(),
            "SyncToken": "0",
            "domain": "QBO",
            "sparse": False,
            "MetaData": self._meta(at),
            "DocNumber": self._doc_number("SalesReceipt"),
            "TxnDate": self._txn_date(at),
            "CurrencyRef": dict(USD),
            "Line": line_rows,
            "TxnTaxDetail": {"TotalTax": ZERO},
            "CustomerRef": {"value": customer_id, "name": customer["DisplayName"]},
            "PaymentMethodRef": {"value": PAYMENT_METHODS[method], "name": method},
            "DepositToAccountRef": dict(CHECKING if method in ("ACH/EFT", "Wire Transfer") else UNDEPOSITED),
            "ApplyTaxAfterDiscount": False,
            "PrintStatus": "NotSet",
            "EmailStatus": "NotSet",
            "TotalAmt": subtotal,
            "Balance": ZERO,
        }
        if ref_num:
            row["PaymentRefNum"] = ref_num
        self.tables["SalesReceipt"].add(row)
        return row

    def add_payment(
        self,
        at: datetime,
        *,
        invoices: Sequence[tuple[str, Money]] = (),
        credits: Sequence[tuple[str, Money]] = (),
        unapplied: Money = ZERO,
        customer_id: str | None = None,
        method: str | None = "Check",
        ref_num: str | None = None,
        private_note: str | None = None,
        txn_date: str | None = None,
    ) -> Entity:
        """Receive a payment: one Line per invoice or credit memo it settles. Validates everything first."""
        inv_amounts = [(str(i), money(a)) for i, a in invoices]
        credit_amounts = [(str(c), money(a)) for c, a in credits]
        unapplied_amt = money(unapplied)
        customers: set[str] = {customer_id} if customer_id else set()
        seen: set[str] = set()
        for inv_id, amount in inv_amounts:
            inv = self.invoices.get(inv_id)
            if inv is None:
                raise SandboxError(f"invoice {inv_id} does not exist in company {self.realm_id}")
            if inv_id in seen:
                raise SandboxError(f"invoice {inv_id} is listed twice")
            seen.add(inv_id)
            if amount <= 0:
                raise SandboxError(f"the amount applied to invoice {inv_id} must be positive, not {amount}")
            if amount > inv["Balance"]:
                raise SandboxError(f"{amount} is more than invoice {inv_id}'s open balance {inv['Balance']}")
            customers.add(inv["CustomerRef"]["value"])
        for cm_id, amount in credit_amounts:
            memo = self.credit_memos.get(cm_id)
            if memo is None:
                raise SandboxError(f"credit memo {cm_id} does not exist in company {self.realm_id}")
            if amount <= 0 or amount > memo["RemainingCredit"]:
                raise SandboxError(f"credit memo {cm_id} has {memo['RemainingCredit']} left, cannot apply {amount}")
            customers.add(memo["CustomerRef"]["value"])
        if len(customers) != 1:
            raise SandboxError(
                "a payment needs exactly one customer (give customer_id, or invoices of one customer)"
                if not customers
                else f"a payment cannot mix customers {sorted(customers)}"
            )
        (cust_id,) = customers
        customer = self._customer(cust_id)
        if unapplied_amt < 0:
            raise SandboxError("the unapplied amount cannot be negative")
        total = sum((a for _, a in inv_amounts), ZERO) - sum((a for _, a in credit_amounts), ZERO) + unapplied_amt
        if total < 0:
            raise SandboxError(f"credits exceed the amounts applied: the payment total would be {total}")
        if not inv_amounts and not credit_amounts and unapplied_amt == 0:
            raise SandboxError("a payment must apply to an invoice or credit memo, or carry an unapplied amount")
        if method is not None and method not in PAYMENT_METHODS:
            raise SandboxError(f"unknown payment method {method!r}; known: {', '.join(PAYMENT_METHODS)}")

        pay_id = self.new_id()
        lines: list[Entity] = []
        for entity, table, amounts in (
            ("Invoice", self.invoices, inv_amounts),
            ("CreditMemo", self.credit_memos, credit_amounts),
        ):
            for txn_id, amount in amounts:
                target = table[txn_id]
                field_name = "Balance" if entity == "Invoice" else "RemainingCredit"
                open_before: Decimal = target[field_name]
                lines.append(
                    {
                        "Amount": amount,
                        "LinkedTxn": [{"TxnId": txn_id, "TxnType": entity}],
                        "LineEx": {
                            "any": [
                                _name_value("txnId", txn_id),
                                _name_value("txnOpenBalance", str(open_before)),
                                _name_value("txnReferenceNumber", target.get("DocNumber", "")),
                            ]
                        },
                    }
                )
                target[field_name] = open_before - amount
                if entity == "CreditMemo":
                    target["Balance"] = target["RemainingCredit"]
                target["LinkedTxn"].append({"TxnId": pay_id, "TxnType": "Payment"})
                self._touch(entity, target, at)
        row: Entity = {
            "Id": pay_id,
            "SyncToken": "0",
            "domain": "QBO",
            "sparse": False,
            "MetaData": self._meta(at),
            "TxnDate": txn_date or self._txn_date(at),
            "CurrencyRef": dict(USD),
            "CustomerRef": {"value": cust_id, "name": customer["DisplayName"]},
            "DepositToAccountRef": dict(CHECKING if method in ("ACH/EFT", "Wire Transfer") else UNDEPOSITED),
            "ARAccountRef": dict(AR_ACCOUNT),
            "TotalAmt": total,
            "UnappliedAmt": unapplied_amt,
            "ProcessPayment": False,
            "Line": lines,
        }
        if method is not None:
            row["PaymentMethodRef"] = {"value": PAYMENT_METHODS[method], "name": method}
        if ref_num:
            row["PaymentRefNum"] = ref_num
        if private_note:
            row["PrivateNote"] = private_note
        self.tables["Payment"].add(row)
        self._adjust_customer(cust_id, -total)
        self._notify("Payment", pay_id, "Create", at)
        return row

    def _unapply(self, payment: Entity, at: datetime) -> None:
        """Give every linked invoice/credit memo its amount back and drop the link."""
        for line in payment.get("Line", []):
            for link in line.get("LinkedTxn", []):
                entity = link.get("TxnType")
                table = self.invoices if entity == "Invoice" else self.credit_memos if entity == "CreditMemo" else None
                target = table.get(link.get("TxnId", "")) if table is not None else None
                if target is None:
                    continue
                field_name = "Balance" if entity == "Invoice" else "RemainingCredit"
                target[field_name] = target[field_name] + line["Amount"]
                if entity == "CreditMemo":
                    target["Balance"] = target["RemainingCredit"]
                target["LinkedTxn"] = [t for t in target["LinkedTxn"] if t.get("TxnId") != payment["Id"]]
                self._touch(entity, target, at)
                if entity == "Invoice":
                    cust = target["CustomerRef"]["value"]
                    pending = self._open_invoices.setdefault(cust, [])
                    if target["Id"] not in pending:
                        bisect.insort(pending, target["Id"], key=int)
                else:
                    memos = self._credit_memos.setdefault(target["CustomerRef"]["value"], [])
                    if target["Id"] not in memos:
                        memos.append(target["Id"])
        self._adjust_customer(payment["CustomerRef"]["value"], payment["TotalAmt"])

    def void_payment(self, payment_id: str, at: datetime) -> Entity:
        """QBO.md §3.1: amounts zeroed, lines cleared, "Voided" prepended to PrivateNote; still queryable."""
        payment = self.payments.get(str(payment_id))
        if payment is None:
            raise SandboxError(f"payment {payment_id} does not exist in company {self.realm_id}")
        if payment.get("PrivateNote", "").startswith("Voided") and payment["TotalAmt"] == 0 and not payment["Line"]:
            raise SandboxError(f"payment {payment_id} is already voided")
        self._unapply(payment, at)
        note = payment.get("PrivateNote")
        payment["PrivateNote"] = f"Voided {note}" if note else "Voided"
        payment["TotalAmt"] = ZERO
        payment["UnappliedAmt"] = ZERO
        payment["Line"] = []
        self._touch("Payment", payment, at)
        self._notify("Payment", payment["Id"], "Void", at)
        return payment

    def delete_payment(self, payment_id: str, at: datetime) -> Deleted:
        """Gone from queries and reads (610); only CDC and webhooks tell."""
        payment = self.payments.get(str(payment_id))
        if payment is None:
            raise SandboxError(f"payment {payment_id} does not exist in company {self.realm_id}")
        self._unapply(payment, at)
        self.tables["Payment"].remove(payment["Id"])
        stub = Deleted("Payment", payment["Id"], _ms(at))
        self.deleted.append(stub)
        self._notify("Payment", payment["Id"], "Delete", at)
        return stub

    def last_payment_time(self) -> datetime | None:
        last = self.tables["Payment"].last_create_us()
        return None if last is None else datetime.fromtimestamp(0, self.tz) + timedelta(microseconds=last)


def _name_value(name: str, value: str) -> Entity:
    return {
        "name": "{http://schema.intuit.com/finance/v3}NameValue",
        "declaredType": "com.intuit.schema.finance.v3.NameValue",
        "scope": "javax.xml.bind.JAXBElement$GlobalScope",
        "value": {"Name": name, "Value": value},
        "nil": False,
        "globalScope": True,
        "typeSubstituted": False,
    }


# --- the generator ----------------------------------------------------------------------------

_STORE_FIRST = [
    "Green Leaf",
    "Mile High",
    "Emerald",
    "Golden State",
    "Pacific",
    "Highland",
    "Blue Sky",
    "Redwood",
    "Sunset",
    "Evergreen",
    "Cascade",
    "Desert Bloom",
    "Harbor",
    "Canyon",
    "Riverbend",
    "Summit",
    "Coastal",
    "Northern Lights",
    "Willamette",
    "Rogue Valley",
    "High Desert",
    "Columbia Gorge",
    "Three Sisters",
    "Hawthorne",
    "Alberta Street",
    "Mississippi Ave",
    "Old Town",
    "Pearl District",
    "Sellwood",
    "Crater Lake",
    "Mt. Hood",
    "Siskiyou",
    "Klamath",
    "Oak Grove",
    "Cedar Hills",
    "Rose City",
    "Tidewater",
    "Driftwood",
    "Juniper",
    "Sagebrush",
    "Bridgetown",
    "Foster",
]
_STORE_SECOND = [
    "Dispensary",
    "Wellness",
    "Cannabis Co.",
    "Collective",
    "Provisions",
    "Apothecary",
    "Botanicals",
    "Remedies",
    "Cannabis Club",
    "Market",
    "Farmacy",
    "Herbal Center",
    "Dispensary & Lounge",
    "Green House",
    "Supply",
]
_CITIES = [
    ("Portland", "97214"),
    ("Eugene", "97401"),
    ("Salem", "97301"),
    ("Bend", "97701"),
    ("Medford", "97501"),
    ("Corvallis", "97330"),
    ("Ashland", "97520"),
    ("Hood River", "97031"),
    ("Beaverton", "97005"),
    ("Gresham", "97030"),
    ("Astoria", "97103"),
    ("Klamath Falls", "97601"),
]
_STREETS = [
    "SE Division St",
    "NE Alberta St",
    "SE Hawthorne Blvd",
    "N Mississippi Ave",
    "W Broadway",
    "Main St",
    "NW 23rd Ave",
    "Commercial St SE",
    "Franklin Blvd",
    "Wall St",
    "Biddle Rd",
    "Oak St",
]
_PEOPLE = [
    ("Maria", "Lopez"),
    ("James", "Nguyen"),
    ("Ashley", "Kim"),
    ("Devon", "Patel"),
    ("Sam", "Okafor"),
    ("Jordan", "Reyes"),
    ("Taylor", "Schmidt"),
    ("Riley", "Chen"),
    ("Casey", "Brooks"),
    ("Morgan", "Silva"),
]
_STRAINS = [
    "Blue Dream",
    "Sour Diesel",
    "OG Kush",
    "Gelato",
    "Wedding Cake",
    "Girl Scout Cookies",
    "Granddaddy Purple",
    "Pineapple Express",
    "Jack Herer",
    "Northern Lights",
    "Zkittlez",
    "Runtz",
    "Gorilla Glue #4",
    "Durban Poison",
    "Purple Punch",
    "Lemon Haze",
    "Mimosa",
    "Ice Cream Cake",
    "Tangie",
    "Green Crack",
]
# (format, sku, unit price range in cents, quantity choices)
_FORMATS = [
    ("Flower 3.5g", "F35", (1150, 1850), (24, 48, 72, 96, 120, 240)),
    ("Flower 1oz Smalls", "F28", (5500, 9500), (4, 6, 8, 12, 16, 24)),
    ("Pre-Roll 1g", "PR1", (300, 450), (50, 100, 150, 200, 300, 500)),
    ("Pre-Roll 5-Pack 0.5g", "PR5", (900, 1400), (20, 40, 60, 100)),
    ("Live Resin Cart 0.5g", "LRC", (1400, 2200), (20, 30, 50, 100, 150)),
    ("Distillate Cart 1g", "DST", (1200, 1800), (25, 50, 75, 100)),
    ("Live Rosin 1g", "ROS", (2000, 3000), (10, 20, 30, 40)),
]
_OTHER_ITEMS = [
    ("Watermelon Gummies 100mg (10ct)", "EDB-WM", (650, 900), (24, 48, 96), "Inventory"),
    ("Dark Chocolate Bar 100mg", "EDB-CH", (700, 1000), (12, 24, 48), "Inventory"),
    ("Sour Apple Gummies 100mg (10ct)", "EDB-SA", (650, 900), (24, 48, 96), "Inventory"),
    ("CBD Tincture 1000mg 30ml", "TNC-CBD", (1800, 2600), (6, 12, 24), "Inventory"),
    ("THC:CBD 1:1 Tincture 500mg", "TNC-11", (1900, 2700), (6, 12, 24), "Inventory"),
    ("Child-Resistant Exit Bags (case of 500)", "SUP-BAG", (4500, 6500), (1, 2, 4), "NonInventory"),
    ("Delivery Fee", "SVC-DEL", (2500, 5000), (1,), "Service"),
    ("Promotional Sample", "PROMO", (0, 0), (1, 2, 5), "NonInventory"),
]
_NOTES = [
    "Paid at delivery",
    "Driver collected at drop-off",
    "Thank you!",
    "Remit for last week's order",
    "Balance due next delivery",
    "Per phone call with AP",
]
_RETURN_REASONS = [
    "Returned product: damaged packaging",
    "Returned product: failed lab retest",
    "Credit for short shipment",
    "Returned product: expired",
]
_METHOD_WEIGHTS = [
    ("Cash", 30),
    ("Check", 25),
    ("ACH/EFT", 30),
    ("Wire Transfer", 4),
    ("Debit", 6),
    ("Visa", 3),
    ("MasterCard", 2),
]
# The payment mix; see `Generator.payment`.
KIND_WEIGHTS = [
    ("full", 54),
    ("partial", 11),
    ("split", 12),
    ("overpay", 5),
    ("unapplied", 2),
    ("with_credit", 4),
    ("zero_after_credit", 2),
    ("credit_only", 3),
    ("void", 5),
    ("no_method", 2),
]

_KIND_NAMES = [k for k, _ in KIND_WEIGHTS]
_KIND_CUM = list(itertools.accumulate(w for _, w in KIND_WEIGHTS))
_METHOD_NAMES = [m for m, _ in _METHOD_WEIGHTS]
_METHOD_CUM = list(itertools.accumulate(w for _, w in _METHOD_WEIGHTS))


class Generator:
    """Seeded realistic data for one company. All randomness comes from `self.rng`."""

    def __init__(self, company: Company, seed: int | str) -> None:
        self.company = company
        self.rng = random.Random(seed)
        self._products: list[Entity] = []
        self._extras: dict[str, str] = {}

    # --- lists --------------------------------------------------------------------------------

    def customers(self, n: int, before: datetime) -> None:
        rng = self.rng
        names = [f"{a} {b}" for a in _STORE_FIRST for b in _STORE_SECOND]
        rng.shuffle(names)
        existing = {c["DisplayName"] for c in self.company.customers.values()}
        created = 0
        for name in names:
            if created >= n:
                break
            if name in existing:
                continue
            city, zip_code = rng.choice(_CITIES)
            first, last = rng.choice(_PEOPLE)
            domain = re.sub(r"[^a-z]", "", name.lower())[:24] + ".com"
            fields = {
                "DisplayName": name,
                "GivenName": first,
                "FamilyName": last,
                "PrimaryEmailAddr": {"Address": f"ap@{domain}"},
                "PrimaryPhone": {
                    "FreeFormNumber": f"({rng.choice(['503', '541', '971'])}) 555-{rng.randrange(100, 10000):04d}"
                },
                "BillAddr": {
                    "Line1": f"{rng.randrange(100, 9999)} {rng.choice(_STREETS)}",
                    "City": city,
                    "CountrySubDivisionCode": "OR",
                    "PostalCode": zip_code,
                },
                "Notes": f"OLCC retailer license 050-{rng.randrange(10_000_000, 99_999_999)}",
                "SalesTermRef": dict(TERMS[rng.choice((0, 1, 2, 2))][0]),
            }
            at = before - timedelta(days=rng.uniform(30, 700), seconds=rng.randrange(86400))
            self.company.add_customer(fields, at.replace(microsecond=0))
            created += 1

    def items(self, before: datetime) -> None:
        rng = self.rng
        strains = rng.sample(_STRAINS, 7)
        specs: list[tuple[str, str, tuple[int, int], tuple[int, ...], str]] = []
        for strain in strains:
            code = re.sub(r"[^A-Z]", "", strain.upper())[:4]
            for fmt, sku, cents, qty in rng.sample(_FORMATS, 4):
                specs.append((f"{strain} {fmt}", f"{sku}-{code}", cents, qty, "Inventory"))
        specs.extend(_OTHER_ITEMS)
        for name, sku, (lo, hi), _, kind in specs:
            price = Decimal(rng.randrange(lo, hi + 1, 25) if hi > lo else lo) / 100
            at = before - timedelta(days=rng.uniform(60, 800))
            fields: Entity = {"Name": name, "Sku": sku, "Description": name, "UnitPrice": money(price), "Type": kind}
            if kind == "Inventory":
                fields.update(
                    {
                        "TrackQtyOnHand": True,
                        "QtyOnHand": Decimal(rng.randrange(0, 5000)),
                        "PurchaseCost": money(_round(price * Decimal("0.55"))),
                        "ExpenseAccountRef": dict(COGS_ACCOUNT),
                        "InvStartDate": at.date().isoformat(),
                    }
                )
            self.company.add_item(fields, at.replace(microsecond=0))

    # --- transactions -------------------------------------------------------------------------

    def _quantity(self, item: Entity) -> Decimal:
        name = item["Name"]
        for fmt, _, _, qty in _FORMATS:
            if name.endswith(fmt):
                return Decimal(self.rng.choice(qty))
        for other, _, _, qty, _ in _OTHER_ITEMS:
            if name == other:
                return Decimal(self.rng.choice(qty))
        return Decimal(1)

    def _lines(self, low: int, high: int) -> list[tuple[str, Decimal]]:
        rng = self.rng
        if len(self._products) + len(self._extras) != len(self.company.items):
            self._products = [
                i for i in self.company.items.values() if i["Type"] != "Service" and i["Name"] != "Promotional Sample"
            ]
            self._extras = {i["Name"]: i["Id"] for i in self.company.items.values() if i not in self._products}
        items, extras = self._products, self._extras
        chosen = rng.sample(items, min(len(items), rng.randint(low, high)))
        lines = [(i["Id"], self._quantity(i)) for i in chosen]
        if rng.random() < 0.12 and "Delivery Fee" in extras:
            lines.append((extras["Delivery Fee"], Decimal(1)))
        if rng.random() < 0.06 and "Promotional Sample" in extras:
            lines.append((extras["Promotional Sample"], Decimal(rng.choice((1, 2, 5)))))
        return lines

    def invoice(self, customer_id: str, at: datetime) -> Entity:
        rng = self.rng
        roll = rng.random()
        return self.company.add_invoice(
            customer_id,
            self._lines(1, 6),
            at,
            discount_percent=Decimal(rng.choice((5, 10))) if roll < 0.15 else None,
            discount_amount=Decimal(rng.choice((25, 50, 100))) if 0.15 <= roll < 0.2 else None,
            tax_percent=Decimal(10) if rng.random() < 0.15 else None,
            note_line=f"METRC manifest {rng.randrange(10**9):010d}; delivered by driver #{rng.randrange(1, 30)}"
            if rng.random() < 0.2
            else None,
            terms=rng.choice((0, 1, 2, 2)),
            manifest=f"{rng.randrange(10**9):010d}" if rng.random() < 0.7 else None,
            private_note="Rush order" if rng.random() < 0.03 else None,
        )

    def credit_memo(self, customer_id: str, at: datetime) -> Entity:
        rng = self.rng
        lines = self._lines(1, 1)
        lines = [
            (item_id, max(Decimal(1), _round(qty / rng.choice((4, 6, 10))).to_integral_value()))
            for item_id, qty in lines[:1]
        ]
        return self.company.add_credit_memo(customer_id, lines, at, rng.choice(_RETURN_REASONS))

    def sales_receipt(self, at: datetime) -> Entity:
        rng = self.rng
        customer_id = rng.choice(list(self.company.customers))
        method = rng.choice(("Cash", "Cash", "Check", "Debit"))
        ref = str(rng.randrange(1000, 9999)) if method == "Check" else None
        return self.company.add_sales_receipt(customer_id, self._lines(1, 2), at, method, ref)

    def _method(self) -> tuple[str, str | None]:
        rng = self.rng
        method = rng.choices(_METHOD_NAMES, cum_weights=_METHOD_CUM)[0]
        ref: str | None
        if method == "Check":
            ref = str(rng.randrange(1001, 9999))
        elif method == "ACH/EFT":
            ref = f"ACH{rng.randrange(10**8, 10**9)}"
        elif method == "Wire Transfer":
            ref = f"FED{rng.randrange(10**10, 10**11)}"
        elif method in ("Visa", "MasterCard", "Debit"):
            ref = f"AUTH{rng.randrange(100000, 999999)}"
        else:
            ref = f"R-{rng.randrange(1000, 99999)}" if rng.random() < 0.4 else None
        return method, ref

    def _open_invoice(self, customer_id: str, at: datetime, reuse: float, exclude: set[str] | None = None) -> str:
        """An open invoice of the customer created before `at`: an existing one (with probability
        `reuse`) or a new one, back-dated by half a day to a month."""
        company = self.company
        invoices = company.tables["Invoice"]
        at_us = to_micros(at)
        usable = [
            i
            for i in company.open_invoices(customer_id)
            if i not in (exclude or ()) and invoices.created_of(company.invoices[i]) < at_us
        ]
        if usable and self.rng.random() < reuse:
            return usable[0]
        created = at - timedelta(days=self.rng.uniform(0.5, 30), seconds=self.rng.randrange(3600))
        invoice = self.invoice(customer_id, created.replace(microsecond=0))
        while invoice["Balance"] <= 0:  # a zero-total invoice (all samples, or discounted away) cannot be paid
            invoice = self.invoice(customer_id, created.replace(microsecond=0))
        return str(invoice["Id"])

    def _credit_for(self, customer_id: str, at: datetime) -> tuple[str, Decimal]:
        """A credit memo of the customer with credit left, created before `at` (made if needed)."""
        company = self.company
        at_us = to_micros(at)
        for memo_id in company.open_credits(customer_id):
            if company.tables["CreditMemo"].created_of(company.credit_memos[memo_id]) < at_us:
                return memo_id, company.credit_memos[memo_id]["RemainingCredit"]
        created = at - timedelta(days=self.rng.uniform(0.5, 20))
        memo = self.credit_memo(customer_id, created.replace(microsecond=0))
        return str(memo["Id"]), memo["RemainingCredit"]

    def payment(self, at: datetime, kind: str, reuse: float = 0.5) -> Entity:
        """One payment of the given kind at `at` (see KIND_WEIGHTS)."""
        rng = self.rng
        company = self.company
        customer_id = rng.choice(list(company.customers))
        method: str | None
        method, ref = self._method()
        note = rng.choice(_NOTES) if rng.random() < 0.15 else None
        if kind == "no_method":
            method, ref = None, None
        if kind == "unapplied":
            amount = money(Decimal(rng.randrange(100, 2000)) * 5)
            note = note or "Prepayment for next order"
            return company.add_payment(
                at, customer_id=customer_id, unapplied=amount, method=method, ref_num=ref, private_note=note
            )
        if kind == "credit_only":
            # Only a credit memo line: the credit turns into an unapplied amount, TotalAmt 0.
            memo_id, credit = self._credit_for(customer_id, at)
            return company.add_payment(
                at, credits=[(memo_id, credit)], unapplied=credit, method=method, ref_num=ref, private_note=note
            )
        if kind in ("with_credit", "zero_after_credit"):
            memo_id, credit = self._credit_for(customer_id, at)
            inv_id = self._open_invoice(customer_id, at, reuse)
            balance: Decimal = company.invoices[inv_id]["Balance"]
            if kind == "zero_after_credit":
                # A $0 payment that still settles (part of) an invoice with a credit.
                applied = min(credit, balance)
                return company.add_payment(
                    at,
                    invoices=[(inv_id, applied)],
                    credits=[(memo_id, applied)],
                    method=None,
                    private_note="Credit applied",
                )
            applied_credit = min(credit, max(CENT, _round(balance / 2)))
            return company.add_payment(
                at,
                invoices=[(inv_id, balance)],
                credits=[(memo_id, applied_credit)],
                method=method,
                ref_num=ref,
                private_note=note,
            )
        applications: list[tuple[str, Decimal]] = []
        for _ in range(rng.choice((2, 2, 3)) if kind == "split" else 1):
            taken = {i for i, _ in applications}
            inv_id = self._open_invoice(customer_id, at, reuse, exclude=taken)
            applications.append((inv_id, company.invoices[inv_id]["Balance"]))
        if kind == "partial" or (kind == "split" and rng.random() < 0.3):
            inv_id, balance = applications[-1]
            part = _round(balance * Decimal(rng.randint(20, 80)) / 100)
            applications[-1] = (inv_id, part if part > 0 else balance)
        unapplied = ZERO
        if kind == "overpay":
            # The customer rounds up to the next hundred; the rest stays unapplied.
            total = sum((a for _, a in applications), ZERO)
            unapplied = money((total / 100).to_integral_value(rounding=ROUND_CEILING) * 100 - total) or money(20)
        return company.add_payment(
            at, invoices=applications, unapplied=unapplied, method=method, ref_num=ref, private_note=note
        )

    def kind(self) -> str:
        return self.rng.choices(_KIND_NAMES, cum_weights=_KIND_CUM)[0]


def _distinct_seconds(rng: random.Random, lo: datetime, hi: datetime, n: int) -> list[datetime]:
    """n distinct whole-second instants in [lo, hi), sorted, mostly in business hours."""
    span = int((hi - lo).total_seconds())
    if span < n:
        raise SandboxError(f"cannot fit {n} payments into {span} seconds of history")
    picks: set[int] = set()
    while len(picks) < n:
        s = rng.randrange(span)
        hour = (lo + timedelta(seconds=s)).astimezone(PACIFIC).hour
        if 7 <= hour < 20 or rng.random() < 0.1:
            picks.add(s)
    base = lo.replace(microsecond=0)
    return [base + timedelta(seconds=s) for s in sorted(picks)]


def populate_history(company: Company, seed: int, payments: int, now: datetime, days: int = 90) -> None:
    """Customers, items and `payments` visible payments over the past `days` (plus deleted ones,
    unpaid invoices, credit memos and sales receipts), all created before `now`."""
    gen = Generator(company, f"history:{seed}")
    rng = gen.rng
    start = now - timedelta(days=days)
    company.created_at = start - timedelta(days=800)
    gen.customers(max(12, min(80, payments // 6 + 10)), start)
    gen.items(start)
    deleted = payments // 100 + (1 if payments >= 20 else 0)
    times = _distinct_seconds(rng, start, now - timedelta(minutes=2), payments + deleted) if payments else []
    delete_at = set(rng.sample(range(len(times)), deleted)) if deleted else set()
    later: list[tuple[datetime, int, str, str]] = []  # (when, tiebreak, action, payment id)
    receipts = sorted(rng.sample(range(len(times)), min(len(times), payments // 5))) if times else []
    for n, at in enumerate(times):
        while later and later[0][0] <= at:
            when, _, action, pay_id = heapq.heappop(later)
            _apply_later(company, action, pay_id, when)
        kind = gen.kind()
        payment = gen.payment(at, "full" if kind == "void" else kind, reuse=0.6)
        if kind == "void" or n in delete_at:
            delay = timedelta(minutes=rng.uniform(10, 3 * 24 * 60))
            when = min(at + delay, now - timedelta(minutes=1)).replace(microsecond=0)
            heapq.heappush(later, (when, n, "delete" if n in delete_at else "void", payment["Id"]))
        if receipts and receipts[0] == n:
            receipts.pop(0)
            gen.sales_receipt(at + timedelta(seconds=rng.randrange(1, 600)))
    while later:
        when, _, action, pay_id = heapq.heappop(later)
        _apply_later(company, action, pay_id, when)
    # Open receivables: invoices nobody has paid yet, and a standalone credit memo or two.
    customers = list(company.customers)
    for _ in range(max(3, payments // 10)):
        at = now - timedelta(days=rng.uniform(0.2, 30))
        gen.invoice(rng.choice(customers), at.replace(microsecond=0))
    for _ in range(max(1, payments // 100)):
        at = now - timedelta(days=rng.uniform(0.2, 30))
        gen.credit_memo(rng.choice(customers), at.replace(microsecond=0))


def _apply_later(company: Company, action: str, pay_id: str, when: datetime) -> None:
    if pay_id not in company.payments:
        return
    if action == "void":
        company.void_payment(pay_id, when)
    else:
        company.delete_payment(pay_id, when)


def new_payment_times(company: Company, n: int, now: datetime) -> list[datetime]:
    """n strictly increasing instants ending near `now`: after the newest payment and the latest
    consent, within the last minute when there is room (millisecond steps when needed)."""
    window = max(timedelta(seconds=60), timedelta(milliseconds=n))
    lo = now - window
    last = company.last_payment_time()
    for floor in (last, company.not_before):
        if floor is not None and floor >= lo:
            lo = floor
    step = max(timedelta(milliseconds=1), (now - lo) / (n + 1)) if n else timedelta(milliseconds=1)
    out: list[datetime] = []
    previous = lo
    for i in range(1, n + 1):
        t = _ms(lo + step * i)
        if t <= previous:
            t = previous + timedelta(milliseconds=1)
        if n > 1 and t.microsecond == 0:
            t += timedelta(milliseconds=1)  # keep the sub-second form for every new payment
        out.append(t)
        previous = t
    return out


def next_payment_time(company: Company, now: datetime) -> datetime:
    """When a payment made now is created: now, unless that is not after the newest payment or the consent."""
    at = _ms(now)
    for floor in (company.last_payment_time(), company.not_before):
        if floor is not None and at <= floor:
            at = _ms(floor) + timedelta(milliseconds=1)
    return at


def generate_new_payments(company: Company, seed: int | str, n: int, now: datetime) -> list[Entity]:
    """n new payments created "now" in a realistic mix, plus the odd sales receipt; returns them
    as they stand afterwards (some voided). Voids happen at the end of the window."""
    if n < 0:
        raise SandboxError("n must not be negative")
    if not company.customers or not company.items:
        raise SandboxError(f"company {company.realm_id} has no customers or items to bill")
    gen = Generator(company, f"new:{seed}")
    rng = gen.rng
    times = new_payment_times(company, n, now)
    created: list[Entity] = []
    to_void: list[str] = []
    for at in times:
        kind = gen.kind()
        payment = gen.payment(at, "full" if kind == "void" else kind, reuse=0.35)
        created.append(payment)
        if kind == "void":
            to_void.append(payment["Id"])
        if rng.random() < 0.1:
            gen.sales_receipt(at)
    void_at = max([now, *times[-1:]])
    for pay_id in to_void:
        company.void_payment(pay_id, void_at)
    return created


# --- consistency (used by tests and the control API) ------------------------------------------


def check_books(company: Company) -> list[str]:
    """Every broken invariant, as a sentence; empty when the company's books are consistent."""
    problems: list[str] = []
    applied: dict[tuple[str, str], Decimal] = {}
    paying: dict[str, set[str]] = {}
    owed: dict[str, Decimal] = {}  # customer -> expected Balance
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
    for inv in company.invoices.values():
        sales = [ln for ln in inv["Line"] if ln["DetailType"] == "SalesItemLineDetail"]
        subtotal = sum((ln["Amount"] for ln in sales), ZERO)
        discount = sum((ln["Amount"] for ln in inv["Line"] if ln["DetailType"] == "DiscountLineDetail"), ZERO)
        if inv["TotalAmt"] != subtotal - discount + inv["TxnTaxDetail"]["TotalTax"]:
            problems.append(f"invoice {inv['Id']}: TotalAmt does not add up")
        expected = inv["TotalAmt"] - applied.get(("Invoice", inv["Id"]), ZERO)
        if inv["Balance"] != expected or not ZERO <= inv["Balance"] <= inv["TotalAmt"]:
            problems.append(f"invoice {inv['Id']}: Balance {inv['Balance']} != {expected}")
        linked = {t["TxnId"] for t in inv["LinkedTxn"]}
        if linked != paying.get(inv["Id"], set()):
            problems.append(
                f"invoice {inv['Id']}: LinkedTxn {sorted(linked)} != paying {sorted(paying.get(inv['Id'], []))}"
            )
        cust = inv["CustomerRef"]["value"]
        owed[cust] = owed.get(cust, ZERO) + inv["Balance"]
    for memo in company.credit_memos.values():
        expected = memo["TotalAmt"] - applied.get(("CreditMemo", memo["Id"]), ZERO)
        if memo["RemainingCredit"] != expected or memo["RemainingCredit"] < 0:
            problems.append(f"credit memo {memo['Id']}: RemainingCredit {memo['RemainingCredit']} != {expected}")
        cust = memo["CustomerRef"]["value"]
        owed[cust] = owed.get(cust, ZERO) - memo["RemainingCredit"]
    for cust in company.customers.values():
        if cust["Balance"] != owed.get(cust["Id"], ZERO):
            problems.append(f"customer {cust['Id']}: Balance {cust['Balance']} != {owed.get(cust['Id'], ZERO)}")
    previous: tuple[int, int] | None = None
    for pay in company.tables["Payment"].ordered():
        key = (to_micros(parse_time(pay["MetaData"]["CreateTime"])), int(pay["Id"]))
        if previous is not None and key <= previous:
            problems.append(f"payment {pay['Id']}: not in CreateTime order")
        previous = key
        if parse_time(pay["MetaData"]["LastUpdatedTime"]) < parse_time(pay["MetaData"]["CreateTime"]):
            problems.append(f"payment {pay['Id']}: LastUpdatedTime before CreateTime")
    for table in company.tables.values():
        for row in table.rows.values():
            for value in _decimals(row):
                if value != value.quantize(CENT):
                    problems.append(f"{table.entity} {row['Id']}: amount {value} has more than two places")
    return problems


def _decimals(value: Any) -> Iterable[Decimal]:
    if isinstance(value, Decimal):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _decimals(item)
    elif isinstance(value, list):
        for item in value:
            yield from _decimals(item)


def realm_id_for(name: str, seed: int, taken: Iterable[str]) -> str:
    """A 16-digit realm id derived from name and seed (stable across runs), unique in `taken`."""
    used = set(taken)
    rng = random.Random(f"realm:{name}:{seed}")
    while True:
        realm = f"9130{rng.randrange(10**11, 10**12)}"
        if realm not in used:
            return realm


def today(now: datetime, tz: tzinfo = PACIFIC) -> date:
    return now.astimezone(tz).date()
