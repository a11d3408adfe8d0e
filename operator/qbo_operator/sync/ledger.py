"""The exactly-once ledger: which payments are fully acknowledged, and how far the watermark may move.

The sync reads payments in CreateTime order and `open`s each with the number of records it maps to.
Each record is then settled exactly once: by Green Check's answer (created, duplicate or rejected, in
whatever order the batches come back), by a local refusal (a record too large to send is rejected),
or, in a dry run, by being printed. `advance` gives the safe watermark: the CreateTime of the oldest
payment with a record not yet settled, or of the newest payment once all are. Every payment created
before it has been delivered, skipped or rejected, so resuming from it loses nothing; what is re-read
at its second is dropped by Green Check by external id. Pure: no I/O, no clock."""

from __future__ import annotations

import collections
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from qbo_operator.sync.records import Result, ResultError

MAX_NAMED_REJECTIONS = 5
OVERLAP = timedelta(minutes=10)


def window_start(connected_at: datetime, watermark: datetime | None) -> datetime:
    """Where the next run starts reading: ten minutes before the watermark, never before connectedAt.

    The overlap re-reads the payments that share the watermark's second (and any QBO stamped late);
    Green Check drops the repeats by external id."""
    return connected_at if watermark is None else max(connected_at, watermark - OVERLAP)


def dollars(cents: int) -> str:
    return f"${cents / 100:,.2f}"


@dataclass
class Stats:
    """What a run did, for `status.lastSync` and its one-line summary."""

    # Reading: QBO pages, the payments in them, and those that map to no record (with why).
    pages: int = 0
    payments_read: int = 0
    payments_skipped: int = 0
    skip_reasons: Counter[str] = field(default_factory=Counter)
    # Delivery: records sent (or printed), Green Check's answers, and the payments with a new record.
    records_sent: int = 0
    created: int = 0
    duplicate: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (external id, why)
    amount_cents: int = 0  # of the created records
    payments_synced: int = 0

    def summary(self) -> str:
        parts = [
            f"delivered {self.created} new records for {self.payments_synced} payments ({dollars(self.amount_cents)})"
        ]
        if self.duplicate:
            parts.append(f"{self.duplicate} records already at Green Check")
        if self.payments_skipped or self.skip_reasons:
            reasons = ", ".join(f"{n} {r}" for r, n in sorted(self.skip_reasons.items()))
            parts.append(f"skipped {self.payments_skipped} payments ({reasons})")
        if self.rejected:
            named = "; ".join(f"{eid} ({why})" for eid, why in self.rejected[:MAX_NAMED_REJECTIONS])
            more = len(self.rejected) - MAX_NAMED_REJECTIONS
            parts.append(
                f"Green Check rejected {len(self.rejected)} records: {named}"
                + (f"; and {more} more" if more > 0 else "")
            )
        return "; ".join(parts)


@dataclass(eq=False)
class Entry:
    """A payment in the ledger: its CreateTime and how many of its records are not settled yet."""

    create_time: datetime
    outstanding: int
    created: bool = False  # at least one record was new at Green Check: the payment counts as synced


@dataclass
class Ledger:
    """Payments not yet fully settled, oldest first, and the records out at Green Check by external id."""

    stats: Stats = field(default_factory=Stats)
    _pending: collections.deque[Entry] = field(default_factory=collections.deque)
    _sent: dict[str, tuple[Entry, int]] = field(default_factory=dict)  # external id → payment, amount (cents)
    _last_done: datetime | None = None

    def open(self, create_time: datetime, records: int) -> Entry:
        """A payment read (in CreateTime order) that maps to `records` records (0: skipped, settled at once)."""
        entry = Entry(create_time, records)
        self._pending.append(entry)
        return entry

    def sent(self, entry: Entry, external_id: str, amount_cents: int) -> None:
        """A record of `entry` is in a batch on its way to Green Check."""
        self._sent[external_id] = (entry, amount_cents)

    def acknowledge(self, results: Iterable[Result]) -> None:
        """Green Check's answers for one batch of sent records."""
        for result in results:
            entry, amount = self._sent.pop(result.external_id)
            self.stats.records_sent += 1
            self.settle(entry, result, amount)

    def refuse(self, entry: Entry, external_id: str, why: str) -> None:
        """A record that cannot be sent at all (too large on its own): rejected here, like Green Check would."""
        self.settle(entry, Result(external_id=external_id, status="rejected", errors=[ResultError(message=why)]), 0)

    def printed(self, entry: Entry) -> None:
        """Dry run: the record was printed instead of sent."""
        entry.outstanding -= 1
        self.stats.records_sent += 1

    def settle(self, entry: Entry, result: Result, amount_cents: int) -> None:
        entry.outstanding -= 1
        if result.status == "created":
            self.stats.created += 1
            self.stats.amount_cents += amount_cents
            entry.created = True
        elif result.status == "duplicate":
            self.stats.duplicate += 1
        else:
            why = "; ".join(f"{e.field}: {e.message}" if e.field else e.message for e in result.errors[:2])
            self.stats.rejected.append((result.external_id, why or "no reason given"))

    def advance(self) -> datetime | None:
        """The safe watermark now (None before any payment is settled); drops the settled payments in front."""
        while self._pending and self._pending[0].outstanding <= 0:
            done = self._pending.popleft()
            self._last_done = done.create_time
            if done.created:
                self.stats.payments_synced += 1
        if self._pending:
            return self._pending[0].create_time
        return self._last_done
