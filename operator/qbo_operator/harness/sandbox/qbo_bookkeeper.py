"""A seeded random bookkeeper: a day of the changes people make to QuickBooks' books (issue #15).

`bookkeeping_day` draws `changes` operations — new invoices and payments, prepayments applied
later, payments moved, extended, corrected, voided and deleted, invoices edited, voided and
deleted, credits auto-applied or taken with cash — and performs each through `QboSandbox`'s
public API, so webhooks fire and the books stay consistent. Only valid operations are drawn: an
operation without a candidate (no unapplied payment to apply, say) is skipped for another. Same
seed and same books, same day: model-based tests, the demo and the benchmarks replay it."""

from __future__ import annotations

import random
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING

from qbo_operator.harness.sandbox.qbo_changes import CreditKind, payment_links
from qbo_operator.harness.sandbox.qbo_store import Company
from qbo_operator.harness.sandbox.qbo_values import CENT, Entity, round_cents

if TYPE_CHECKING:
    from qbo_operator.harness.sandbox.qbo import QboSandbox

_Op = Callable[["_Day"], str | None]
_CREDIT_KINDS: tuple[CreditKind, ...] = ("CreditMemo", "JournalEntry", "Deposit")
_TRIES = 12  # draws per change before giving up on a day with nothing left to change


class _Day:
    """One bookkeeper's session on one company: the sandbox, the realm and the dice."""

    def __init__(self, sb: QboSandbox, realm_id: str, rng: random.Random) -> None:
        self.sb = sb
        self.realm = realm_id
        self.rng = rng

    @property
    def company(self) -> Company:
        return self.sb.company(self.realm)

    def amount(self, low: int = 50, high: int = 3000) -> Decimal:
        return Decimal(self.rng.randrange(low * 100, high * 100)) / 100

    def part(self, whole: Decimal) -> Decimal:
        """Some of `whole` (at least a cent, at most all of it)."""
        return min(whole, max(CENT, round_cents(whole * Decimal(self.rng.randint(20, 100)) / 100)))

    def pick(self, rows: list[Entity]) -> Entity | None:
        return self.rng.choice(rows) if rows else None

    def open_invoices(self, customer_id: str | None = None, exclude: frozenset[str] = frozenset()) -> list[Entity]:
        voided = self.company.voided
        return [
            i
            for i in self.company.invoices.values()
            if i["Balance"] > 0 and i["Id"] not in voided and i["Id"] not in exclude
            and (customer_id is None or i["CustomerRef"]["value"] == customer_id)
        ]  # fmt: skip

    def live_payments(self, test: Callable[[Entity], bool] = lambda p: True) -> list[Entity]:
        voided = self.company.voided
        return [p for p in self.company.payments.values() if p["Id"] not in voided and test(p)]

    def method(self) -> str:
        active = [m["Name"] for m in self.company.payment_methods.values() if m["Active"]]
        return self.rng.choice(sorted(active)) if active else "Check"


def _invoices_of(payment: Entity) -> dict[str, Decimal]:
    return {txn_id: a for (entity, txn_id), a in payment_links(payment).items() if entity == "Invoice"}


def _credits_of(payment: Entity) -> list[tuple[str, Decimal]]:
    return [(txn_id, a) for (entity, txn_id), a in payment_links(payment).items() if entity != "Invoice"]


# --- the operations -----------------------------------------------------------------------------


def new_invoice(day: _Day) -> str | None:
    customer = day.pick(list(day.company.customers.values()))
    if customer is None:
        return None
    inv = day.sb.create_invoice(day.realm, customer_id=customer["Id"], amount=day.amount())
    return f"new invoice {inv['Id']} for customer {customer['Id']}: {inv['TotalAmt']}"


def pay_now(day: _Day) -> str | None:
    inv = day.pick(day.open_invoices())
    if inv is None:
        return None
    amount = inv["Balance"] if day.rng.random() < 0.7 else day.part(inv["Balance"])
    pay = day.sb.create_payment(day.realm, [inv["Id"]], [amount], day.method())
    return f"new payment {pay['Id']} of {amount} applied to invoice {inv['Id']}"


def prepayment(day: _Day) -> str | None:
    customer = day.pick(list(day.company.customers.values()))
    if customer is None:
        return None
    pay = day.sb.create_payment(day.realm, customer_id=customer["Id"], unapplied=day.amount(), method=day.method())
    return f"new unapplied payment {pay['Id']} of {pay['TotalAmt']} from customer {customer['Id']}"


def apply_later(day: _Day) -> str | None:
    pay = day.pick(day.live_payments(lambda p: p["UnappliedAmt"] > 0))
    if pay is None:
        return None
    applied = _invoices_of(pay)
    inv = day.pick(day.open_invoices(pay["CustomerRef"]["value"], frozenset(applied)))
    if inv is None:
        return None
    amount = min(pay["UnappliedAmt"], inv["Balance"])
    day.sb.update_payment(day.realm, pay["Id"], invoices=[*applied.items(), (inv["Id"], amount)])
    return f"applied {amount} of payment {pay['Id']} to invoice {inv['Id']} later"


def move(day: _Day) -> str | None:
    pay = day.pick(day.live_payments(lambda p: len(_invoices_of(p)) == 1))
    if pay is None:
        return None
    ((old_id, amount),) = _invoices_of(pay).items()
    target = day.pick(day.open_invoices(pay["CustomerRef"]["value"], frozenset({old_id})))
    if target is None:
        return None
    moved = min(amount, target["Balance"])
    day.sb.update_payment(day.realm, pay["Id"], invoices=[(target["Id"], moved)])
    return f"moved payment {pay['Id']} from invoice {old_id} to invoice {target['Id']} ({moved})"


def add_invoice(day: _Day) -> str | None:
    pay = day.pick(day.live_payments(lambda p: bool(_invoices_of(p))))
    if pay is None:
        return None
    applied = _invoices_of(pay)
    inv = day.pick(day.open_invoices(pay["CustomerRef"]["value"], frozenset(applied)))
    if inv is None:
        return None
    amount = day.part(inv["Balance"])
    day.sb.update_payment(
        day.realm, pay["Id"], invoices=[*applied.items(), (inv["Id"], amount)], total=pay["TotalAmt"] + amount
    )
    return f"added invoice {inv['Id']} ({amount}) to payment {pay['Id']}"


def correct_amount(day: _Day) -> str | None:
    pay = day.pick(day.live_payments(lambda p: bool(_invoices_of(p)) and not _credits_of(p)))
    if pay is None:
        return None
    applied = _invoices_of(pay)
    inv_id, old = next(iter(applied.items()))
    available = old + day.company.invoices[inv_id]["Balance"]
    new = day.part(available)
    if new == old:
        return None
    applied[inv_id] = new
    day.sb.update_payment(day.realm, pay["Id"], invoices=list(applied.items()), total=pay["TotalAmt"] - old + new)
    return f"corrected payment {pay['Id']} on invoice {inv_id}: {old} -> {new}"


def void_payment(day: _Day) -> str | None:
    pay = day.pick(day.live_payments())
    if pay is None:
        return None
    day.sb.void_payment(day.realm, pay["Id"])
    return f"voided payment {pay['Id']}"


def delete_payment(day: _Day) -> str | None:
    pay = day.pick(list(day.company.payments.values()))
    if pay is None:
        return None
    day.sb.delete_payment(day.realm, pay["Id"])
    return f"deleted payment {pay['Id']}"


def edit_invoice(day: _Day) -> str | None:
    inv = day.pick([i for i in day.company.invoices.values() if i["Id"] not in day.company.voided])
    if inv is None:
        return None
    what = day.rng.choice(("number", "amount", "memo"))
    if what == "number":
        day.sb.update_invoice(day.realm, inv["Id"], doc_number=f"{inv['DocNumber']}-R")
    elif what == "memo":
        day.sb.update_invoice(day.realm, inv["Id"], customer_memo="Corrected per customer's call")
    else:
        applied = inv["TotalAmt"] - inv["Balance"]
        day.sb.update_invoice(day.realm, inv["Id"], amount=applied + day.amount(0, 500))
    return f"edited invoice {inv['Id']} ({what})"


def void_or_delete_invoice(day: _Day) -> str | None:
    inv = day.pick([i for i in day.company.invoices.values() if i["Id"] not in day.company.voided])
    if inv is None:
        return None
    if day.rng.random() < 0.5:
        day.sb.void_invoice(day.realm, inv["Id"])
        return f"voided invoice {inv['Id']}"
    day.sb.delete_invoice(day.realm, inv["Id"])
    return f"deleted invoice {inv['Id']}"


def credit_auto_applied(day: _Day) -> str | None:
    inv = day.pick(day.open_invoices())
    if inv is None:
        return None
    kind = day.rng.choice(_CREDIT_KINDS)
    credit = day.sb.create_credit(day.realm, kind, customer_id=inv["CustomerRef"]["value"], amount=day.amount(10, 400))
    pay = day.sb.auto_apply_credit(day.realm, inv["Id"], credit["Id"])
    return f"new {kind} {credit['Id']} auto-applied to invoice {inv['Id']} by $0 payment {pay['Id']}"


def credit_and_cash(day: _Day) -> str | None:
    inv = day.pick([i for i in day.open_invoices() if i["Balance"] >= 2])
    if inv is None:
        return None
    customer = inv["CustomerRef"]["value"]
    credit_amount = max(CENT, round_cents(inv["Balance"] * Decimal(day.rng.randint(10, 60)) / 100))
    memo = day.sb.create_credit(day.realm, "CreditMemo", customer_id=customer, amount=credit_amount)
    pay = day.sb.create_payment(
        day.realm, [inv["Id"]], [inv["Balance"]], day.method(), credit_memo_ids=[memo["Id"]],
        credit_amounts=[credit_amount],
    )  # fmt: skip
    return (
        f"payment {pay['Id']} of {pay['TotalAmt']} cash and credit memo {memo['Id']} ({credit_amount}) "
        f"on invoice {inv['Id']}"
    )


OPERATIONS: list[tuple[_Op, int]] = [
    (new_invoice, 12),
    (pay_now, 14),
    (prepayment, 6),
    (apply_later, 10),
    (move, 6),
    (add_invoice, 5),
    (correct_amount, 6),
    (void_payment, 4),
    (delete_payment, 3),
    (edit_invoice, 6),
    (void_or_delete_invoice, 3),
    (credit_auto_applied, 5),
    (credit_and_cash, 4),
]


def bookkeeping_day(sb: QboSandbox, realm_id: str, rng: random.Random, changes: int) -> list[str]:
    """Perform `changes` random valid bookkeeping operations on one company at the sandbox's now;
    returns what was done, one line each (fewer lines only when nothing is left to change)."""
    day = _Day(sb, realm_id, rng)
    ops = [op for op, _ in OPERATIONS]
    weights = [w for _, w in OPERATIONS]
    log: list[str] = []
    with sb.lock:  # one session: nobody else writes between a draw and its change
        for _ in range(changes):
            for _ in range(_TRIES):
                done = rng.choices(ops, weights)[0](day)
                if done is not None:
                    log.append(done)
                    break
    return log
