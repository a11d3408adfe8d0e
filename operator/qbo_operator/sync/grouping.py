"""Invoice grouping: payments in the order read, cut into groups whose not-yet-read invoices fit one bulk read.

A group closes when its next payment would push the ids to read past one request's worth (`chunk`,
1000), or when it holds two requests' worth of payments (memory stays bounded even when most payments
link invoices already cached). Recently read invoices stay in a small LRU cache, so an invoice paid in
several instalments is usually read once; a group is resolved (its invoices read and cached) before
the next payment is placed, so that payment finds them. Pure: the sync does the reading."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from qbo_operator.sync.qbo_models import Invoice, Payment

INVOICE_CACHE = 1000


@dataclass
class Group:
    """Payments to map together: the invoice ids still to read (`need`) and those known already (`have`)."""

    payments: list[Payment] = field(default_factory=list)
    need: dict[str, None] = field(default_factory=dict)
    have: dict[str, Invoice | None] = field(default_factory=dict)


class Grouper:
    """The open group and the invoice cache. Per payment: `fits`? else `close` and resolve; then `add`."""

    def __init__(self, chunk: int, cache_size: int = INVOICE_CACHE) -> None:
        self.chunk = chunk
        self.cache_size = cache_size
        self.cache: OrderedDict[str, Invoice | None] = OrderedDict()
        self.group = Group()

    def fits(self, invoice_ids: Sequence[str]) -> bool:
        """Whether a payment linking `invoice_ids` may join the open group."""
        g = self.group
        new = [i for i in invoice_ids if i not in g.have and i not in self.cache and i not in g.need]
        return not g.payments or (len(g.need) + len(new) <= self.chunk and len(g.payments) < 2 * self.chunk)

    def add(self, payment: Payment, invoice_ids: Sequence[str]) -> None:
        g = self.group
        for i in invoice_ids:
            if i in self.cache:
                self.cache.move_to_end(i)
                g.have[i] = self.cache[i]
            elif i not in g.have:
                g.need[i] = None
        g.payments.append(payment)

    def close(self) -> Group | None:
        """The open group (None when empty); a new one opens."""
        group, self.group = self.group, Group()
        return group if group.payments else None

    def remember(self, invoices: Sequence[Invoice]) -> None:
        """Invoices read as changes (their newest version): payments that link them need not read them again."""
        for invoice in invoices:
            self.cache[invoice.id] = invoice
            self.cache.move_to_end(invoice.id)
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)

    def resolve(self, group: Group, found: Mapping[str, Invoice]) -> list[tuple[Payment, dict[str, Invoice]]]:
        """Each payment with the invoices it may link, once the group's `need` was read (`found`: those that exist)."""
        for i in group.need:
            group.have[i] = found.get(i)
            self.cache[i] = found.get(i)
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        invoices = {i: inv for i, inv in group.have.items() if inv is not None}
        return [(p, invoices) for p in group.payments]
