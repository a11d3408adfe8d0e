"""What one night asks of QuickBooks, counted by the bench itself: the lower bound for the sync's window.

The sync reads what changed since its window's start (docs/sync.md): one CDC call for payments and invoices,
which is the whole change set when it holds fewer than Intuit's 1,000 objects; otherwise keyset queries on
`Metadata.LastUpdatedTime` for changed invoices and changed payments, where a full last page costs one more
query to prove it was the last (issue #20). The invoices its payments link that were not read as changes are
read in bulk, 1,000 ids a query, and the company's PaymentMethod list once when a payment to deliver names its
method only by id (Intuit's PaymentMethodRef carries no name).

The census is taken before any measured run, from the sandbox's raw Intuit JSON (payments through the
unmetered control API, invoices through the Accounting API on the bench's own grant): the counts it gives are
the bench's, never the measured client's. `expected_record_ids` is the money-is-cash projection written from
that JSON without the product's mapping, so `records_delivered` compares the sync with an independent rule."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from qbo_operator.core.models import parse_rfc3339

PAGE = 1000  # Intuit's MAXRESULTS cap and the most ids one `Id IN (…)` read names
CDC_CAP = 1000  # objects in one CDC answer across its entities: fewer means the answer holds them all

Json = dict[str, Any]


@dataclass(frozen=True)
class Bound:
    """The fewest metered QBO requests a correct client makes for one night, and how they add up."""

    requests: int
    formula: str


def qbo_lower_bound(
    payments: int, changed_invoices: int, invoice_reads: int, cdc_objects: int, method_list: bool
) -> Bound:
    """The lower bound for a night: `payments` (P) changed payments in scope, `changed_invoices` (C),
    `invoice_reads` (I) linked invoices not read as changes, `cdc_objects` what one CDC answer would hold.

    CDC below its cap: 1 CDC + ⌈I/1000⌉. Otherwise 1 CDC (deletes) + ⌈(P + 1)/1000⌉ + ⌈(C + 1)/1000⌉ keyset
    pages + ⌈I/1000⌉. Either way + 1 PaymentMethod query when `method_list`."""
    reads = math.ceil(invoice_reads / PAGE)
    methods = 1 if method_list else 0
    tail = f" + ⌈{invoice_reads}/1000⌉" + (" + 1 PaymentMethod list" if methods else "")
    if cdc_objects < CDC_CAP:
        return Bound(1 + reads + methods, f"1 CDC ({cdc_objects} objects < 1,000){tail}")
    pages = math.ceil((payments + 1) / PAGE) + math.ceil((changed_invoices + 1) / PAGE)
    return Bound(
        1 + pages + reads + methods,
        f"1 CDC + ⌈({payments} + 1)/1000⌉ payment pages + ⌈({changed_invoices} + 1)/1000⌉ invoice pages{tail}",
    )


@dataclass
class Census:
    """One night of one company, as the bench counts it (module docstring)."""

    since: datetime  # the window's start
    connected_at: datetime
    payments: int = 0  # P: changed since `since`, created since connectedAt (one payment set each)
    changed_payments: int = 0  # every payment changed since `since` (what CDC returns)
    changed_invoices: list[str] = field(default_factory=list)  # C
    invoice_reads: list[str] = field(default_factory=list)  # I: linked, not read as changes
    linked_invoices: int = 0  # distinct invoices the in-scope payments link
    expected_records: int = 0
    method_list: bool = False

    @property
    def bound(self) -> Bound:
        cdc = self.changed_payments + len(self.changed_invoices)
        return qbo_lower_bound(
            self.payments, len(self.changed_invoices), len(self.invoice_reads), cdc, self.method_list
        )


def cents(value: Any) -> int:
    return int((Decimal(str(value)) * 100).to_integral_value())


def _voided(payment: Json) -> bool:
    return str(payment.get("PrivateNote", "")).startswith("Voided") and Decimal(str(payment["TotalAmt"])) == 0


def linked_invoices(payment: Json) -> list[str]:
    """Invoice ids the payment's lines link, in line order, once each."""
    ids = [
        str(link["TxnId"])
        for line in payment.get("Line", [])
        for link in line.get("LinkedTxn", [])
        if link.get("TxnType") == "Invoice"
    ]
    return list(dict.fromkeys(ids))


def expected_record_ids(payment: Json, invoices: Mapping[str, Json]) -> list[str]:
    """Invoice ids Green Check must hold a record of for this (in-scope) payment: none when voided or when no
    invoice receives cash (credits are taken by the invoices in line order); an invoice that is gone has none."""
    if _voided(payment):
        return []
    owed: dict[str, int] = {}
    credit = 0
    for line in payment.get("Line", []):
        links = line.get("LinkedTxn", [])
        for link in links:
            if link.get("TxnType") == "Invoice":
                owed[str(link["TxnId"])] = owed.get(str(link["TxnId"]), 0) + cents(line["Amount"])
        if {link.get("TxnType") for link in links} - {"Invoice"}:
            credit += cents(line["Amount"])
    cash: dict[str, int] = {}
    for invoice_id, amount in owed.items():
        take = min(credit, max(amount, 0))
        credit -= take
        cash[invoice_id] = amount - take
    if all(c == 0 for c in cash.values()):
        return []
    return [i for i in cash if i in invoices]


def count_payments(census: Census, payments: Iterable[Json]) -> list[Json]:
    """Counts the changed payments; returns those in scope (one payment set each), in the order given."""
    scope: list[Json] = []
    for p in payments:
        meta = p["MetaData"]
        if parse_rfc3339(meta["LastUpdatedTime"]) < census.since:
            continue
        census.changed_payments += 1
        if parse_rfc3339(meta["CreateTime"]) >= census.connected_at:
            scope.append(p)
    census.payments = len(scope)
    return scope


def finish(census: Census, scope: list[Json], invoices: Mapping[str, Json]) -> None:
    """The counts that need the invoices: records expected and whether the PaymentMethod list is needed."""
    for p in scope:
        ids = expected_record_ids(p, invoices)
        census.expected_records += len(ids)
        ref = p.get("PaymentMethodRef") or {}
        census.method_list |= bool(ids) and bool(ref.get("value")) and not ref.get("name")


def to_read(scope: Iterable[Json], changed: Iterable[str]) -> tuple[int, list[str]]:
    """Distinct invoices the in-scope payments that are not voided link, and those of them not changed."""
    seen: dict[str, None] = {}
    for p in scope:
        if not _voided(p):
            seen.update(dict.fromkeys(linked_invoices(p)))
    known = set(changed)
    return len(seen), [i for i in seen if i not in known]
