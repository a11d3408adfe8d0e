"""Seeded data for the QBO sandbox's companies: a cannabis wholesaler's books, reproducibly.

Stores as customers, flower, pre-rolls, carts and edibles as items, invoices with discounts,
subtotals, tax and notes, and a realistic mix of payments (mostly one invoice; split, partial,
over-payments with an unapplied remainder, credit-memo applications, credit-only, fully unapplied,
voided and deleted ones, prepayments applied to an invoice days later), plus sales receipts that a
sync must ignore. Every write goes through the `Company` of `qbo_store`, so the books stay
consistent. Same seed and clock, same data: the demo, the benchmarks and the tests rely on it."""

from __future__ import annotations

import heapq
import itertools
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import Any

from qbo_operator.harness.sandbox import qbo_changes
from qbo_operator.harness.sandbox.qbo_query import to_micros
from qbo_operator.harness.sandbox.qbo_store import Company
from qbo_operator.harness.sandbox.qbo_values import (
    CAD,
    CENT,
    COGS_ACCOUNT,
    PACIFIC,
    TERMS,
    ZERO,
    Entity,
    SandboxError,
    money,
    round_cents,
    whole_second,
)

# --- what a wholesaler sells, to whom, and how it is paid -----------------------------------------

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


@dataclass(frozen=True)
class _Tender:
    """How a payment was made: method, reference number and note (any may be None)."""

    method: str | None
    ref_num: str | None
    private_note: str | None


class Generator:
    """Seeded realistic data for one company. All randomness comes from `self.rng`."""

    def __init__(self, company: Company, seed: int | str) -> None:
        self.company = company
        self.rng = random.Random(seed)
        self._products: list[Entity] = []
        self._extras: dict[str, str] = {}
        self.old_methods = False  # history: a few payments use a method made inactive since

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
            if self.company.multicurrency and created % 4 == 3:
                fields["CurrencyRef"] = dict(CAD)
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
                        "PurchaseCost": money(round_cents(price * Decimal("0.55"))),
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
            (item_id, max(Decimal(1), round_cents(qty / rng.choice((4, 6, 10))).to_integral_value()))
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
        if self.old_methods and method == "Visa" and rng.random() < 0.5:
            method = "Old Card"
        ref: str | None
        if method == "Check":
            ref = str(rng.randrange(1001, 9999))
        elif method == "ACH/EFT":
            ref = f"ACH{rng.randrange(10**8, 10**9)}"
        elif method == "Wire Transfer":
            ref = f"FED{rng.randrange(10**10, 10**11)}"
        elif method in ("Visa", "MasterCard", "Debit", "Old Card"):
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
            if memo_id not in company.credit_memos:  # a bookkeeper's journal entry or deposit: not a memo
                continue
            if company.tables["CreditMemo"].created_of(company.credit_memos[memo_id]) < at_us:
                return memo_id, company.credit_memos[memo_id]["RemainingCredit"]
        created = at - timedelta(days=self.rng.uniform(0.5, 20))
        memo = self.credit_memo(customer_id, created.replace(microsecond=0))
        return str(memo["Id"]), memo["RemainingCredit"]

    def payment(self, at: datetime, kind: str, reuse: float = 0.5) -> Entity:
        """One payment of the given kind at `at` (see KIND_WEIGHTS)."""
        rng = self.rng
        customer_id = rng.choice(list(self.company.customers))
        method: str | None
        method, ref = self._method()
        note = rng.choice(_NOTES) if rng.random() < 0.15 else None
        if kind == "no_method":
            method, ref = None, None
        if kind == "unapplied":
            amount = money(Decimal(rng.randrange(100, 2000)) * 5)
            tender = _Tender(method, ref, note or "Prepayment for next order")
            return self._receive(at, tender, customer_id=customer_id, unapplied=amount)
        if kind in ("credit_only", "with_credit", "zero_after_credit"):
            return self._credit_payment(at, kind, customer_id, reuse, _Tender(method, ref, note))
        return self._invoice_payment(at, kind, customer_id, reuse, _Tender(method, ref, note))

    def _receive(self, at: datetime, tender: _Tender, **applied: Any) -> Entity:
        return self.company.add_payment(
            at, method=tender.method, ref_num=tender.ref_num, private_note=tender.private_note, **applied
        )

    def _credit_payment(self, at: datetime, kind: str, customer_id: str, reuse: float, tender: _Tender) -> Entity:
        """A payment that uses a credit memo: only the credit (it turns into an unapplied amount, TotalAmt 0),
        a $0 payment that still settles (part of) an invoice with the credit, or an invoice paid partly by it."""
        memo_id, credit = self._credit_for(customer_id, at)
        if kind == "credit_only":
            return self._receive(at, tender, credits=[(memo_id, credit)], unapplied=credit)
        inv_id = self._open_invoice(customer_id, at, reuse)
        balance: Decimal = self.company.invoices[inv_id]["Balance"]
        if kind == "zero_after_credit":
            applied = min(credit, balance)
            tender = _Tender(None, None, "Credit applied")
            return self._receive(at, tender, invoices=[(inv_id, applied)], credits=[(memo_id, applied)])
        applied_credit = min(credit, max(CENT, round_cents(balance / 2)))
        return self._receive(at, tender, invoices=[(inv_id, balance)], credits=[(memo_id, applied_credit)])

    def _invoice_payment(self, at: datetime, kind: str, customer_id: str, reuse: float, tender: _Tender) -> Entity:
        """Open invoices paid in full, in part, several at once, or over-paid (the rest left unapplied)."""
        rng = self.rng
        company = self.company
        applications: list[tuple[str, Decimal]] = []
        for _ in range(rng.choice((2, 2, 3)) if kind == "split" else 1):
            taken = {i for i, _ in applications}
            inv_id = self._open_invoice(customer_id, at, reuse, exclude=taken)
            applications.append((inv_id, company.invoices[inv_id]["Balance"]))
        if kind == "partial" or (kind == "split" and rng.random() < 0.3):
            inv_id, balance = applications[-1]
            part = round_cents(balance * Decimal(rng.randint(20, 80)) / 100)
            applications[-1] = (inv_id, part if part > 0 else balance)
        unapplied = ZERO
        if kind == "overpay":
            # The customer rounds up to the next hundred; the rest stays unapplied.
            total = sum((a for _, a in applications), ZERO)
            unapplied = money((total / 100).to_integral_value(rounding=ROUND_CEILING) * 100 - total) or money(20)
        return self._receive(at, tender, invoices=applications, unapplied=unapplied)

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
    company.add_payment_methods(company.created_at)
    gen.old_methods = True
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
            _apply_later(gen, action, pay_id, when)
        kind = gen.kind()
        payment = gen.payment(at, "full" if kind == "void" else kind, reuse=0.6)
        if kind == "void" or n in delete_at:
            delay = timedelta(minutes=rng.uniform(10, 3 * 24 * 60))
            when = min(at + delay, now - timedelta(minutes=1)).replace(microsecond=0)
            heapq.heappush(later, (when, n, "delete" if n in delete_at else "void", payment["Id"]))
        elif kind == "unapplied" and rng.random() < 0.5:  # a prepayment the bookkeeper applies days later
            when = min(at + timedelta(hours=rng.uniform(2, 120)), now - timedelta(minutes=1)).replace(microsecond=0)
            heapq.heappush(later, (when, n, "apply", payment["Id"]))
        if receipts and receipts[0] == n:
            receipts.pop(0)
            gen.sales_receipt(at + timedelta(seconds=rng.randrange(1, 600)))
    while later:
        when, _, action, pay_id = heapq.heappop(later)
        _apply_later(gen, action, pay_id, when)
    # Open receivables: invoices nobody has paid yet, and a standalone credit memo or two.
    customers = list(company.customers)
    for _ in range(max(3, payments // 10)):
        at = now - timedelta(days=rng.uniform(0.2, 30))
        gen.invoice(rng.choice(customers), at.replace(microsecond=0))
    for _ in range(max(1, payments // 100)):
        at = now - timedelta(days=rng.uniform(0.2, 30))
        gen.credit_memo(rng.choice(customers), at.replace(microsecond=0))


def _apply_later(gen: Generator, action: str, pay_id: str, when: datetime) -> None:
    """What a bookkeeper does to a payment after the fact: void, delete, or apply its unapplied amount."""
    company = gen.company
    payment = company.payments.get(pay_id)
    if payment is None or pay_id in company.voided:
        return
    if action == "void":
        company.void_payment(pay_id, when)
    elif action == "delete":
        company.delete_payment(pay_id, when)
    elif payment["UnappliedAmt"] > 0:
        inv_id = gen._open_invoice(payment["CustomerRef"]["value"], when, reuse=0.8)
        amount = min(payment["UnappliedAmt"], company.invoices[inv_id]["Balance"])
        qbo_changes.update_payment(company, pay_id, when, invoices=[(inv_id, amount)])


def _earliest(company: Company) -> datetime | None:
    """The first whole second a new payment may have: not before the newest payment, and strictly after
    the latest consent (so after the gateway's `connectedAt`, whatever its fraction)."""
    floors: list[datetime] = []
    last = company.last_payment_time()
    if last is not None:
        floors.append(last)
    if company.not_before is not None:
        floors.append(whole_second(company.not_before) + timedelta(seconds=1))
    return max(floors, default=None)


def new_payment_times(company: Company, n: int, now: datetime, seconds: int = 60) -> list[datetime]:
    """n non-decreasing whole-second instants spread up to `now`, over the last `seconds` or since the
    earliest allowed second if that is later. Intuit's MetaData has whole seconds, so many payments
    share one second (as a bookkeeper's batch import does)."""
    lo = whole_second(now) - timedelta(seconds=seconds)
    earliest = _earliest(company)
    if earliest is not None and earliest > lo:
        lo = earliest
    span = max(0, int((whole_second(now) - lo).total_seconds()))
    return [lo + timedelta(seconds=1 + span * i // n) for i in range(n)] if span else [lo] * n


def next_payment_time(company: Company, now: datetime) -> datetime:
    """When a payment made now is created: now (whole seconds), unless that is before the newest payment
    or not after the consent."""
    at = whole_second(now)
    earliest = _earliest(company)
    return at if earliest is None or at >= earliest else earliest


def generate_new_payments(company: Company, seed: int | str, n: int, now: datetime, seconds: int = 60) -> list[Entity]:
    """n new payments created over the last `seconds` in a realistic mix, plus the odd sales receipt;
    returns them as they stand afterwards (some voided). Voids happen at the end of the window."""
    if n < 0:
        raise SandboxError("n must not be negative")
    if not company.customers or not company.items:
        raise SandboxError(f"company {company.realm_id} has no customers or items to bill")
    gen = Generator(company, f"new:{seed}")
    rng = gen.rng
    times = new_payment_times(company, n, now, seconds)
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


def realm_id_for(name: str, seed: int, taken: Iterable[str]) -> str:
    """A 16-digit realm id derived from name and seed (stable across runs), unique in `taken`."""
    used = set(taken)
    rng = random.Random(f"realm:{name}:{seed}")
    while True:
        realm = f"9130{rng.randrange(10**11, 10**12)}"
        if realm not in used:
            return realm
