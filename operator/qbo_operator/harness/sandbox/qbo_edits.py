"""`QboSandbox`'s Python API for what bookkeepers change after the fact (issue #15), as a mixin.

Each method takes the sandbox's lock, works at the sandbox's `now()` and goes through
`qbo_changes` (or the store), so the books stay consistent and the company's listeners send the
webhooks Intuit sends. Kept apart from `qbo.py`, which holds the server, OAuth and state."""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, cast

from qbo_operator.harness.sandbox import qbo_bookkeeper, qbo_changes
from qbo_operator.harness.sandbox.qbo_changes import CreditKind, InvoiceLine
from qbo_operator.harness.sandbox.qbo_generator import next_payment_time
from qbo_operator.harness.sandbox.qbo_store import Company
from qbo_operator.harness.sandbox.qbo_values import Entity, Money

if TYPE_CHECKING:
    from qbo_operator.harness.sandbox.qbo import QboSandbox


class Bookkeeping:
    """Payments applied later, moved and corrected; invoices edited, voided, deleted; credits applied."""

    lock: threading.RLock

    def now(self) -> datetime:
        raise NotImplementedError

    def company(self, realm_id: str) -> Company:
        raise NotImplementedError

    def update_payment(
        self,
        realm_id: str,
        payment_id: str,
        *,
        invoices: Sequence[tuple[str, Money]] | None = None,
        credits: Sequence[tuple[str, Money]] | None = None,
        total: Money | None = None,
        txn_date: str | None = None,
        ref_num: str | None = None,
        method: str | None = None,
    ) -> Entity:
        """Apply an unapplied payment later, move it, add or remove an invoice, correct amounts (None keeps
        a value; `invoices`/`credits` replace the links; UnappliedAmt = TotalAmt − Σ invoices + Σ credits)."""
        with self.lock:
            return qbo_changes.update_payment(
                self.company(realm_id), str(payment_id), self.now(), invoices=invoices, credits=credits,
                total=total, txn_date=txn_date, ref_num=ref_num, method=method,
            )  # fmt: skip

    def create_invoice(
        self,
        realm_id: str,
        *,
        customer_id: str | None = None,
        amount: Money | None = None,
        lines: Sequence[InvoiceLine] | None = None,
        doc_number: str | None = None,
        txn_date: str | None = None,
    ) -> Entity:
        """A new invoice now: lines are (item id or None, qty, unit price); `amount` is one line."""
        with self.lock:
            return qbo_changes.create_invoice(
                self.company(realm_id), self.now(), customer_id=customer_id, amount=amount, lines=lines,
                doc_number=doc_number, txn_date=txn_date,
            )  # fmt: skip

    def update_invoice(
        self,
        realm_id: str,
        invoice_id: str,
        *,
        amount: Money | None = None,
        lines: Sequence[InvoiceLine] | None = None,
        doc_number: str | None = None,
        txn_date: str | None = None,
        customer_memo: str | None = None,
    ) -> Entity:
        """Edit an invoice; Balance = TotalAmt − applied, and a total below what is applied is refused."""
        with self.lock:
            return qbo_changes.update_invoice(
                self.company(realm_id), str(invoice_id), self.now(), amount=amount, lines=lines,
                doc_number=doc_number, txn_date=txn_date, customer_memo=customer_memo,
            )  # fmt: skip

    def void_invoice(self, realm_id: str, invoice_id: str) -> Entity:
        """Zero the invoice (still queryable) after unlinking its payments, which keep their TotalAmt."""
        with self.lock:
            return qbo_changes.void_invoice(self.company(realm_id), str(invoice_id), self.now())

    def delete_invoice(self, realm_id: str, invoice_id: str) -> None:
        """Delete the invoice (610 on read, a CDC stub) after unlinking its payments."""
        with self.lock:
            qbo_changes.delete_invoice(self.company(realm_id), str(invoice_id), self.now())

    def create_credit(self, realm_id: str, kind: CreditKind, *, customer_id: str, amount: Money) -> Entity:
        """An open credit for the customer: a CreditMemo, or a JournalEntry or Deposit crediting its A/R."""
        with self.lock:
            return qbo_changes.create_credit(
                self.company(realm_id), kind, self.now(), customer_id=str(customer_id), amount=amount
            )

    def auto_apply_credit(self, realm_id: str, invoice_id: str, credit_id: str, amount: Money | None = None) -> Entity:
        """QBO's "Automatically apply credits": a $0 payment linking the invoice and the credit, same amount
        (default: the smaller of the invoice's balance and the credit left)."""
        with self.lock:
            company = self.company(realm_id)
            value = qbo_changes.auto_apply_amount(company, str(invoice_id), str(credit_id), amount)
            return company.add_payment(
                next_payment_time(company, self.now()),
                invoices=[(str(invoice_id), value)],
                credits=[(str(credit_id), value)],
                method=None,
            )

    def bookkeep(self, realm_id: str, seed: int, changes: int) -> list[str]:
        """A seeded random bookkeeper's day (`qbo_bookkeeper.bookkeeping_day`); returns what it did."""
        sb = cast("QboSandbox", self)
        return qbo_bookkeeper.bookkeeping_day(sb, realm_id, random.Random(seed), changes)
