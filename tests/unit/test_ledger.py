"""The exactly-once ledger (sync/ledger.py), one payment set per entry: every interesting order of answers,
rejections, local refusals and dry-run prints, checked against one rule: the watermark is the change time of
the oldest unsettled set, never past `ceiling`, never below `floor`."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from qbo_operator.sync.ledger import MAX_REJECTED, Entry, Ledger, Rejection, Stats
from qbo_operator.sync.records import PaymentResult, ResultError
from tests.support.greencheck import make_set

T0 = datetime(2026, 11, 24, 17, 0, tzinfo=UTC)
FLOOR, CEILING = 0, 100  # minutes after T0


def at(minute: int) -> datetime:
    return T0 + timedelta(minutes=minute)


def ledger_at(rejected: dict[str, Rejection] | None = None) -> Ledger:
    return Ledger(floor=at(FLOOR), ceiling=at(CEILING), rejected=dict(rejected or {}))


def applied(payment: int, *statuses: str) -> PaymentResult:
    """Payment `payment`'s set applied; one record per status, numbered as make_set numbers them."""
    return PaymentResult.model_validate(
        {
            "payment_id": str(payment),
            "status": "applied",
            "records": [
                {"external_id": f"qbo:9130355357483456:payment:{payment}:invoice:{1000 + n}", "status": s}
                for n, s in enumerate(statuses)
            ],
        }
    )


def rejected(payment: int, *errors: ResultError) -> PaymentResult:
    return PaymentResult(payment_id=str(payment), status="rejected", errors=list(errors))


# A step: ("open", payment, change minute | None) | ("send", payment, records) | ("ack", [results])
#       | ("refuse", payment) | ("print", payment) | ("advance", expected minute) | ("finish", expected minute)
Step = tuple[object, ...]


def replay(steps: list[Step], ledger: Ledger | None = None) -> Ledger:
    """Run `steps`, asserting each watermark asked for; payment n's records are worth 10_000 + i cents each."""
    ledger = ledger or ledger_at()
    entries: dict[int, Entry] = {}
    for step in steps:
        match step:
            case ("open", int(p), minute):
                entries[p] = ledger.open(str(p), f"t{p}", None if minute is None else at(int(str(minute))))
            case ("send", int(p), int(n)):
                ledger.sent(entries[p], make_set(p, *range(n)))
            case ("ack", list(results)):
                ledger.acknowledge(results)
            case ("refuse", int(p)):
                ledger.refuse(entries[p], "alone over the body limit")
            case ("print", int(p)):
                ledger.printed(entries[p])
            case ("advance", int(minute)):
                assert ledger.advance() == at(minute), step
            case ("finish", int(minute)):
                assert ledger.finish() == at(minute), step
            case _:
                raise AssertionError(f"unknown step {step}")
    return ledger


# (name, steps, (sets sent, payments synced, records created, rejected in this run, kept rejected))
CASES: list[tuple[str, list[Step], tuple[int, int, int, int, int]]] = [
    ("nothing read: the floor", [("advance", FLOOR), ("finish", CEILING)], (0, 0, 0, 0, 0)),
    (
        "one set, acknowledged: the watermark moves to its change",
        [("open", 1, 10), ("send", 1, 1), ("advance", 10), ("ack", [applied(1, "created")]), ("advance", 10)],
        (1, 1, 1, 0, 0),
    ),
    (
        "in order: the watermark follows the oldest unsettled set",
        [
            ("open", 1, 10), ("send", 1, 1), ("open", 2, 20), ("send", 2, 1), ("open", 3, 30), ("send", 3, 1),
            ("ack", [applied(1, "created")]), ("advance", 20),
            ("ack", [applied(2, "created")]), ("advance", 30),
            ("ack", [applied(3, "created")]), ("advance", 30), ("finish", CEILING),
        ],
        (3, 3, 3, 0, 0),
    ),
    (
        "out of order: a later answer cannot move the watermark past an earlier unsettled set",
        [
            ("open", 1, 10), ("send", 1, 1), ("open", 2, 20), ("send", 2, 1), ("open", 3, 30), ("send", 3, 1),
            ("ack", [applied(3, "created")]), ("advance", 10),
            ("ack", [applied(2, "updated")]), ("advance", 10),
            ("ack", [applied(1, "created")]), ("advance", 30),
        ],
        (3, 3, 2, 0, 0),
    ),
    (
        "an unsettled set holds finish() at its change time",
        [("open", 1, 10), ("send", 1, 1), ("open", 2, 20), ("send", 2, 1), ("ack", [applied(2, "created")]),
         ("finish", 10)],
        (2, 1, 1, 0, 0),
    ),
    (
        "never past the ceiling, even for a change read after it",
        [("open", 1, 90), ("send", 1, 1), ("open", 2, 130), ("send", 2, 1), ("ack", [applied(1, "created")]),
         ("advance", CEILING), ("ack", [applied(2, "created")]), ("advance", CEILING), ("finish", CEILING)],
        (2, 2, 2, 0, 0),
    ),
    (
        "sets sent before the change stream (deletes, changed invoices, retries) hold the floor",
        [("open", 7, None), ("send", 7, 0), ("open", 1, 10), ("send", 1, 1), ("ack", [applied(1, "created")]),
         ("advance", FLOOR), ("ack", [applied(7)]), ("advance", 10)],
        (2, 1, 1, 0, 0),
    ),
    (
        "never below the floor",
        [("open", 1, -30), ("send", 1, 1), ("advance", FLOOR), ("ack", [applied(1, "created")]), ("advance", FLOOR)],
        (1, 1, 1, 0, 0),
    ),
    (
        "a rejection is kept, so it settles; only a changed record counts a payment as synced",
        [
            ("open", 1, 10), ("send", 1, 1), ("open", 2, 20), ("send", 2, 2), ("open", 3, 30), ("send", 3, 1),
            ("ack", [rejected(1), applied(2, "unchanged", "unchanged"), applied(3, "retracted")]), ("advance", 30),
        ],
        (3, 1, 0, 1, 1),
    ),
    (
        "a set refused locally (too large) is rejected without being sent, and kept",
        [("open", 1, 10), ("refuse", 1), ("open", 2, 20), ("send", 2, 1), ("advance", 20),
         ("ack", [applied(2, "created")]), ("advance", 20)],
        (2, 1, 1, 1, 1),
    ),
    (
        "dry run: printed sets settle; nothing is counted as delivered",
        [("open", 1, 10), ("print", 1), ("open", 2, 20), ("advance", 20), ("print", 2), ("advance", 20)],
        (2, 0, 0, 0, 0),
    ),
]  # fmt: skip


@pytest.mark.parametrize(("name", "steps", "expected"), CASES, ids=[c[0] for c in CASES])
def test_orderings(name: str, steps: list[Step], expected: tuple[int, int, int, int, int]) -> None:
    s, kept = (ledger := replay(steps)).stats, ledger.rejected
    assert (s.sets_sent, s.payments_synced, s.records["created"], len(s.rejected), len(kept)) == expected, name


def test_cash_counts_only_records_created_or_updated() -> None:
    steps: list[Step] = [("open", 1, 10), ("send", 1, 4),
                         ("ack", [applied(1, "created", "updated", "unchanged", "retracted")])]  # fmt: skip
    stats = replay(steps).stats
    assert stats.amount_cents == 10_000 + 10_001
    assert dict(stats.records) == {"created": 1, "updated": 1, "unchanged": 1, "retracted": 1}


def test_a_rejection_is_kept_with_its_sync_token_and_removed_once_applied() -> None:
    why = ResultError(field="invoice.number", message="is required")
    ledger = replay([("open", 4, 10), ("send", 4, 1), ("ack", [rejected(4, why)])])
    assert ledger.rejected == {"4": Rejection("4", "t4", "invoice.number: is required")}
    assert ledger.rejected_status() == [{"paymentId": "4", "syncToken": "t4", "reason": "invoice.number: is required"}]
    # the next run starts with the kept list and sends the set again; this time it is applied
    later = replay([("open", 4, None), ("send", 4, 1), ("ack", [applied(4, "created")]), ("advance", FLOOR)],
                   ledger_at(ledger.rejected))  # fmt: skip
    assert later.rejected == {} and later.rejected_status() == []


def test_a_full_rejected_list_holds_the_watermark_at_the_new_rejection() -> None:
    full = {str(10_000 + i): Rejection(str(10_000 + i), "0", "old") for i in range(MAX_REJECTED)}
    steps: list[Step] = [
        ("open", 1, 10), ("send", 1, 1), ("open", 2, 20), ("send", 2, 1), ("open", 10_000, 30), ("send", 10_000, 1),
        ("ack", [rejected(1), applied(2, "created"), rejected(10_000)]), ("advance", 10), ("finish", 10),
    ]  # fmt: skip
    ledger = replay(steps, ledger_at(full))
    assert len(ledger.rejected) == MAX_REJECTED and "1" not in ledger.rejected  # no room: not kept, not lost
    assert ledger.rejected["10000"].reason == "no reason given"  # already kept: its entry is replaced
    assert [pid for pid, _ in ledger.stats.rejected] == ["1", "10000"]


def test_rejected_status_is_sorted_numerically() -> None:
    kept = {p: Rejection(p, "1", "r") for p in ("10", "9", "abc", "100")}
    assert [r["paymentId"] for r in ledger_at(kept).rejected_status()] == ["9", "10", "100", "abc"]


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ({"paymentId": "4", "syncToken": "2", "reason": "bad"}, Rejection("4", "2", "bad")),
        ({"paymentId": "4"}, Rejection("4", "", "")),
        ({"paymentId": "4", "syncToken": 3, "reason": None}, Rejection("4", "3", "")),
        ({"paymentId": ""}, None),
        ({"paymentId": 4}, None),
        ({}, None),
    ],
)
def test_rejection_status_round_trip(item: dict[str, object], expected: Rejection | None) -> None:
    got = Rejection.from_status(item)
    assert got == expected
    if got is not None:
        assert Rejection.from_status(got.to_status()) == got


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
    ledger = replay([("open", 1, 10), ("send", 1, 1), ("ack", [rejected(1, *errors)])])
    assert ledger.stats.rejected == [("1", why)]


def test_a_set_acknowledged_twice_is_a_bug_not_a_double_count() -> None:
    ledger = replay([("open", 1, 10), ("send", 1, 1), ("ack", [applied(1, "created")])])
    with pytest.raises(KeyError):
        ledger.acknowledge([applied(1, "created")])
    assert ledger.stats.records["created"] == 1


# --- every order of answers: the watermark never passes an unsettled set ---------------------------------------

SETS = 5  # payment n changed at minute 10 n; payment 3 is rejected


def settle_in_order(order: tuple[int, ...], batch: int, room: bool) -> None:
    """Send every set, answer them in `order`, `batch` at a time, checking the watermark after each. Without
    `room` the rejected list is full, so payment 3's rejection holds the watermark for the rest of the run."""
    full = {} if room else {f"x{i}": Rejection(f"x{i}", "0", "old") for i in range(MAX_REJECTED)}
    ledger = ledger_at(full)
    entries = {p: ledger.open(str(p), "0", at(10 * p)) for p in range(1, SETS + 1)}
    for p, entry in entries.items():
        ledger.sent(entry, make_set(p, p))
    answered: set[int] = set()
    previous = at(FLOOR)
    for start in range(0, len(order), batch):
        done = [p + 1 for p in order[start : start + batch]]
        ledger.acknowledge(rejected(p) if p == 3 else applied(p, "created") for p in done)
        answered.update(done)
        mark = ledger.advance()
        unsettled = [p for p in entries if p not in answered or (p == 3 and not room)]
        assert mark == at(10 * min(unsettled, default=SETS)), (order, batch, done)
        assert mark >= previous  # it only moves forward
        previous = mark
    assert ledger.finish() == (at(CEILING) if room else at(30))
    assert ledger.stats.payments_synced == SETS - 1 and ledger.stats.sets_sent == SETS


@pytest.mark.parametrize("room", [True, False])
@pytest.mark.parametrize("batch", [1, 2, 5])
def test_watermark_never_passes_an_unsettled_set_in_any_order(batch: int, room: bool) -> None:
    for order in itertools.permutations(range(SETS)):
        settle_in_order(order, batch, room)


# --- the run's summary --------------------------------------------------------------------------------------------


def test_stats_start_empty() -> None:
    assert Stats().summary() == "delivered 0 payments (no record changed; $0.00)"
