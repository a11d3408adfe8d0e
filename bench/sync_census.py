"""What one night asks of QuickBooks, counted by the bench itself: the lower bound for the sync's window.

A correct client must receive every payment CDC holds since the window's start — changed ones whatever their
creation time, and deleted ones as stubs, because deletes show only in CDC and CDC cannot filter on
CreateTime — and every changed invoice (it changes the records of the payments it lists). No answer holds
more than Intuit's 1,000 objects, and one answer must come back short to prove it was the last (issue #20), so
those N objects cost at least ⌈(N + 1)/1000⌉ requests, whatever mix of CDC calls and keyset queries reads
them; paging one CDC call for both entities forward from the newest change it answered reaches that count.
Then the invoices the payments link that were not read as changes, 1,000 ids a query; the payments in scope
that a changed invoice lists and that did not change themselves (none on a first night: every payment created
since connectedAt changed since it), 1,000 ids a query; and the company's PaymentMethod list once when a
payment to deliver names its method only by id (Intuit's PaymentMethodRef carries no name).

The census is taken before any measured run, from the sandbox's raw Intuit JSON (payments through the
unmetered control API, invoices and deleted payments through the Accounting API on the bench's own grant): the
counts it gives are the bench's, never the measured client's. `expected_record_ids` is the money-is-cash
projection written from that JSON without the product's mapping, so `records_delivered` compares the sync
with an independent rule."""

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
    payment_objects: int, changed_invoices: int, invoice_reads: int, payment_reads: int, method_list: bool
) -> Bound:
    """The lower bound for a night (module docstring): `payment_objects` every payment CDC holds since the
    window's start (changed or deleted), `changed_invoices` (C), `invoice_reads` (I) linked invoices not read
    as changes, `payment_reads` (L) payments in scope a changed invoice lists that did not change.

    ⌈(payment objects + C + 1)/1000⌉ + ⌈I/1000⌉ + ⌈L/1000⌉, + 1 PaymentMethod query when `method_list`. A quiet
    night is one CDC call."""
    changes = math.ceil((payment_objects + changed_invoices + 1) / PAGE)
    reads = math.ceil(invoice_reads / PAGE)
    again = math.ceil(payment_reads / PAGE)
    methods = 1 if method_list else 0
    formula = (
        f"⌈({payment_objects} payment objects + {changed_invoices} changed invoices + 1)/1000⌉ changes"
        f" + ⌈{invoice_reads}/1000⌉ invoice reads"
        + (f" + ⌈{payment_reads}/1000⌉ payment reads" if payment_reads else "")
        + (" + 1 PaymentMethod list" if methods else "")
    )
    return Bound(changes + reads + again + methods, formula)


@dataclass
class Census:
    """One night of one company, as the bench counts it (module docstring)."""

    since: datetime  # the window's start
    connected_at: datetime
    payments: int = 0  # P: changed since `since`, created since connectedAt (one payment set each)
    changed_payments: int = 0  # every payment changed since `since`, whatever its creation time
    deleted_payments: int = 0  # payments deleted since `since` (CDC's stubs)
    changed_invoices: list[str] = field(default_factory=list)  # C
    invoice_reads: list[str] = field(default_factory=list)  # I: linked, not read as changes
    payment_reads: list[str] = field(default_factory=list)  # L: in scope, listed by a changed invoice, unchanged
    linked_invoices: int = 0  # distinct invoices the in-scope payments link
    expected_records: int = 0
    method_list: bool = False
    unchanged_in_scope: set[str] = field(default_factory=set)  # payment ids created since connectedAt, unchanged
    # Payments created before connectedAt that a changed invoice lists: out of scope, so not in the bound, but a
    # client that has not kept their creation times reads them to know (bench/README.md, measure 5).
    before_connection: set[str] = field(default_factory=set)
    unchanged_before_connection: set[str] = field(default_factory=set)
    listed_before_connection: list[str] = field(default_factory=list)
    unnamed_method: bool = False  # a changed payment names its method by id only (delivering a record or not)

    @property
    def payment_objects(self) -> int:
        """Payment objects CDC holds since `since`: every changed payment and every deleted one."""
        return self.changed_payments + self.deleted_payments

    @property
    def bound(self) -> Bound:
        return qbo_lower_bound(
            self.payment_objects,
            len(self.changed_invoices),
            len(self.invoice_reads),
            len(self.payment_reads),
            self.method_list,
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
    """Counts the changed payments; returns those in scope (one payment set each), in the order given. Also
    notes the payments in scope that did not change (`unchanged_in_scope`), which a changed invoice may list."""
    scope: list[Json] = []
    census.unchanged_in_scope = set()
    census.before_connection = set()
    census.unchanged_before_connection = set()
    for p in payments:
        meta = p["MetaData"]
        in_scope = parse_rfc3339(meta["CreateTime"]) >= census.connected_at
        if not in_scope:
            census.before_connection.add(str(p["Id"]))
        if parse_rfc3339(meta["LastUpdatedTime"]) < census.since:
            if in_scope:
                census.unchanged_in_scope.add(str(p["Id"]))
            else:
                census.unchanged_before_connection.add(str(p["Id"]))
            continue
        census.changed_payments += 1
        ref = p.get("PaymentMethodRef") or {}
        census.unnamed_method |= bool(ref.get("value")) and not ref.get("name")
        if in_scope:
            scope.append(p)
    census.payments = len(scope)
    return scope


def payments_to_read(census: Census, changed_invoices: Iterable[Json]) -> list[str]:
    """L: payments a changed invoice lists that did not change. Those in scope carry the invoice in their records,
    so a correct client reads them again; one created before the connection can be told apart only by its
    CreateTime, which is on the payment, so a client that keeps no state per payment reads it too. Except on a
    first night: every payment in scope changed since the connection, so what is listed and unchanged is out of
    scope and needs no read."""
    listed = [
        str(link["TxnId"])
        for invoice in changed_invoices
        for link in invoice.get("LinkedTxn", [])
        if link.get("TxnType") == "Payment"
    ]
    census.listed_before_connection = [i for i in dict.fromkeys(listed) if i in census.before_connection]
    later = census.since > census.connected_at
    unchanged = census.unchanged_in_scope | (census.unchanged_before_connection if later else set())
    return [i for i in dict.fromkeys(listed) if i in unchanged]


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
