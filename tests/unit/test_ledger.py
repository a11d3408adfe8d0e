"""The exactly-once ledger (sync/ledger.py): every interesting order of acknowledgements, rejects and dry-run
prints, checked against one rule: the watermark never passes a payment with a record not yet settled."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from qbo_operator.sync.ledger import OVERLAP, Entry, Ledger, Stats, window_start
from qbo_operator.sync.records import Result, ResultError

T0 = datetime(2026, 11, 24, 17, 0, tzinfo=UTC)


def at(minute: int) -> datetime:
    return T0 + timedelta(minutes=minute)


def eid(payment: int, record: int) -> str:
    return f"qbo:1:payment:{payment}:invoice:{record}"


# A step: ("open", payment, records) | ("send", payment, record) | ("ack", [(payment, record, status)])
#         | ("refuse", payment, record) | ("print", payment) | ("advance", expected watermark minute or None)
Step = tuple[object, ...]


def replay(steps: list[Step], amount: int = 100) -> tuple[Ledger, list[datetime | None]]:
    """Run `steps` (payment n is created at minute n) and return the ledger and every watermark seen."""
    ledger = Ledger()
    entries: dict[int, Entry] = {}
    marks: list[datetime | None] = []
    for step in steps:
        match step:
            case ("open", int(p), int(n)):
                entries[p] = ledger.open(at(p), n)
            case ("send", int(p), int(r)):
                ledger.sent(entries[p], eid(p, r), amount)
            case ("ack", list(acks)):
                ledger.acknowledge(
                    Result(
                        external_id=eid(p, r),
                        status=status,
                        errors=[ResultError(field="invoice.number", message="is required")]
                        if status == "rejected"
                        else [],
                    )
                    for p, r, status in acks
                )
            case ("refuse", int(p), int(r)):
                ledger.refuse(entries[p], eid(p, r), "too large")
            case ("print", int(p)):
                ledger.printed(entries[p])
            case ("advance", expected):
                mark = ledger.advance()
                marks.append(mark)
                assert mark == (None if expected is None else at(int(str(expected)))), (step, mark)
            case _:
                raise AssertionError(f"unknown step {step}")
    return ledger, marks


# --- explicit orderings: (name, steps, created, duplicate, rejected, payments synced, records sent) ---------------
CASES: list[tuple[str, list[Step], tuple[int, int, int, int, int]]] = [
    ("nothing read", [("advance", None)], (0, 0, 0, 0, 0)),
    (
        "one payment, acknowledged",
        [("open", 1, 1), ("send", 1, 0), ("advance", 1), ("ack", [(1, 0, "created")]), ("advance", 1)],
        (1, 0, 0, 1, 1),
    ),
    (
        "in order: the watermark follows the oldest unsettled payment",
        [
            ("open", 1, 1), ("send", 1, 0), ("open", 2, 1), ("send", 2, 0), ("open", 3, 1), ("send", 3, 0),
            ("ack", [(1, 0, "created")]), ("advance", 2),
            ("ack", [(2, 0, "created")]), ("advance", 3),
            ("ack", [(3, 0, "created")]), ("advance", 3),
        ],
        (3, 0, 0, 3, 3),
    ),
    (
        "out of order: a later ack cannot move the watermark past an earlier unsettled payment",
        [
            ("open", 1, 1), ("send", 1, 0), ("open", 2, 1), ("send", 2, 0), ("open", 3, 1), ("send", 3, 0),
            ("ack", [(3, 0, "created")]), ("advance", 1),
            ("ack", [(2, 0, "created")]), ("advance", 1),
            ("ack", [(1, 0, "created")]), ("advance", 3),
        ],
        (3, 0, 0, 3, 3),
    ),
    (
        "a payment split across batches waits for its last record",
        [
            ("open", 1, 3), ("send", 1, 0), ("send", 1, 1), ("send", 1, 2), ("open", 2, 1), ("send", 2, 0),
            ("ack", [(1, 0, "created"), (1, 1, "created")]), ("advance", 1),
            ("ack", [(2, 0, "created")]), ("advance", 1),
            ("ack", [(1, 2, "created")]), ("advance", 2),
        ],
        (4, 0, 0, 2, 4),
    ),
    (
        "rejects and duplicates settle a payment too, but only a new record counts it as synced",
        [
            ("open", 1, 1), ("send", 1, 0), ("open", 2, 1), ("send", 2, 0), ("open", 3, 2), ("send", 3, 0),
            ("send", 3, 1),
            ("ack", [(1, 0, "rejected"), (2, 0, "duplicate"), (3, 0, "rejected"), (3, 1, "created")]),
            ("advance", 3),
        ],
        (1, 1, 2, 1, 4),
    ),
    (
        "a record refused locally (too large) is rejected without being sent",
        [("open", 1, 2), ("refuse", 1, 0), ("send", 1, 1), ("advance", 1),
         ("ack", [(1, 1, "created")]), ("advance", 1)],
        (1, 0, 1, 1, 1),
    ),
    (
        "skipped payments (no records) settle at once, in order",
        [("open", 1, 0), ("open", 2, 1), ("send", 2, 0), ("open", 3, 0), ("advance", 2), ("ack", [(2, 0, "created")]),
         ("advance", 3)],
        (1, 0, 0, 1, 1),
    ),
    (
        "a skipped payment behind an unsettled one waits",
        [("open", 1, 1), ("send", 1, 0), ("open", 2, 0), ("advance", 1),
         ("ack", [(1, 0, "duplicate")]), ("advance", 2)],
        (0, 1, 0, 0, 1),
    ),
    (
        "dry run: printed records settle their payment; nothing is created",
        [("open", 1, 2), ("print", 1), ("print", 1), ("advance", 1), ("open", 2, 1), ("print", 2), ("advance", 2)],
        (0, 0, 0, 0, 3),
    ),
    (
        "dry run: a payment half printed holds the watermark",
        [("open", 1, 1), ("print", 1), ("open", 2, 2), ("print", 2), ("advance", 2)],
        (0, 0, 0, 0, 2),
    ),
    (
        "the watermark stays at the last settled payment once the queue is empty",
        [("open", 1, 1), ("send", 1, 0), ("ack", [(1, 0, "created")]), ("advance", 1), ("advance", 1)],
        (1, 0, 0, 1, 1),
    ),
]  # fmt: skip


@pytest.mark.parametrize(("name", "steps", "expected"), CASES, ids=[c[0] for c in CASES])
def test_orderings(name: str, steps: list[Step], expected: tuple[int, int, int, int, int]) -> None:
    ledger, _ = replay(steps)
    s = ledger.stats
    assert (s.created, s.duplicate, len(s.rejected), s.payments_synced, s.records_sent) == expected, name


def test_amount_counts_only_created_records() -> None:
    steps: list[Step] = [
        ("open", 1, 3), ("send", 1, 0), ("send", 1, 1), ("send", 1, 2),
        ("ack", [(1, 0, "created"), (1, 1, "duplicate"), (1, 2, "rejected")]), ("advance", 1),
    ]  # fmt: skip
    ledger, _ = replay(steps, amount=1234)
    assert ledger.stats.amount_cents == 1234


@pytest.mark.parametrize(
    ("errors", "why"),
    [
        ([], "no reason given"),
        ([ResultError(message="bad")], "bad"),
        ([ResultError(field="invoice.number", message="is required")], "invoice.number: is required"),
        ([ResultError(message="a"), ResultError(field="f", message="b"), ResultError(message="c")], "a; f: b"),
    ],
)
def test_rejections_are_named_with_at_most_two_reasons(errors: list[ResultError], why: str) -> None:
    ledger = Ledger()
    entry = ledger.open(T0, 1)
    ledger.settle(entry, Result(external_id="x", status="rejected", errors=errors), 100)
    assert ledger.stats.rejected == [("x", why)]


# --- every order of acknowledgement: the watermark never passes an unsettled payment -----------------------------

PAYMENTS = 4  # payment n (minute n) maps to n % 2 + 1 records: 2, 1, 2, 1 → six records
RECORDS = [(p, r) for p in range(1, PAYMENTS + 1) for r in range(p % 2 + 1)]


def settle_in_order(order: tuple[int, ...], batch: int) -> None:
    """Send every record, acknowledge them in `order`, `batch` at a time, checking the watermark after each."""
    ledger = Ledger()
    entries = {p: ledger.open(at(p), p % 2 + 1) for p in range(1, PAYMENTS + 1)}
    for p, r in RECORDS:
        ledger.sent(entries[p], eid(p, r), 1)
    settled: set[tuple[int, int]] = set()
    previous: datetime | None = None
    for start in range(0, len(order), batch):
        acks = [RECORDS[i] for i in order[start : start + batch]]
        ledger.acknowledge(Result(external_id=eid(p, r), status="created") for p, r in acks)
        settled.update(acks)
        mark = ledger.advance()
        oldest_unsettled = min((p for p, r in RECORDS if (p, r) not in settled), default=None)
        # Exactly at the oldest payment not fully acknowledged (never past it), or at the newest once all are.
        assert mark == at(PAYMENTS if oldest_unsettled is None else oldest_unsettled), (order, batch, acks)
        assert previous is None or mark >= previous  # it only moves forward
        previous = mark
    assert ledger.stats.payments_synced == PAYMENTS and ledger.stats.records_sent == len(RECORDS)


@pytest.mark.parametrize("batch", [1, 2, 3, 6])
def test_watermark_never_passes_an_unsettled_payment_in_any_order(batch: int) -> None:
    for order in itertools.permutations(range(len(RECORDS))):
        settle_in_order(order, batch)


def test_a_record_acknowledged_twice_is_a_bug_not_a_double_count() -> None:
    ledger = Ledger()
    ledger.sent(ledger.open(T0, 1), "x", 1)
    ledger.acknowledge([Result(external_id="x", status="created")])
    with pytest.raises(KeyError):
        ledger.acknowledge([Result(external_id="x", status="created")])
    assert ledger.stats.created == 1


# --- where the next run starts ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("watermark", "expected"),
    [
        (None, T0),  # first run: from connectedAt
        (at(300), at(300) - OVERLAP),  # the 10-minute overlap
        (at(5), T0),  # never before connectedAt
        (T0 - timedelta(days=1), T0),
    ],
)
def test_window_start(watermark: datetime | None, expected: datetime) -> None:
    assert window_start(T0, watermark) == expected


def test_stats_start_empty() -> None:
    assert Stats().summary() == "delivered 0 new records for 0 payments ($0.00)"
