"""The exactly-once ledger: which payment sets are settled, which are rejected, and how far the watermark may move.

The watermark is a LastUpdatedTime: every payment or invoice change stamped before it has been handled,
so the next run reads changes at or after it. A run `open`s one entry per payment set it will send, in
the order it reads changes (sets sent outside the change stream, for deletes and retried rejections,
are opened at the window's start). Each entry is then settled exactly once: by Green Check's answer
(applied or rejected, in whatever order batches come back), by a local refusal (a set too large to
send), or, in a dry run, by being printed. `advance` gives the safe watermark: the change time of the
oldest unsettled entry, or of the newest one read once all are settled, never past `ceiling` (the run's
start less the settle time, 10 minutes by default, for changes QBO stamps before it commits them). A
rejected set is settled only once it is kept in the rejected list (written with the watermark), which
holds at most `MAX_REJECTED` payments; past that, a rejection holds the watermark instead, so nothing
is dropped. Re-sending a set Green Check already holds is harmless (every record `unchanged`). Pure:
no I/O, no clock."""

from __future__ import annotations

import collections
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from qbo_operator.sync.records import PaymentResult, PaymentSet, ResultError

MAX_NAMED_REJECTIONS = 5
MAX_REJECTED = 1000


def window_start(connected_at: datetime, watermark: datetime | None) -> datetime:
    """Where the next run starts reading changes: the watermark, never before connectedAt."""
    return connected_at if watermark is None else max(connected_at, watermark)


def dollars(cents: int) -> str:
    return f"${cents / 100:,.2f}"


@dataclass(frozen=True)
class Rejection:
    """A payment whose set Green Check refused, kept in `status.rejected` and sent again every run."""

    payment_id: str
    sync_token: str
    reason: str

    def to_status(self) -> dict[str, str]:
        return {"paymentId": self.payment_id, "syncToken": self.sync_token, "reason": self.reason}

    @classmethod
    def from_status(cls, item: Mapping[str, Any]) -> Rejection | None:
        pid = item.get("paymentId")
        if not isinstance(pid, str) or not pid:
            return None
        return cls(pid, str(item.get("syncToken") or ""), str(item.get("reason") or ""))


@dataclass
class Stats:
    """What a run did, for `status.lastSync` and its one-line summary."""

    # Reading: QBO pages and requests' rows, and the payments left out of Green Check (with why).
    pages: int = 0
    payments_read: int = 0
    payments_skipped: int = 0
    skip_reasons: Counter[str] = field(default_factory=Counter)
    deleted: int = 0  # payments deleted in QuickBooks, passed on as empty sets
    # Delivery: payment sets sent (or printed), and what Green Check did with their records.
    sets_sent: int = 0
    records: Counter[str] = field(default_factory=Counter)  # created, updated, unchanged, retracted
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (payment id, why) in this run
    amount_cents: int = 0  # cash of the records created or updated
    payments_synced: int = 0  # payments with a record created, updated or retracted

    def summary(self) -> str:
        r = self.records
        changed = ", ".join(f"{r[k]} {k}" for k in ("created", "updated", "retracted") if r[k]) or "no record changed"
        parts = [f"delivered {self.payments_synced} payments ({changed}; {dollars(self.amount_cents)})"]
        if r["unchanged"]:
            parts.append(f"{r['unchanged']} records already current at Green Check")
        if self.deleted:
            parts.append(f"{self.deleted} payments deleted in QuickBooks passed on")
        if self.payments_skipped or self.skip_reasons:
            reasons = ", ".join(f"{n} {why}" for why, n in sorted(self.skip_reasons.items()))
            parts.append(f"left out {self.payments_skipped} payments ({reasons})")
        if self.rejected:
            named = "; ".join(f"payment {pid} ({why})" for pid, why in self.rejected[:MAX_NAMED_REJECTIONS])
            more = len(self.rejected) - MAX_NAMED_REJECTIONS
            parts.append(
                f"Green Check rejected {len(self.rejected)} payments: {named}"
                + (f"; and {more} more" if more > 0 else "")
            )
        return "; ".join(parts)


@dataclass(eq=False)
class Entry:
    """One payment set on its way: the change it carries and whether it is settled."""

    payment_id: str
    sync_token: str
    changed_at: datetime
    settled: bool = False


def _why(errors: list[ResultError]) -> str:
    text = "; ".join(f"{e.field}: {e.message}" if e.field else e.message for e in errors[:2])
    return text or "no reason given"


@dataclass
class Ledger:
    """Entries in the order read, the sets out at Green Check by payment id, and the rejected list."""

    floor: datetime  # the window's start: the watermark never goes below it
    ceiling: datetime  # the run's start less the settle time: the watermark never goes past it
    rejected: dict[str, Rejection] = field(default_factory=dict)
    stats: Stats = field(default_factory=Stats)
    _pending: collections.deque[Entry] = field(default_factory=collections.deque)
    _sent: dict[str, tuple[Entry, dict[str, int]]] = field(default_factory=dict)  # id → entry, cash by record
    _last_read: datetime | None = None

    def open(self, payment_id: str, sync_token: str, changed_at: datetime | None = None) -> Entry:
        """A payment set to send; `changed_at` None: not from the change stream (held at the window's start)."""
        entry = Entry(payment_id, sync_token, self.floor if changed_at is None else changed_at)
        if changed_at is not None:
            self._last_read = changed_at if self._last_read is None else max(self._last_read, changed_at)
        self._pending.append(entry)
        return entry

    def sent(self, entry: Entry, payment_set: PaymentSet) -> None:
        self._sent[entry.payment_id] = (entry, {r.external_id: r.payment.amount for r in payment_set.records})
        self.stats.sets_sent += 1

    def acknowledge(self, results: Iterable[PaymentResult]) -> None:
        """Green Check's answers for one batch of sent sets."""
        for result in results:
            entry, cash = self._sent.pop(result.payment_id)
            if result.status == "rejected":
                self._reject(entry, _why(result.errors))
                continue
            changed = False
            for record in result.records:
                self.stats.records[record.status] += 1
                if record.status in ("created", "updated"):
                    self.stats.amount_cents += cash.get(record.external_id, 0)
                changed = changed or record.status != "unchanged"
            self.stats.payments_synced += changed
            self.rejected.pop(entry.payment_id, None)
            entry.settled = True

    def refuse(self, entry: Entry, why: str) -> None:
        """A set that cannot be sent at all (too large on its own): rejected here, as Green Check would."""
        self.stats.sets_sent += 1
        self._reject(entry, why)

    def printed(self, entry: Entry) -> None:
        """Dry run: the set was printed instead of sent."""
        self.stats.sets_sent += 1
        entry.settled = True

    def _reject(self, entry: Entry, why: str) -> None:
        self.stats.rejected.append((entry.payment_id, why))
        if entry.payment_id in self.rejected or len(self.rejected) < MAX_REJECTED:
            self.rejected[entry.payment_id] = Rejection(entry.payment_id, entry.sync_token, why)
            entry.settled = True
        # else: no room to keep it; the entry stays unsettled and holds the watermark before it

    def advance(self) -> datetime:
        """The safe watermark now; drops the settled entries in front."""
        while self._pending and self._pending[0].settled:
            self._pending.popleft()
        if self._pending:
            mark = self._pending[0].changed_at
        else:
            mark = self._last_read if self._last_read is not None else self.floor
        return max(self.floor, min(mark, self.ceiling))

    def finish(self) -> datetime:
        """The watermark once every change up to now was read: the ceiling, unless an entry is still held."""
        if self.advance() < self.ceiling and self._pending:
            return self.advance()
        return max(self.floor, self.ceiling)

    def rejected_status(self) -> list[dict[str, str]]:
        return [r.to_status() for r in sorted(self.rejected.values(), key=lambda r: _numeric(r.payment_id))]


def _numeric(value: str) -> tuple[int, str]:
    return (int(value), "") if value.isdigit() else (1 << 62, value)
