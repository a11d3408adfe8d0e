"""The QBO sandbox's store: one company's books as entities in Intuit's JSON shape (docs/qbo.md §3).

A `Company` holds one table per entity, each kept in (CreateTime, Id) order so queries page by
bisect, and hands out Ids, SyncTokens and MetaData. Every write goes through a Company method that
keeps the books consistent: an invoice's `Balance` is its `TotalAmt` minus the live payments applied
to it, a payment's `TotalAmt = Σ invoice lines − Σ credit lines + UnappliedAmt`, voids zero a payment
and give the invoices their balance back, deletes leave a CDC stub. Money is `Decimal` with two
places and is written to JSON as a number with two places (`dumps`). No I/O and no randomness here:
`qbo_generator` decides what a company holds, `qbo_books` checks that it adds up."""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Any

from qbo_operator.harness.sandbox.qbo_query import to_micros
from qbo_operator.harness.sandbox.qbo_values import (
    AR_ACCOUNT,
    CHECKING,
    CREDIT_TYPES,
    DISCOUNT_ACCOUNT,
    ENTITIES,
    INACTIVE_METHODS,
    INCOME_ACCOUNT,
    PACIFIC,
    PAYMENT_METHODS,
    RATES,
    TERMS,
    UNDEPOSITED,
    USD,
    ZERO,
    Entity,
    Money,
    SaleLine,
    SandboxError,
    intuit_time,
    money,
    round_cents,
    whole_second,
)
from qbo_operator.harness.sandbox.qbo_values import parse_time as parse_time  # re-exported: helpers read it here

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


class _Rows:
    """A company's table read as a dict of rows by Id (`company.payments`); writes go through Company's methods."""

    def __init__(self, entity: str) -> None:
        self.entity = entity

    def __get__(self, company: Company, owner: type[Company]) -> dict[str, Entity]:
        return company.tables[self.entity].rows


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
    multicurrency: bool = False  # some customers pay in CAD (CurrencyRef, ExchangeRate, HomeTotalAmt)
    credit_open: dict[str, Decimal] = field(default_factory=dict)  # JournalEntry/Deposit id -> AR credit left
    voided: set[str] = field(default_factory=set)  # ids of voided payments and invoices
    _open_invoices: dict[str, list[str]] = field(default_factory=dict)  # customer -> ids with Balance > 0
    _credit_memos: dict[str, list[str]] = field(default_factory=dict)  # customer -> ids with credit left

    def __post_init__(self) -> None:
        self.tables = {name: Table(name, self.tz) for name in ENTITIES}

    # One table's rows by Id, as tests and the generator read them: sb.companies[realm].payments etc.
    payments = _Rows("Payment")
    invoices = _Rows("Invoice")
    customers = _Rows("Customer")
    items = _Rows("Item")
    sales_receipts = _Rows("SalesReceipt")
    credit_memos = _Rows("CreditMemo")
    payment_methods = _Rows("PaymentMethod")

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
        stamp = intuit_time(whole_second(at), self.tz)
        return {"CreateTime": stamp, "LastUpdatedTime": stamp}

    def head(self, at: datetime, row_id: str | None = None) -> Entity:
        """The keys every entity opens with: a new Id (unless given), SyncToken 0, MetaData at `at`."""
        return {
            "Id": self.new_id() if row_id is None else row_id,
            "SyncToken": "0",
            "domain": "QBO",
            "sparse": False,
            "MetaData": self._meta(at),
        }

    def touch(self, entity: str, row: Entity, at: datetime) -> None:
        """A write: SyncToken + 1, LastUpdatedTime moves forward (never back)."""
        row["SyncToken"] = str(int(row["SyncToken"]) + 1)
        table = self.tables[entity]
        at = whole_second(at)
        at_us = to_micros(at)
        if at_us > table.updated_of(row):
            row["MetaData"]["LastUpdatedTime"] = intuit_time(at, self.tz)
            table.touched(row["Id"], at_us)

    def notify(self, entity: str, row_id: str, operation: str, at: datetime) -> None:
        for listener in list(self.listeners):
            listener(entity, row_id, operation, at)

    def _txn_date(self, at: datetime) -> str:
        return at.astimezone(self.tz).date().isoformat()

    def _customer(self, customer_id: str) -> Entity:
        row = self.customers.get(customer_id)
        if row is None:
            raise SandboxError(f"customer {customer_id} does not exist in company {self.realm_id}")
        return row

    def target(self, entity: str, txn_id: str) -> Entity | None:
        """The invoice or credit a payment line links to (None when it is gone)."""
        table = self.tables.get(entity) if entity == "Invoice" or entity in CREDIT_TYPES else None
        return None if table is None else table.rows.get(txn_id)

    def credit_entity(self, txn_id: str) -> str:
        """Which kind of credit (CreditMemo, JournalEntry, Deposit) has this Id; SandboxError when none."""
        for entity in CREDIT_TYPES:
            if txn_id in self.tables[entity].rows:
                return entity
        raise SandboxError(f"credit {txn_id} does not exist in company {self.realm_id}")

    def open_amount(self, entity: str, row: Mapping[str, Any]) -> Decimal:
        """What is still open: an invoice's Balance or a credit's remaining amount."""
        if entity in _OPEN_FIELD:
            value: Decimal = row[_OPEN_FIELD[entity]]
            return value
        return self.credit_open.get(row["Id"], ZERO)

    def set_open(self, entity: str, row: Entity, value: Decimal) -> None:
        """Set what is open (a credit memo's Balance and a foreign invoice's HomeBalance follow)."""
        if entity in _OPEN_FIELD:
            _set_open(entity, row, value)
        else:
            self.credit_open[row["Id"]] = value
        if "HomeBalance" in row:
            row["HomeBalance"] = round_cents(row["Balance"] * row["ExchangeRate"])

    def home_amounts(self, row: Entity, customer: Mapping[str, Any]) -> None:
        """A transaction in the customer's currency; a foreign one states its rate and home amounts."""
        row["CurrencyRef"] = dict(customer.get("CurrencyRef", USD))
        if row["CurrencyRef"]["value"] == USD["value"]:
            return
        row["ExchangeRate"] = RATES[row["CurrencyRef"]["value"]]
        row["HomeTotalAmt"] = round_cents(row["TotalAmt"] * row["ExchangeRate"])

    def add_payment_methods(self, at: datetime) -> None:
        """Intuit's default methods, plus one made inactive that old payments still name."""
        for name, method_id in {**PAYMENT_METHODS, **INACTIVE_METHODS}.items():
            if method_id not in self.payment_methods:
                self._add_method(name, method_id, at, active=name not in INACTIVE_METHODS)

    def _add_method(self, name: str, method_id: str, at: datetime, active: bool = True) -> Entity:
        kind = "CREDIT_CARD" if name in ("Visa", "MasterCard", "Old Card") else "NON_CREDIT_CARD"
        row: Entity = {**self.head(at, method_id), "Name": name, "Active": active, "Type": kind}
        self.tables["PaymentMethod"].add(row)
        return row

    def method_ref(self, method: str, at: datetime) -> dict[str, str]:
        """A PaymentMethodRef by the method's name (carrying only the Id, as Intuit's does); an unknown name
        becomes a new active method."""
        if not self.payment_methods:
            self.add_payment_methods(self.created_at or at)
        for row in self.payment_methods.values():
            if row["Name"] == method:
                return {"value": row["Id"]}
        new_id = str(max(int(i) for i in self.payment_methods) + 1)
        return {"value": self._add_method(method, new_id, at)["Id"]}

    def method_name(self, ref: Mapping[str, Any] | None) -> str | None:
        """The name of the method a PaymentMethodRef names (None for none)."""
        row = self.payment_methods.get(ref["value"]) if ref else None
        return None if row is None else str(row["Name"])

    def adjust_customer(self, customer_id: str, delta: Decimal) -> None:
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
        """Ids of the customer's credits (memos, journal entries, deposits) with credit left, oldest first."""
        live = []
        for credit_id in self._credit_memos.get(customer_id, []):
            entity = next((e for e in CREDIT_TYPES if credit_id in self.tables[e].rows), None)
            if entity is not None and self.open_amount(entity, self.tables[entity].rows[credit_id]) > 0:
                live.append(credit_id)
        self._credit_memos[customer_id] = live
        return list(live)

    # --- lists --------------------------------------------------------------------------------

    def add_company_info(self, at: datetime) -> Entity:
        """The CompanyInfo entity (Id "1"), which clients read to show the company's name."""
        email = re.sub(r"[^a-z]", "", self.name.lower())[:24] or "company"
        row: Entity = {
            **self.head(at, "1"),
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
            **self.head(at),
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
            **self.head(at),
            "Active": True,
            "Taxable": False,
            "IncomeAccountRef": dict(INCOME_ACCOUNT),
            **fields,
            "FullyQualifiedName": fields["Name"],
        }
        self.tables["Item"].add(row)
        return row

    # --- transactions -------------------------------------------------------------------------

    def _sales_lines(self, lines: Sequence[SaleLine], taxed: bool) -> tuple[list[Entity], Decimal, Decimal]:
        """Item lines: (item id, qty) at the item's price, or (item id, qty, unit price)."""
        out: list[Entity] = []
        subtotal = taxable = ZERO
        for n, line in enumerate(lines, start=1):
            item_id, qty = line[0], line[1]
            item = self.items.get(item_id)
            if item is None:
                raise SandboxError(f"item {item_id} does not exist in company {self.realm_id}")
            price: Decimal = item["UnitPrice"] if len(line) < 3 else line[2]
            amount = round_cents(price * qty)
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

    def _invoice_lines(
        self,
        lines: Sequence[SaleLine],
        note_line: str | None,
        discount_percent: Decimal | None,
        discount_amount: Decimal | None,
        taxed: bool,
    ) -> tuple[list[Entity], Decimal, Decimal, Decimal]:
        """An invoice's Line array (items, note, SubTotal, Discount) with its subtotal, discount and taxable sum."""
        line_rows, subtotal, taxable = self._sales_lines(lines, taxed=taxed)
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
        line_rows.append(_subtotal_line(subtotal))
        discount = ZERO
        discounted = _discount(subtotal, discount_percent, discount_amount)
        if discounted is not None:
            discount, detail = discounted
            line_rows.append(
                {"Id": str(n + 1), "Amount": discount, "DetailType": "DiscountLineDetail", "DiscountLineDetail": detail}
            )
        return line_rows, subtotal, discount, taxable

    def invoice_lines(self, lines: Sequence[SaleLine]) -> tuple[list[Entity], Decimal, Decimal, Decimal]:
        """An untaxed, undiscounted invoice's Line array with its subtotal (as `_invoice_lines`)."""
        return self._invoice_lines(lines, None, None, None, taxed=False)

    def add_invoice(
        self,
        customer_id: str,
        lines: Sequence[SaleLine],
        at: datetime,
        *,
        discount_percent: Decimal | None = None,
        discount_amount: Decimal | None = None,
        tax_percent: Decimal | None = None,
        note_line: str | None = None,
        terms: int = 2,
        private_note: str | None = None,
        manifest: str | None = None,
        doc_number: str | None = None,
        txn_date: str | None = None,
    ) -> Entity:
        """An invoice with SalesItemLineDetail lines, optional DescriptionOnly note, SubTotal and Discount."""
        customer = self._customer(customer_id)
        if not lines:
            raise SandboxError("an invoice needs at least one line")
        line_rows, subtotal, discount, taxable = self._invoice_lines(
            lines, note_line, discount_percent, discount_amount, taxed=tax_percent is not None
        )
        tax, tax_detail = _tax(taxable, tax_percent)
        total = subtotal - discount + tax
        term, days = TERMS[terms]
        day = date.fromisoformat(txn_date) if txn_date else at.astimezone(self.tz).date()
        row: Entity = {
            **self.head(at),
            "CustomField": [_manifest_field(manifest)],
            "DocNumber": doc_number or self._doc_number("Invoice"),
            "TxnDate": day.isoformat(),
            "DueDate": (day + timedelta(days=days)).isoformat(),
            "CurrencyRef": dict(USD),
            "LinkedTxn": [],
            "Line": line_rows,
            "TxnTaxDetail": tax_detail,
            "CustomerRef": _customer_ref(customer_id, customer),
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
        row.update(_bill_to(customer))
        self.home_amounts(row, customer)
        if "ExchangeRate" in row:
            row["HomeBalance"] = row["HomeTotalAmt"]
        if private_note:
            row["PrivateNote"] = private_note
        self.tables["Invoice"].add(row)
        self.adjust_customer(customer_id, total)
        if total > 0:
            self._open_invoices.setdefault(customer_id, []).append(row["Id"])
        return row

    def _untaxed_sale(
        self, entity: str, customer_id: str, lines: Sequence[SaleLine], at: datetime
    ) -> tuple[Entity, Decimal]:
        """What a credit memo and a sales receipt share: one customer, untaxed item lines and a SubTotal."""
        customer = self._customer(customer_id)
        line_rows, subtotal, _ = self._sales_lines(lines, taxed=False)
        line_rows.append(_subtotal_line(subtotal))
        head: Entity = {
            **self.head(at),
            "DocNumber": self._doc_number(entity),
            "TxnDate": self._txn_date(at),
            "CurrencyRef": dict(USD),
            "Line": line_rows,
            "TxnTaxDetail": {"TotalTax": ZERO},
            "CustomerRef": _customer_ref(customer_id, customer),
        }
        return head, subtotal

    def add_credit_memo(self, customer_id: str, lines: Sequence[SaleLine], at: datetime, reason: str) -> Entity:
        head, subtotal = self._untaxed_sale("CreditMemo", customer_id, lines, at)
        row: Entity = {
            **head,
            "PrivateNote": reason,
            **_NOT_SENT,
            "TotalAmt": subtotal,
            "RemainingCredit": subtotal,
            "Balance": subtotal,
            "LinkedTxn": [],
        }
        self.home_amounts(row, self.customers[customer_id])
        self.tables["CreditMemo"].add(row)
        self.adjust_customer(customer_id, -subtotal)
        self.track_credit(customer_id, row["Id"])
        return row

    def track_credit(self, customer_id: str, credit_id: str) -> None:
        """Offer a new credit (of any kind) to the customer's later payments."""
        self._credit_memos.setdefault(customer_id, []).append(credit_id)

    def add_sales_receipt(
        self, customer_id: str, lines: Sequence[tuple[str, Decimal]], at: datetime, method: str, ref_num: str | None
    ) -> Entity:
        head, subtotal = self._untaxed_sale("SalesReceipt", customer_id, lines, at)
        row: Entity = {
            **head,
            "PaymentMethodRef": self.method_ref(method, at),
            "DepositToAccountRef": _deposit_account(method),
            **_NOT_SENT,
            "TotalAmt": subtotal,
            "Balance": ZERO,
        }
        if ref_num:
            row["PaymentRefNum"] = ref_num
        self.tables["SalesReceipt"].add(row)
        return row

    def _payer(
        self,
        inv_amounts: Sequence[tuple[str, Decimal]],
        credit_amounts: Sequence[tuple[str, Decimal]],
        customer_id: str | None,
    ) -> str:
        """The one customer a payment's invoices and credit memos belong to; refuses what QBO refuses."""
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
            entity = self.credit_entity(cm_id)
            credit = self.tables[entity].rows[cm_id]
            left = self.open_amount(entity, credit)
            if amount <= 0 or amount > left:
                raise SandboxError(f"{entity} {cm_id} has {left} left, cannot apply {amount}")
            customers.add(credit_customer(credit))
        if len(customers) != 1:
            raise SandboxError(
                "a payment needs exactly one customer (give customer_id, or invoices of one customer)"
                if not customers
                else f"a payment cannot mix customers {sorted(customers)}"
            )
        (cust_id,) = customers
        return cust_id

    def settle(self, entity: str, txn_id: str, amount: Decimal, pay_id: str, at: datetime) -> Entity:
        """Apply `amount` of payment `pay_id` to an invoice or a credit; returns the payment's Line."""
        target = self.tables[entity].rows[txn_id]
        open_before = self.open_amount(entity, target)
        line: Entity = {
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
        self.set_open(entity, target, open_before - amount)
        if "LinkedTxn" in target:
            target["LinkedTxn"].append({"TxnId": pay_id, "TxnType": "Payment"})
        self.touch(entity, target, at)
        return line

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
        cust_id = self._payer(inv_amounts, credit_amounts, customer_id)
        customer = self._customer(cust_id)
        total = payment_total(inv_amounts, credit_amounts, unapplied_amt, method)
        pay_id = self.new_id()
        lines = [self.settle("Invoice", txn_id, amount, pay_id, at) for txn_id, amount in inv_amounts]
        lines += [self.settle(self.credit_entity(c), c, amount, pay_id, at) for c, amount in credit_amounts]
        row: Entity = {
            **self.head(at, pay_id),
            "TxnDate": txn_date or self._txn_date(at),
            "CurrencyRef": dict(USD),
            "CustomerRef": _customer_ref(cust_id, customer),
            "DepositToAccountRef": _deposit_account(method),
            "ARAccountRef": dict(AR_ACCOUNT),
            "TotalAmt": total,
            "UnappliedAmt": unapplied_amt,
            "ProcessPayment": False,
            "Line": lines,
        }
        if method is not None:
            row["PaymentMethodRef"] = self.method_ref(method, at)
        if ref_num:
            row["PaymentRefNum"] = ref_num
        if private_note:
            row["PrivateNote"] = private_note
        self.home_amounts(row, customer)
        self.tables["Payment"].add(row)
        self.adjust_customer(cust_id, -total)
        self.notify("Payment", pay_id, "Create", at)
        return row

    def unlink(self, payment_id: str, entity: str, target: Entity, amount: Decimal, at: datetime) -> None:
        """Give an invoice or credit back what one payment line took from it, and drop the link."""
        self.set_open(entity, target, self.open_amount(entity, target) + amount)
        if "LinkedTxn" in target:
            target["LinkedTxn"] = [t for t in target["LinkedTxn"] if t.get("TxnId") != payment_id]
        self.touch(entity, target, at)
        self._reopen(entity, target)

    def _unapply(self, payment: Entity, at: datetime) -> None:
        """Give every linked invoice/credit its amount back and drop the link."""
        for line in payment.get("Line", []):
            for link in line.get("LinkedTxn", []):
                entity = link.get("TxnType", "")
                target = self.target(entity, link.get("TxnId", ""))
                if target is not None:
                    self.unlink(payment["Id"], entity, target, line["Amount"], at)
        self.adjust_customer(payment["CustomerRef"]["value"], payment["TotalAmt"])

    def _reopen(self, entity: str, target: Entity) -> None:
        """Track an invoice or credit a void or delete gave its amount back to as open again."""
        customer_id = credit_customer(target)
        if entity == "Invoice":
            pending = self._open_invoices.setdefault(customer_id, [])
            if target["Id"] not in pending:
                bisect.insort(pending, target["Id"], key=int)
        else:
            memos = self._credit_memos.setdefault(customer_id, [])
            if target["Id"] not in memos:
                memos.append(target["Id"])

    def _payment(self, payment_id: str) -> Entity:
        payment = self.payments.get(str(payment_id))
        if payment is None:
            raise SandboxError(f"payment {payment_id} does not exist in company {self.realm_id}")
        return payment

    def void_payment(self, payment_id: str, at: datetime) -> Entity:
        """docs/qbo.md §3.1: amounts zeroed, lines cleared, "Voided" prepended to PrivateNote; still queryable."""
        payment = self._payment(payment_id)
        if payment["Id"] in self.voided:
            raise SandboxError(f"payment {payment_id} is already voided")
        self._unapply(payment, at)
        note = payment.get("PrivateNote")
        payment["PrivateNote"] = f"Voided {note}" if note else "Voided"
        payment["TotalAmt"] = ZERO
        payment["UnappliedAmt"] = ZERO
        payment["Line"] = []
        if "HomeTotalAmt" in payment:
            payment["HomeTotalAmt"] = ZERO
        self.voided.add(payment["Id"])
        self.touch("Payment", payment, at)
        self.notify("Payment", payment["Id"], "Void", at)
        return payment

    def delete_payment(self, payment_id: str, at: datetime) -> Deleted:
        """Gone from queries and reads (610); only CDC and webhooks tell."""
        payment = self._payment(payment_id)
        self._unapply(payment, at)
        self.tables["Payment"].remove(payment["Id"])
        stub = Deleted("Payment", payment["Id"], whole_second(at))
        self.deleted.append(stub)
        self.notify("Payment", payment["Id"], "Delete", at)
        return stub

    def last_payment_time(self) -> datetime | None:
        last = self.tables["Payment"].last_create_us()
        return None if last is None else datetime.fromtimestamp(0, self.tz) + timedelta(microseconds=last)


# --- the shapes of lines and references -------------------------------------------------------

# Which field holds what is still open on an invoice or a credit memo.
_OPEN_FIELD = {"Invoice": "Balance", "CreditMemo": "RemainingCredit"}
# Credit memos and sales receipts are neither printed nor e-mailed.
_NOT_SENT: Entity = {"ApplyTaxAfterDiscount": False, "PrintStatus": "NotSet", "EmailStatus": "NotSet"}


def payment_total(
    inv_amounts: Sequence[tuple[str, Decimal]],
    credit_amounts: Sequence[tuple[str, Decimal]],
    unapplied: Decimal,
    method: str | None,
) -> Decimal:
    """A payment's TotalAmt (Σ invoice lines − Σ credit lines + unapplied), refusing the totals QBO refuses."""
    if unapplied < 0:
        raise SandboxError("the unapplied amount cannot be negative")
    total = sum((a for _, a in inv_amounts), ZERO) - sum((a for _, a in credit_amounts), ZERO) + unapplied
    if total < 0:
        raise SandboxError(f"credits exceed the amounts applied: the payment total would be {total}")
    if not inv_amounts and not credit_amounts and unapplied == 0:
        raise SandboxError("a payment must apply to an invoice or credit memo, or carry an unapplied amount")
    if method is not None and not method.strip():
        raise SandboxError("a payment method needs a name")
    return total


def _set_open(entity: str, target: Entity, value: Decimal) -> None:
    """What is open on an invoice or credit memo; a credit memo's Balance follows its RemainingCredit."""
    target[_OPEN_FIELD[entity]] = value
    if entity == "CreditMemo":
        target["Balance"] = target["RemainingCredit"]


def _discount(subtotal: Decimal, percent: Decimal | None, amount: Decimal | None) -> tuple[Decimal, Entity] | None:
    """The Discount line's amount and detail, if any; a discount never makes the total negative."""
    if percent is not None:
        detail: Entity = {"PercentBased": True, "DiscountPercent": percent}
        discount = round_cents(subtotal * percent / 100)
    elif amount is not None:
        detail = {"PercentBased": False}
        discount = min(money(amount), subtotal)
    else:
        return None
    detail["DiscountAccountRef"] = dict(DISCOUNT_ACCOUNT)
    return discount, detail


def _tax(taxable: Decimal, percent: Decimal | None) -> tuple[Decimal, Entity]:
    """The tax on the taxable lines and the TxnTaxDetail that states it (TotalTax 0 when untaxed)."""
    if percent is None:
        return ZERO, {"TotalTax": ZERO}
    tax = round_cents(taxable * percent / 100)
    line = {
        "Amount": tax,
        "DetailType": "TaxLineDetail",
        "TaxLineDetail": {
            "TaxRateRef": {"value": "5"},
            "PercentBased": True,
            "TaxPercent": percent,
            "NetAmountTaxable": taxable,
        },
    }
    return tax, {"TxnTaxCodeRef": {"value": "3"}, "TotalTax": tax, "TaxLine": [line]}


def _manifest_field(manifest: str | None) -> Entity:
    """The company's custom field for the METRC manifest number (empty when the invoice has none)."""
    return {
        "DefinitionId": "1",
        "Name": "METRC Manifest",
        "Type": "StringType",
        **({"StringValue": manifest} if manifest else {}),
    }


def _bill_to(customer: Mapping[str, Any]) -> Entity:
    """An invoice goes to the customer's e-mail and is billed and shipped to its billing address."""
    out: Entity = {}
    if "PrimaryEmailAddr" in customer:
        out["BillEmail"] = dict(customer["PrimaryEmailAddr"])
    if "BillAddr" in customer:
        out["BillAddr"] = dict(customer["BillAddr"])
        out["ShipAddr"] = dict(customer["BillAddr"])
    return out


def _subtotal_line(subtotal: Decimal) -> Entity:
    return {"Amount": subtotal, "DetailType": "SubTotalLineDetail", "SubTotalLineDetail": {}}


def _customer_ref(customer_id: str, customer: Mapping[str, Any]) -> dict[str, str]:
    return {"value": customer_id, "name": customer["DisplayName"]}


def credit_customer(row: Mapping[str, Any]) -> str:
    """The customer an invoice or credit belongs to (a journal entry's or deposit's AR line names it)."""
    if "CustomerRef" in row:
        return str(row["CustomerRef"]["value"])
    for line in row.get("Line", []):
        detail = line.get("JournalEntryLineDetail") or line.get("DepositLineDetail") or {}
        entity = detail.get("Entity") or {}
        ref = entity.get("EntityRef") or entity
        if "value" in ref:
            return str(ref["value"])
    raise SandboxError(f"{row.get('Id')} names no customer")


def _deposit_account(method: str | None) -> dict[str, str]:
    """Bank transfers land in Checking; cash, checks and cards wait in Undeposited Funds."""
    return dict(CHECKING if method in ("ACH/EFT", "Wire Transfer") else UNDEPOSITED)


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
