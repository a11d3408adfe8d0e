"""The demo's own reading of QuickBooks' books, and the bookkeeper who changes them the next day.

`expected_cash` is what Green Check must hold, projected from the QBO sandbox's raw Intuit JSON by
the demo itself: the product's mapping is what is being checked, so it cannot be the yardstick.
`Bookkeeper` makes a bookkeeper's everyday corrections through the sandbox's control API (the
sandbox runs in another process), each as QuickBooks records it: a new SyncToken and
LastUpdatedTime, and the webhook Intuit sends."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import httpx

from qbo_operator.core.models import parse_rfc3339

Payment = Mapping[str, Any]


def to_cents(value: Any) -> int:
    """A QBO amount (a JSON number) as integer cents, rounded as Intuit rounds."""
    return int((Decimal(str(value)) * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def created(payment: Payment) -> datetime:
    return parse_rfc3339(payment["MetaData"]["CreateTime"])


def voided(payment: Payment) -> bool:
    """QuickBooks keeps a voided payment, zeroed, with "Voided" put before its private note."""
    note = str(payment.get("PrivateNote") or "")
    return note.startswith("Voided") and Decimal(str(payment["TotalAmt"])) == 0


def invoice_links(payment: Payment) -> list[str]:
    """The invoices the payment's lines name, in line order, each once."""
    ids = [
        str(link["TxnId"])
        for line in payment.get("Line") or []
        for link in line.get("LinkedTxn") or []
        if link.get("TxnType") == "Invoice"
    ]
    return list(dict.fromkeys(ids))


def invoices_only(payment: Payment) -> bool:
    """Every line of the payment settles an invoice: no credit is taken with it."""
    return all(
        link.get("TxnType") == "Invoice" for line in payment.get("Line") or [] for link in line.get("LinkedTxn") or []
    )


def payment_cash(payment: Payment) -> dict[str, int]:
    """invoice id → the cash (cents) this payment settled on it; {} when it settled no cash at all.

    A line linked to an Invoice is money owed being settled; a line linked to anything else (a credit
    memo, a deposit, a journal entry) is credit. The credit is taken by the invoices in the order the
    lines name them, each as much as it owes; what each invoice is still owed after that is cash."""
    owed: dict[str, int] = {}
    credit = 0
    for line in payment.get("Line") or []:
        links = line.get("LinkedTxn") or []
        for link in links:
            if link.get("TxnType") == "Invoice":
                owed[str(link["TxnId"])] = owed.get(str(link["TxnId"]), 0) + to_cents(line["Amount"])
        if any(link.get("TxnType") != "Invoice" for link in links):
            credit += to_cents(line["Amount"])
    cash: dict[str, int] = {}
    for invoice_id, amount in owed.items():
        taken = min(credit, max(amount, 0))
        credit -= taken
        cash[invoice_id] = amount - taken
    return cash if any(cash.values()) else {}


def expected_cash(realm: str, payments: Iterable[Payment], connected_at: datetime) -> dict[str, int]:
    """external id → cash (cents): every record Green Check must hold now for these books.

    Only payments created at or after the connection and not voided count; a deleted payment is simply
    absent from the books, and QuickBooks unlinks the payments of a deleted invoice."""
    return {
        f"qbo:{realm}:payment:{p['Id']}:invoice:{invoice_id}": cents
        for p in payments
        if created(p) >= connected_at and not voided(p)
        for invoice_id, cents in payment_cash(p).items()
    }


def payment_of(external_id: str) -> str:
    """The QBO payment id inside a record's external id (`qbo:{realm}:payment:{id}:invoice:{id}`)."""
    return external_id.split(":payment:")[-1].split(":")[0]


@dataclass(frozen=True)
class Comparison:
    """Green Check's current records against the projection; `misstated` are held with the wrong cash."""

    expected: int
    delivered: int
    missing: list[str]
    unexpected: list[str]
    duplicated: int
    misstated: list[str]

    @property
    def exact(self) -> bool:
        return not (self.missing or self.unexpected or self.duplicated or self.misstated)

    def line(self) -> str:
        return (
            f"expected={self.expected} delivered={self.delivered} missing={len(self.missing)} "
            f"unexpected={len(self.unexpected)} duplicated={self.duplicated} misstated={len(self.misstated)}"
        )


def compare(expected: Mapping[str, int], held: Iterable[tuple[str, int]]) -> Comparison:
    """`held` is (external id, cash in cents) per record Green Check's read-back returned."""
    rows = list(held)
    got: dict[str, int] = dict(rows)
    return Comparison(
        expected=len(expected),
        delivered=len(rows),
        missing=sorted(set(expected) - set(got)),
        unexpected=sorted(set(got) - set(expected)),
        duplicated=len(rows) - len(got),
        misstated=sorted(k for k in set(expected) & set(got) if expected[k] != got[k]),
    )


class Bookkeeper:
    """A person at the company correcting QuickBooks, through the QBO sandbox's control API."""

    def __init__(self, qbo_url: str, realm: str) -> None:
        self.base = f"{qbo_url}/_sandbox/companies/{realm}"

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        resp = httpx.request(method, f"{self.base}{path}", json=body, timeout=60)
        if resp.status_code >= 400:
            raise RuntimeError(f"the QBO sandbox refused {method} {path}: {resp.text[:300]}")
        answer: dict[str, Any] = resp.json()
        return answer

    def payments(self) -> list[dict[str, Any]]:
        return self._all("payments")

    def invoices(self) -> list[dict[str, Any]]:
        return self._all("invoices")

    def _all(self, key: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        while True:
            page = self._call("GET", f"/{key}?offset={len(rows)}&limit=1000")
            rows.extend(page[key])
            if not page[key] or len(rows) >= page["total"]:
                return rows

    def prepayment(self, customer_id: str, amount: Decimal) -> dict[str, Any]:
        """A cheque that arrives before its invoice is raised: a payment applied to nothing."""
        body = {"customer_id": customer_id, "unapplied": str(amount), "method": "Check"}
        payment: dict[str, Any] = self._call("POST", "/payments", body)["payment"]
        return payment

    def invoice(self, customer_id: str, amount: Decimal) -> dict[str, Any]:
        invoice: dict[str, Any] = self._call("POST", "/invoices", {"customer_id": customer_id, "amount": str(amount)})[
            "invoice"
        ]
        return invoice

    def apply(self, payment_id: str, invoices: list[tuple[str, Decimal]], total: Decimal | None = None) -> None:
        """Replace the payment's invoice links (and its total, when given): applied later, corrected."""
        body: dict[str, Any] = {"invoices": [[i, str(a)] for i, a in invoices]}
        if total is not None:
            body["total"] = str(total)
        self._call("PATCH", f"/payments/{payment_id}", body)

    def void(self, payment_id: str) -> None:
        self._call("POST", f"/payments/{payment_id}/void")
