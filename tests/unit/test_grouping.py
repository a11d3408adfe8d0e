"""Invoice grouping (sync/grouping.py): where groups close, which invoice ids each bulk read asks for, and
what the small LRU cache saves, driven the way the sync drives it (fits? else close and resolve; then add)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from qbo_operator.sync.grouping import Group, Grouper
from qbo_operator.sync.qbo_models import Invoice, Payment

T0 = datetime(2026, 11, 24, 17, 0, tzinfo=UTC)
MISSING = {"404"}  # invoice ids the bulk read does not find (deleted in QBO)


def payment(pid: str) -> Payment:
    return Payment.model_validate({"Id": pid, "MetaData": {"CreateTime": T0.isoformat()}})


def drive(stream: list[tuple[str, list[str]]], chunk: int, cache_size: int) -> tuple[list[list[str]], list[list[str]]]:
    """Payments (id, linked invoice ids) through a Grouper: the groups' payment ids, and each bulk read's ids."""
    grouper = Grouper(chunk, cache_size)
    groups: list[list[str]] = []
    reads: list[list[str]] = []

    def resolve(group: Group) -> None:
        if group.need:
            reads.append(list(group.need))
        found = {
            i: Invoice.model_validate({"Id": i, "MetaData": {"CreateTime": T0.isoformat()}})
            for i in group.need
            if i not in MISSING
        }
        pairs = grouper.resolve(group, found)
        groups.append([p.id for p, _ in pairs])
        for p, invoices in pairs:  # every payment sees all of its group's invoices that exist
            linked = dict(stream)[p.id]
            assert {i for i in linked if i not in MISSING} <= set(invoices), (p.id, invoices)
            assert not MISSING & set(invoices)

    for pid, ids in stream:
        if not grouper.fits(ids) and (full := grouper.close()) is not None:
            resolve(full)
        grouper.add(payment(pid), ids)
    if (last := grouper.close()) is not None:
        resolve(last)
    return groups, reads


# (name, payments as (id, invoice ids), chunk, cache size, expected groups, expected reads)
CASES: list[tuple[str, list[tuple[str, list[str]]], int, int, list[list[str]], list[list[str]]]] = [
    ("nothing", [], 2, 10, [], []),
    ("one payment, one invoice", [("p1", ["a"])], 2, 10, [["p1"]], [["a"]]),
    ("payments without invoices are grouped but read nothing", [("p1", []), ("p2", [])], 2, 10, [["p1", "p2"]], []),
    (
        "a group closes when the next payment's new ids would pass one read",
        [("p1", ["a"]), ("p2", ["b"]), ("p3", ["c"])], 2, 10,
        [["p1", "p2"], ["p3"]], [["a", "b"], ["c"]],
    ),
    (
        "ids already in the group are not new: an invoice paid twice in one group is read once",
        [("p1", ["a"]), ("p2", ["a"]), ("p3", ["b"])], 2, 10,
        [["p1", "p2", "p3"]], [["a", "b"]],
    ),
    (
        "a payment linking more invoices than one read holds still gets its own group (read in chunks later)",
        [("p1", ["a"]), ("p2", ["b", "c", "d"])], 2, 10,
        [["p1"], ["p2"]], [["a"], ["b", "c", "d"]],
    ),
    (
        "a group holds at most two reads' worth of payments, even when they need no reads",
        [("p1", []), ("p2", []), ("p3", []), ("p4", []), ("p5", [])], 2, 10,
        [["p1", "p2", "p3", "p4"], ["p5"]], [],
    ),
    (
        "an invoice read for an earlier group comes from the cache: instalments are read once",
        [("p1", ["a"]), ("p2", ["b"]), ("p3", ["c"]), ("p4", ["a"]), ("p5", ["b"])], 2, 10,
        [["p1", "p2"], ["p3", "p4", "p5"]], [["a", "b"], ["c"]],
    ),
    (
        "the group is resolved before the next payment is placed, so that payment finds its invoices cached",
        [("p1", ["a"]), ("p2", ["b"]), ("p3", ["a", "c"])], 2, 10,
        [["p1", "p2"], ["p3"]], [["a", "b"], ["c"]],
    ),
    (
        "the cache is bounded: an invoice evicted since is read again",
        [("p1", ["a"]), ("p2", ["b"]), ("p3", ["c"]), ("p4", ["d"]), ("p5", ["e"]), ("p6", ["a"])], 2, 2,
        [["p1", "p2"], ["p3", "p4"], ["p5", "p6"]], [["a", "b"], ["c", "d"], ["e", "a"]],
    ),
    (
        "a cache hit makes the entry recent: the least recently used one is evicted instead",
        [("p1", ["a"]), ("p2", ["b"]), ("p3", ["c"]), ("p4", ["a"]), ("p5", ["d"]), ("p6", ["e"]), ("p7", ["b"]),
         ("p8", ["a"])], 2, 3,
        [["p1", "p2"], ["p3", "p4", "p5"], ["p6", "p7", "p8"]], [["a", "b"], ["c", "d"], ["e", "b"]],
    ),
    (
        "an invoice QBO does not have is remembered as missing and not read again",
        [("p1", ["404"]), ("p2", ["b"]), ("p3", ["c"]), ("p4", ["404"])], 2, 10,
        [["p1", "p2"], ["p3", "p4"]], [["404", "b"], ["c"]],
    ),
]  # fmt: skip


@pytest.mark.parametrize(("name", "stream", "chunk", "cache", "groups", "reads"), CASES, ids=[c[0] for c in CASES])
def test_grouping(
    name: str,
    stream: list[tuple[str, list[str]]],
    chunk: int,
    cache: int,
    groups: list[list[str]],
    reads: list[list[str]],
) -> None:
    assert drive(stream, chunk, cache) == (groups, reads), name


@pytest.mark.parametrize("chunk", [1, 2, 3, 5])
def test_every_read_fits_one_request_unless_one_payment_needs_more(chunk: int) -> None:
    stream = [(f"p{n}", [f"i{(n * 7 + k) % 23}" for k in range(n % 4)]) for n in range(60)]
    groups, reads = drive(stream, chunk, cache_size=8)
    assert [pid for g in groups for pid in g] == [pid for pid, _ in stream]  # every payment once, in order
    assert all(len(read) <= max(chunk, 3) for read in reads)  # 3: the most invoices one payment links here
    assert all(len(g) <= 2 * chunk for g in groups)
    # Every linked invoice is read.
    assert len({i for read in reads for i in read}) == len({i for _, ids in stream for i in ids})
